"""Stage 2 of featurebank: shallow classifiers grid-searched on a feature file.

From Python, one call does a whole run (the same as ``python -m classify``)::

    from classify import train_and_evaluate
    results = train_and_evaluate("f17.hdf5", models=["logreg", "rf"])
    print(results["logreg"].report)
    results["logreg"].accuracy, results["rf"].best_params
    results["logreg"].plot_confusion()        # a matplotlib Figure, inline in Jupyter

and the subcommands are functions too: :func:`compare` (saved ``--json`` results side by
side, with intervals and paired tests), :func:`to_html` (``report``: one HTML page of a run or
of saved runs) and :func:`predict` (a saved model on new images); :func:`imagenet_predict` is
``predict --imagenet`` (a pretrained backbone as it is, as an ImageNet classifier);
:func:`export_model` is ``export`` (a saved head or logistic regression and its backbone as
one Keras model, images to probabilities). Every
one-line user error is a :class:`ClassifyError` (bad settings: :class:`SettingsError`, also a
``ValueError``); a feature file that cannot be used raises :class:`features.FeatureFileError`.
Informational lines go to the ``classify`` logger at INFO.

The pieces, by sub-package: ``classifiers`` (the registry, :func:`register_classifier`, and the
built-in entries, among them the Keras dense head and fine-tuning), ``search`` (split, grid
search, the logistic regression's regularisation path, engines), ``evaluation`` (results and
comparisons), ``outputs`` (text and JSON reports, plots, saved models and their cards),
``inference`` (predict, the ImageNet classifier, export); ``settings`` checks the settings.
Importing ``classify`` does not import TensorFlow, Ray, XGBoost or matplotlib; the calls that
need them do.
"""

from features import FeatureFileError

from .api import train_and_evaluate
from .classifiers import CLASSIFIERS, Classifier, register_classifier, unregister_classifier
from .errors import ClassifyError, PredictError, SettingsError
from .evaluation.comparison import CompareError, Comparison, compare
from .evaluation.results import ModelResult, side_by_side_table
from .inference.export import ExportedModel, ExportError, export_model, read_metadata
from .inference.imagenet import ImagenetPrediction, imagenet_predict, iter_imagenet_predictions
from .inference.predict import Prediction, Predictions, iter_predictions, predict
from .outputs import OUTPUTS, Output, register_output, unregister_output
from .outputs.html import to_html
from .search.split import SplitError

__all__ = [
    "CLASSIFIERS",
    "Classifier",
    "ClassifyError",
    "CompareError",
    "Comparison",
    "ExportError",
    "ExportedModel",
    "FeatureFileError",
    "ImagenetPrediction",
    "ModelResult",
    "OUTPUTS",
    "Output",
    "PredictError",
    "Prediction",
    "Predictions",
    "SettingsError",
    "SplitError",
    "compare",
    "export_model",
    "imagenet_predict",
    "iter_imagenet_predictions",
    "iter_predictions",
    "predict",
    "read_metadata",
    "register_classifier",
    "register_output",
    "side_by_side_table",
    "to_html",
    "train_and_evaluate",
    "unregister_classifier",
    "unregister_output",
]
