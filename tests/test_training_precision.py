"""Which precision fine-tuning trains in, by what the machine computes natively (faked here)."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from classify import ClassifyError, train_and_evaluate
from classify.classifiers.finetune import training_precision
from extract import devices
from features import FeatureWriter


@pytest.mark.parametrize("native", [True, False])
def test_a_bf16_file_trains_in_bf16_only_where_bf16_is_native(monkeypatch, native):
    monkeypatch.setattr(devices, "bf16_is_native", lambda: native)
    assert training_precision("bf16") == ("bf16" if native else "float32")
    assert training_precision("float32") == training_precision(None) == "float32"


@pytest.mark.parametrize("native", [True, False])
def test_asking_for_bf16_warns_in_one_line_where_it_is_emulated(monkeypatch, caplog, tmp_path, native):
    monkeypatch.setattr(devices, "gpu_present", lambda: False)
    monkeypatch.setattr(devices, "cpu_flags", lambda: frozenset({"avx512f", *(["avx512_bf16"] * native)}))
    file = tmp_path / "f.hdf5"
    with FeatureWriter(file, dim=4, label_names=["a", "b"], attrs={}) as writer:
        writer.add(np.zeros((8, 4), np.float32), np.arange(8) % 2, [f"{i}.png" for i in range(8)])
    with caplog.at_level(logging.WARNING, logger="classify"), pytest.raises(ClassifyError):
        # The file has no backbone to fine-tune: refused after the precision is looked at.
        train_and_evaluate(file, "finetune", precision="bf16")
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    if native:
        assert warnings == []
    else:
        assert len(warnings) == 1 and "no bfloat16 instructions" in warnings[0]
        assert "\n" not in warnings[0] and "--precision float32" in warnings[0]
