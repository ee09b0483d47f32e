"""The feature store's error: a file that cannot be used as a feature file."""

from __future__ import annotations


class FeatureFileError(ValueError):
    """A file that cannot be used as a feature file; the message names the file and the fault."""
