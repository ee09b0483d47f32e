"""featurebank's feature store: one HDF5 file per dataset and model, shared by both stages.

``FeatureWriter`` writes it (buffered, with provenance, committed atomically so a killed run
loses nothing and can be resumed), ``FeatureFile`` reads and validates it, ``OutputLock`` keeps
a second writer away; ``schema`` holds the names and types of the format, ``checksums`` how
damage is recorded and found (:func:`verify_file` names a file's damaged rows), ``digests`` how a
finished file's feature rows are checked as they are read.
"""

from . import checksums, digests, schema
from .checksums import UnverifiedFileWarning, Verification, verify_file
from .lock import OutputLock, OutputLockedError
from .reader import FeatureFile, FeatureFileError
from .writer import FeatureWriter

__all__ = ["FeatureFile", "FeatureFileError", "FeatureWriter", "OutputLock", "OutputLockedError",
           "UnverifiedFileWarning", "Verification", "checksums", "digests", "schema", "verify_file"]
__version__ = "0.1.0"
