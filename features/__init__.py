"""featurebank's feature store: one HDF5 file per dataset and model, shared by both stages.

``FeatureWriter`` writes it (buffered, chunked, with provenance), ``FeatureFile`` reads and
validates it; ``schema`` holds the names and types of the format.
"""

from . import schema
from .reader import FeatureFile, FeatureFileError
from .writer import FeatureWriter

__all__ = ["FeatureFile", "FeatureFileError", "FeatureWriter", "schema"]
__version__ = "0.1.0"
