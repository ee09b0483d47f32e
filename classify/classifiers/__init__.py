"""The classifiers stage 2 searches: the registry (:mod:`.registry`) and its built-in entries.

``logreg`` (:mod:`.linear`), ``rf`` and ``xgb`` (:mod:`.trees`), ``head`` (:mod:`.head`, a Keras
dense head as a scikit-learn estimator) and ``finetune`` (:mod:`.finetune`, the backbone's
layers above the stored one). Importing this package registers them; a classifier of your own
is one :func:`register_classifier` call (docs/contributing.md).
"""

# isort: off
# Registered in this order, the order of --help and of the messages that list them.
from . import linear, trees, head, finetune  # noqa: F401
# isort: on
from .registry import CLASSIFIERS, Classifier, get_classifier, register_classifier, unregister_classifier

__all__ = ["CLASSIFIERS", "Classifier", "get_classifier", "register_classifier", "unregister_classifier"]
