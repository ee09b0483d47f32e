"""Trained models put to use: ``predict`` (:mod:`.predict`), the pretrained network as an ImageNet
classifier (:mod:`.imagenet`), ``export`` as one Keras model (:mod:`.export`), and the backbone
rebuilt from a file's provenance that they share (:mod:`.rebuild`)."""
