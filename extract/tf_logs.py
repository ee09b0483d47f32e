"""Starting Keras without TensorFlow's C++ start-up lines.

TensorFlow's C++ core writes about seven lines to the process's stderr while it is imported
and while it first looks for GPUs (oneDNN's notice, "Could not find cuda drivers", a failed
cuInit on a machine without an NVIDIA driver), before absl logging is set up, so
``TF_CPP_MIN_LOG_LEVEL`` does not hold them back. No Python-level switch exists; they are
written to file descriptor 2 directly. So the first start of Keras runs with descriptor 2
pointed at a temporary file, and afterwards every captured line that is not one of the known
notices is written to stderr after all: a real error (a broken CUDA install, a missing
library) is still shown, only the known chatter is dropped.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

#: Start-up notices that say nothing a user needs on a machine that runs as it should.
NOTICES = (
    r"All log messages before absl::InitializeLog\(\) is called are written to STDERR",
    r"\] oneDNN custom operations are on",
    r"cudart_stub\.cc:\d+\] Could not find cuda drivers on your machine",
    r"cpu_feature_guard\.cc:\d+\] This TensorFlow binary is optimized",
    r"To enable the following instructions: .* in other operations, rebuild TensorFlow",
    r"Unable to register cu(DNN|FFT|BLAS) factory",
    r"computation_placer\.cc:\d+\] computation placer already registered",
)
#: Noise only where no NVIDIA driver is installed; with one, a failed cuInit is a real error.
NO_DRIVER_NOTICES = (r"cuda_platform\.cc:\d+\] failed call to cuInit",)

_started = False


def nvidia_driver_present() -> bool:
    """True when an NVIDIA kernel driver is loaded (its device files exist)."""
    return Path("/dev/nvidiactl").exists() or Path("/proc/driver/nvidia/version").exists()


def unexpected_lines(text: str, driver: bool | None = None) -> list[str]:
    """The lines of captured start-up output that are not known notices.

    >>> unexpected_lines("I0000 port.cc:153] oneDNN custom operations are on.\\nboom")
    ['boom']
    """
    driver = nvidia_driver_present() if driver is None else driver
    patterns = NOTICES + (() if driver else NO_DRIVER_NOTICES)
    notice = re.compile("|".join(patterns))
    return [line for line in text.splitlines() if line.strip() and not notice.search(line)]


def start_keras(verbose: bool = False) -> None:
    """Import Keras (and its backend) and let the backend find its devices, quietly.

    Idempotent; with ``verbose`` nothing is captured. Call it before anything else imports
    TensorFlow: lines written before it are not caught.
    """
    global _started
    if _started:
        return
    _started = True
    if verbose or os.environ.get("KERAS_BACKEND", "tensorflow") != "tensorflow":
        import keras  # noqa: F401

        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import keras  # noqa: F401
            import tensorflow as tf

            tf.config.list_physical_devices("GPU")  # the first device scan logs too
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            # Shown even when the import failed: those lines are the diagnosis.
            for line in unexpected_lines(captured.read().decode("utf-8", "replace")):
                print(line, file=sys.stderr)
