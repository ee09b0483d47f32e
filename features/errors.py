"""The feature store's error: a file that cannot be used as a feature file."""

from __future__ import annotations


class FeatureFileError(ValueError):
    """A file that cannot be used as a feature file; the message names the file and the fault."""


#: What h5py raises on a damaged file, anywhere (metadata included): HDF5's errors as OSError
#: (or RuntimeError, KeyError, ValueError by their HDF5 error class). Not MemoryError and the
#: like: they say nothing about the file, and are raised as they are.
H5_ERRORS = (OSError, RuntimeError, KeyError, ValueError)
