"""Stage 2 of featurebank: shallow classifiers grid-searched on a feature file.

From Python, one call does a whole run (the same as ``python -m classify``)::

    from classify import train_and_evaluate
    results = train_and_evaluate("f17.hdf5", models=["logreg", "rf"])
    print(results["logreg"].report)
    results["logreg"].accuracy, results["rf"].best_params
    results["logreg"].plot_confusion()        # a matplotlib Figure, inline in Jupyter

and the two subcommands are functions too: :func:`compare` (saved ``--json`` results side by
side) and :func:`predict` (a saved model on new images); :func:`imagenet_predict` is
``predict --imagenet`` (a pretrained backbone as it is, as an ImageNet classifier);
:func:`export_model` is ``export`` (a saved head or logistic regression and its backbone as
one Keras model, images to probabilities). Every
one-line user error is a :class:`ClassifyError` (bad settings: :class:`SettingsError`, also a
``ValueError``); a feature file that cannot be used raises :class:`features.FeatureFileError`.
Informational lines go to the ``classify`` logger at INFO.

The pieces are usable on their own: ``models`` (the registry of classifiers), ``settings``
(their checks), ``search`` (split and grid search), ``results``, ``report`` (text and JSON),
``comparison`` (side-by-side tables), ``plots``, ``card`` (model cards), ``prediction``,
``imagenet``, ``head`` (the Keras dense head as a scikit-learn estimator), ``finetune`` (the
backbone's top layers trained from stored maps), ``model_files``, ``export``.
Importing ``classify`` does not import TensorFlow, Ray, XGBoost or matplotlib; the calls that
need them do.
"""

from features import FeatureFileError

from .api import train_and_evaluate
from .comparison import CompareError, Comparison, compare
from .errors import ClassifyError, SettingsError
from .export import ExportedModel, ExportError, export_model, read_metadata
from .imagenet import ImagenetPrediction, imagenet_predict, iter_imagenet_predictions
from .models import MODELS
from .prediction import PredictError, Prediction, iter_predictions, predict
from .results import ModelResult, side_by_side_table
from .search import SplitError

__all__ = [
    "MODELS",
    "ClassifyError",
    "CompareError",
    "Comparison",
    "ExportError",
    "ExportedModel",
    "FeatureFileError",
    "ImagenetPrediction",
    "ModelResult",
    "PredictError",
    "Prediction",
    "SettingsError",
    "SplitError",
    "compare",
    "export_model",
    "imagenet_predict",
    "iter_imagenet_predictions",
    "iter_predictions",
    "predict",
    "read_metadata",
    "side_by_side_table",
    "train_and_evaluate",
]
