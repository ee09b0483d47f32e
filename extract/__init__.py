"""Stage 1 of featurebank: images → pretrained CNN → one HDF5 feature file.

Run it as ``python -m extract --dataset NAME``; the pieces are usable on their own:
``sources`` (datasets and image listing), ``images`` (decoding), ``backbones`` (the model
registry and weights) and ``pipeline`` (the local engine).
"""
