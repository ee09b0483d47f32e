"""Device facts: where bfloat16 is native, and the one warning when it is asked for elsewhere."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from extract import ExtractError, devices, extract_features


def fake_machine(monkeypatch, *, gpu: bool = False, gpu_bf16: bool = False, cpu_flags=()) -> None:
    """Fake the hardware probes: a GPU (with or without fast bfloat16) or a CPU with ``cpu_flags``."""
    monkeypatch.setattr(devices, "gpu_present", lambda: gpu)
    monkeypatch.setattr(devices, "gpu_has_bf16", lambda: gpu_bf16)
    monkeypatch.setattr(devices, "cpu_flags", lambda: frozenset(cpu_flags))


@pytest.mark.parametrize("machine, native", [
    (dict(cpu_flags=("sse2", "avx2")), False),
    (dict(cpu_flags=("avx2", "avx512_bf16")), True),
    (dict(cpu_flags=("amx_bf16",)), True),
    (dict(gpu=True, gpu_bf16=True), True),
    (dict(gpu=True, gpu_bf16=False, cpu_flags=("amx_bf16",)), False),  # the model runs on the GPU
])
def test_bf16_is_native_where_the_backbone_runs(monkeypatch, machine, native):
    fake_machine(monkeypatch, **machine)
    assert devices.bf16_is_native() is native


def test_cpu_flags_are_read_from_proc_cpuinfo():
    flags = devices.cpu_flags()
    assert isinstance(flags, frozenset)
    if Path("/proc/cpuinfo").is_file() and "flags" in Path("/proc/cpuinfo").read_text():
        assert "fpu" in flags  # every x86 CPU lists it
        assert devices.cpu_has_bf16() == bool(flags & {"avx512_bf16", "amx_bf16"})


@pytest.mark.parametrize("flags, warned", [((), True), (("avx512_bf16",), False)])
def test_one_warning_line_when_bf16_is_not_native(monkeypatch, caplog, flags, warned):
    fake_machine(monkeypatch, cpu_flags=flags)
    with caplog.at_level(logging.WARNING, logger="extract"):
        devices.warn_if_bf16_is_slow("bf16")
        devices.warn_if_bf16_is_slow("float32")  # never for float32
    lines = [r.getMessage() for r in caplog.records if r.name == "extract"]
    if warned:
        assert len(lines) == 1 and "\n" not in lines[0]
        assert lines[0].startswith("warning: this CPU has no bfloat16 instructions (AVX512-BF16 or AMX)")
        assert "0.24x float32" in lines[0] and lines[0].endswith("use --precision float32")
    else:
        assert lines == []


def test_an_older_gpu_gets_its_own_line(monkeypatch):
    fake_machine(monkeypatch, gpu=True, gpu_bf16=False)
    assert "this GPU has no fast bfloat16" in devices.bf16_warning("bf16")
    fake_machine(monkeypatch, gpu=True, gpu_bf16=True)
    assert devices.bf16_warning("bf16") is None


class _Stop(ExtractError):
    """Raised where the backbone would be built: the run has passed the precision check."""


@pytest.mark.parametrize("flags, warned", [((), True), (("amx_bf16",), False)])
def test_extract_features_warns_before_building_the_backbone(tmp_path, monkeypatch, caplog, flags, warned):
    import extract.backbones

    for k, name in enumerate(("a", "b")):
        (tmp_path / "data" / name).mkdir(parents=True)
        Image.fromarray(np.full((8, 8, 3), 100 * k, np.uint8)).save(tmp_path / "data" / name / "0.png")
    fake_machine(monkeypatch, cpu_flags=flags)

    def stop(*args, **kwargs):
        raise _Stop("stopped before building")

    monkeypatch.setattr(extract.backbones, "load_backbone", stop)
    with caplog.at_level(logging.WARNING, logger="extract"), pytest.raises(_Stop):
        extract_features(tmp_path / "data", output=tmp_path / "o.hdf5", weights=None, image_size=32,
                         precision="bf16", progress=False)
    lines = [r.getMessage() for r in caplog.records if "bfloat16" in r.getMessage()]
    assert len(lines) == (1 if warned else 0)
