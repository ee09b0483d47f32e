"""``label_issues=`` / ``--label-issues``: each model's suspected label errors as CSV."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..evaluation.label_issues import write_label_issues
from .registry import Output, register_output


class LabelIssuesCsv(Output):
    """:meth:`ModelResult.label_issues <classify.ModelResult.label_issues>` of each model as
    CSV (path, given, suggested, score, flagged), one file per model as ``json`` names them."""

    name = "label_issues"
    needs_label_issues = True

    def write(self, result: Any, destination: Path, several: bool) -> Path:
        return write_label_issues(result.label_issues(), self.per_model(destination, result.name, several))


register_output(LabelIssuesCsv())
