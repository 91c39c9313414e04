"""The loop's device-side loss accounting, torch.compile, MFU and thread records."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from divssl.errors import ConfigError, RunFailed
from divssl.io import read_json
from divssl.pretrain.config import load_config
from divssl.pretrain.loop import LossMeter, pretrain
from divssl.pretrain.methods.simclr import SimCLR

POOL = "world:classes=4:per_class=24:size=16:seed=0"


def _cfg(tmp_path: Path, *extra: str):
    return load_config(
        None,
        [
            f"data.pool={POOL}",
            "budget.images=192",  # 6 steps of 32
            "batch_size=32",
            "image_size=16",
            "log_every=4",
            "checkpoint_every=100",
            "deterministic=true",
            "tracking=none",
            f"out={tmp_path / 'run'}",
            *extra,
        ],
    )


def test_loss_meter_matches_host_arithmetic() -> None:
    meter = LossMeter(torch.device("cpu"))
    values = [2.5, 1.25, 0.75]
    for i, v in enumerate(values):
        meter.update(torch.tensor(v, dtype=torch.float32), i)
    last, mean, bad, _ = meter.read()
    assert last == 0.75 and mean == pytest.approx(sum(values) / 3, rel=1e-12) and bad is None
    meter.update(torch.tensor(4.0), 3)
    meter.update(torch.tensor(float("inf")), 4)
    meter.update(torch.tensor(float("nan")), 5)  # a later bad step does not move the first
    last, mean, bad, bad_value = meter.read()
    assert bad == 4 and bad_value == math.inf and math.isnan(last)


def test_injected_nan_stops_at_next_read_naming_its_step(tmp_path, monkeypatch) -> None:
    real = SimCLR.training_step

    def poisoned(self, views, labels, step, total):
        out = real(self, views, labels, step, total)
        if step == 1:
            out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(SimCLR, "training_step", poisoned)
    with pytest.raises(RunFailed, match=r"non-finite loss nan at step 1 .*detected at step 3"):
        pretrain(_cfg(tmp_path))
    s = read_json(tmp_path / "run" / "summary.json")
    assert s["status"] == "failed" and "at step 1" in s["error"]
    assert s["images_seen"] == 4 * 32  # it ran on to the read at step 4, no further
    assert (
        not (tmp_path / "run" / "metrics.jsonl").exists()
        or not (tmp_path / "run" / "metrics.jsonl").read_text()
    )
    assert not (tmp_path / "run" / "checkpoints" / "last.pt").exists()


def test_logged_loss_is_the_step_loss_read_from_the_device(tmp_path, monkeypatch) -> None:
    seen: dict[int, float] = {}  # by step; the real step 0 overwrites the FLOP count's call
    real = SimCLR.training_step

    def recording(self, views, labels, step, total):
        out = real(self, views, labels, step, total)
        seen[step] = float(out.loss.detach())
        return out

    monkeypatch.setattr(SimCLR, "training_step", recording)
    run = pretrain(_cfg(tmp_path))
    import json

    lines = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    assert [ln["step"] for ln in lines] == [4, 6]
    assert lines[0]["loss"] == pytest.approx(seen[3], rel=1e-6)
    assert lines[0]["loss_mean"] == pytest.approx(sum(seen[i] for i in range(4)) / 4, rel=1e-6)
    assert lines[1]["loss_mean"] == pytest.approx((seen[4] + seen[5]) / 2, rel=1e-6)
    assert lines[1]["loss"] == pytest.approx(seen[5], rel=1e-6)


def test_summary_records_mfu_threads_and_null_peak_on_cpu(tmp_path) -> None:
    run = pretrain(_cfg(tmp_path, "threads=1", "peak_flops=1e12"))
    s = read_json(run / "summary.json")
    assert s["threads"]["setting"] == 1 and s["threads"]["used"] == [1]
    assert s["peak_flops"] == 1e12 and s["compile"] is False
    ips = s["steady_images_per_second"]
    assert ips > 0
    assert s["mfu"] == pytest.approx(ips * s["flops_per_image"] / 1e12, rel=1e-9)
    run2 = pretrain(_cfg(tmp_path, "out=" + str(tmp_path / "run2")))
    s2 = read_json(run2 / "summary.json")
    assert s2["peak_flops"] is None and s2["mfu"] is None
    assert s2["threads"]["setting"] == "auto" and s2["threads"]["share"] >= 1


def test_bad_thread_and_peak_settings_are_config_errors() -> None:
    for item in ("threads=0", "threads=many", "peak_flops=-1"):
        with pytest.raises(ConfigError, match=item.split("=")[0]):
            load_config(None, [item])


@pytest.mark.slow
def test_compiled_step_runs_and_matches_eager_loss(tmp_path) -> None:
    eager = pretrain(_cfg(tmp_path, "out=" + str(tmp_path / "eager"), "deterministic=false"))
    compiled = pretrain(
        _cfg(tmp_path, "out=" + str(tmp_path / "compiled"), "compile=true", "deterministic=false")
    )
    se, sc = read_json(eager / "summary.json"), read_json(compiled / "summary.json")
    assert sc["status"] == "completed" and sc["compile"] is True
    assert sc["images_seen"] == se["images_seen"] == 192
    # Same init, views and data: the compiled step computes the same loss up to kernel fusion.
    assert sc["final_loss"] == pytest.approx(se["final_loss"], rel=1e-3)


def test_peak_flops_table_and_override(monkeypatch) -> None:
    from divssl.pretrain import loop as train

    cpu, gpu = torch.device("cpu"), torch.device("cuda", 0)
    assert train.peak_flops(cpu, "fp32", None) is None
    assert train.peak_flops(cpu, "fp32", 2.5e12) == 2.5e12
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: "NVIDIA H200")
    assert train.peak_flops(gpu, "bf16", None) == 989e12
    assert train.peak_flops(gpu, "fp32", None) == 67e12
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: "NVIDIA A100-SXM4-80GB")
    assert train.peak_flops(gpu, "bf16", None) == 312e12
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: "Tesla V100-SXM2-16GB")
    assert train.peak_flops(gpu, "bf16", None) is None  # no bf16 on V100: MFU stays null
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: "Some Future GPU")
    assert train.peak_flops(gpu, "bf16", None) is None
