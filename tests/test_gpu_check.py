"""benchmarks/gpu_check.py --smoke: every section of the device check runs tiny on the CPU."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from divssl.io import read_json

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


@pytest.mark.slow
def test_gpu_check_smoke_writes_every_section(tmp_path) -> None:
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "check.json"
    # torch.compile is covered by tests/test_train_speed.py; skipped here to keep this short.
    module.main(["--smoke", "--out", str(out), "--skip", "throughput_compiled"])
    doc = read_json(out)
    assert doc["smoke"] is True and doc["throughput_compiled"]["skipped"] is True
    tp = doc["throughput"]
    assert "error" not in tp, tp.get("traceback")
    assert tp["status"] == "completed" and tp["steady_images_per_second"] > 0
    assert tp["mfu"] is None  # no peak on the CPU
    ddp = doc["ddp_equivalence"]
    assert "error" not in ddp, ddp.get("traceback")
    assert ddp["world_size"] == 1 and ddp["equivalent"] and ddp["max_rel_weight_diff"] < 1e-6
    dec = doc["jpeg_decode"]
    assert dec["device_images_per_second"] > 0 and dec["last_batch_on_device"] == dec["images"]
    assert dec["device_store_images_per_second"] > 0 and dec["store_size"] == 32
