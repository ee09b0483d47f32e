"""Facts about the device the backbone runs on: GPU or CPU, bfloat16 support, default batch size.

Nothing here builds a model. The hardware probes are small functions (:func:`cpu_flags`,
:func:`gpu_present`, :func:`gpu_has_bf16`) so that tests can fake either kind of machine.
"""

from __future__ import annotations

import logging
from pathlib import Path

#: Images per backbone call by default: on a CPU larger batches gain nothing and hold more
#: memory; a GPU needs large ones to be kept busy.
CPU_BATCH_SIZE, GPU_BATCH_SIZE = 32, 128

#: The ``/proc/cpuinfo`` flags of x86 instructions that compute in bfloat16.
BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


def cpu_flags() -> frozenset[str]:
    """The instruction-set flags of this CPU, as ``/proc/cpuinfo`` lists them (empty where it
    cannot be read: not Linux, or not x86).

    Examples
    --------
    >>> "sse2" in cpu_flags()  # doctest: +SKIP
    True
    """
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    flags: set[str] = set()
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == "flags":
            flags.update(value.split())
    return frozenset(flags)


def cpu_has_bf16() -> bool:
    """True when this x86 CPU has bfloat16 instructions (AVX512-BF16 or AMX)."""
    return bool(BF16_CPU_FLAGS & cpu_flags())


def gpu_present() -> bool:
    """True when Keras' backend sees a GPU (where the backbone then runs)."""
    import keras

    if keras.backend.backend() == "jax":
        import jax

        return any(d.platform == "gpu" for d in jax.devices())
    if keras.backend.backend() == "torch":
        import torch

        return torch.cuda.is_available()
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def gpu_has_bf16() -> bool:
    """True when the GPU Keras' backend runs on computes in bfloat16 at full speed (NVIDIA
    compute capability 8.0 or later: A100, RTX 30xx, H100, ...)."""
    import keras

    backend = keras.backend.backend()
    if backend == "torch":
        import torch

        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if backend == "jax":
        import jax

        return any(float(getattr(d, "compute_capability", 0) or 0) >= 8.0
                   for d in jax.devices() if d.platform == "gpu")
    import tensorflow as tf

    return any(tf.config.experimental.get_device_details(gpu).get("compute_capability", (0, 0)) >= (8, 0)
               for gpu in tf.config.list_physical_devices("GPU"))


def bf16_is_native() -> bool:
    """True when the device the backbone runs on computes bfloat16 in hardware: a GPU of
    compute capability 8.0 or later, or, without a GPU, a CPU with AVX512-BF16 or AMX.

    Examples
    --------
    >>> bf16_is_native()  # doctest: +SKIP
    False
    """
    return gpu_has_bf16() if gpu_present() else cpu_has_bf16()


def bf16_warning(precision: str | None) -> str | None:
    """The one warning line for ``precision`` where it is emulated rather than native, else None.

    Examples
    --------
    >>> bf16_warning("float32") is None
    True
    """
    if precision != "bf16" or bf16_is_native():
        return None
    if gpu_present():
        return ("warning: this GPU has no fast bfloat16 (compute capability below 8.0): --precision "
                "bf16 runs slower than float32 here; use --precision float32")
    return ("warning: this CPU has no bfloat16 instructions (AVX512-BF16 or AMX): --precision bf16 "
            "is emulated here and can run several times slower than float32 (0.24x float32 measured "
            "for VGG16 on such a CPU); use --precision float32")


def warn_if_bf16_is_slow(precision: str | None, log: logging.Logger | None = None) -> None:
    """Log :func:`bf16_warning`'s line, when there is one, to ``log`` (default: ``extract``).

    Examples
    --------
    >>> warn_if_bf16_is_slow("float32")  # never for float32
    """
    if message := bf16_warning(precision):
        (log or logging.getLogger("extract")).warning(message)


def device_defaults() -> tuple[int, str]:
    """The batch size and precision that suit where the backbone runs: 128 and bf16 on a GPU
    that has bfloat16 (float32 on an older one), 32 and float32 on a CPU.

    Examples
    --------
    >>> device_defaults()  # doctest: +SKIP
    (32, 'float32')
    """
    if not gpu_present():
        return CPU_BATCH_SIZE, "float32"
    return GPU_BATCH_SIZE, "bf16" if gpu_has_bf16() else "float32"


def fixed_shape_helps() -> bool:
    """True where running every batch at one shape pays: on a GPU (one compiled graph, and
    the same kernels for every batch) and on JAX (``jit`` compiles again for each new shape)."""
    import keras

    return keras.backend.backend() == "jax" or gpu_present()
