"""What a stage-2 run writes: the registry of outputs (:mod:`.registry`) and the built-ins.

``json`` (:mod:`.document`), ``save`` (:mod:`.saved`: the model and its card, :mod:`.card`,
:mod:`.model_files`), ``plots`` (:mod:`.plots`), ``label_issues`` (:mod:`.issues`) and
``html`` (:mod:`.html`); the text report is :mod:`.text`. Importing
this package registers them; an output of your own is one :func:`register_output` call
(docs/contributing.md).
"""

# isort: off
# Registered in this order, the order in which a run writes them.
from . import document, saved, plots, issues, html  # noqa: F401
# isort: on
from .registry import OUTPUTS, Output, open_outputs, register_output, unregister_output

__all__ = ["OUTPUTS", "Output", "open_outputs", "register_output", "unregister_output"]
