"""``save=`` / ``--save``: each model's fitted estimator and its model card beside it."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from .registry import Output, register_output

log = logging.getLogger("classify")


class SavedModel(Output):
    """The refitted estimator (as its registry entry saves it) and ``<stem>.card.json``."""

    name = "save"

    def write(self, result: Any, destination: Path, several: bool) -> Path:
        path = result.save(self.per_model(destination, result.name, several))
        log.info("saved %s to %s", result.name, path)
        return path


register_output(SavedModel())
