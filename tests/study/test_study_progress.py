"""Progress state from disk: done / running / failed / pending, images, rate and ETA."""

from __future__ import annotations

import json
from typing import Any

import pytest
from tests.study.conftest import plan_doc, planned_knn, pretrain_job

from divssl.study.progress import (
    append_event,
    compute_state,
    format_eta,
    images_processed,
    job_complete,
    read_events,
    state_line,
)

KNN = planned_knn()


def _job(i: int, c: int = 1000) -> Any:
    return pretrain_job(f"job{i}", [KNN], budget_images=c)


def _write(path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj) if not isinstance(obj, str) else obj)


@pytest.fixture
def study(tmp_path):
    """job0 complete, job1 running (600 images in), job2 failed (200 in), job3 pending."""
    runs = tmp_path / "runs"
    _write(runs / "job0" / "summary.json", {"status": "completed", "images_seen": 1000})
    _write(runs / "job0" / "backbone.pt", "weights")
    _write(runs / "job0" / "records" / f"{KNN.id}.json", {"rows": []})
    lines = [{"step": 1, "images_seen": 300}, {"step": 2, "images_seen": 600}]
    _write(runs / "job1" / "metrics.jsonl", "".join(json.dumps(x) + "\n" for x in lines))
    _write(runs / "job2" / "metrics.jsonl", json.dumps({"step": 1, "images_seen": 200}) + "\n")
    _write(runs / "job2" / "failed.json", {"error": "nan"})
    append_event(tmp_path, {"job": "job1", "event": "start"})
    append_event(tmp_path, {"job": "job2", "event": "start"})
    append_event(tmp_path, {"job": "job2", "event": "failed"})
    return tmp_path, plan_doc([_job(i) for i in range(4)], study="t")


def test_state_counts_jobs_and_images(study):
    root, doc = study
    assert job_complete(root, doc.jobs[0]) and not job_complete(root, doc.jobs[1])
    assert images_processed(root / "runs" / "job1") == 600
    assert images_processed(root / "runs" / "job3") == 0
    state = compute_state(root, doc, since=0.0, images_at_start=800, now=100.0)
    assert (state.total, state.done, state.running, state.failed, state.pending) == (4, 1, 1, 1, 1)
    assert state.running_ids == ["job1"]
    assert state.images_total == 4000 and state.images_done == 1800
    assert state.rate == pytest.approx((1800 - 800) / 100.0)  # images gained this session / s
    assert state.eta_seconds == pytest.approx((4000 - 1800) / 10.0)
    assert "runs 1/4 done, 1 running, 1 failed" in state_line(state)


def test_no_progress_means_no_rate_and_old_events_are_ignored(study):
    root, doc = study
    state = compute_state(root, doc, since=0.0, images_at_start=1800, now=50.0)
    assert state.rate is None and state.eta_seconds is None and format_eta(None) == "-"
    later = compute_state(root, doc, since=read_events(root)[-1]["time"] + 1, images_at_start=0)
    assert later.running == 0 and later.failed == 1  # failed.json still counts
    assert format_eta(3725) == "1h 02m" and format_eta(65) == "1m 05s"


def test_torn_event_lines_are_skipped(tmp_path):
    append_event(tmp_path, {"job": "a", "event": "start"})
    with (tmp_path / "events.jsonl").open("a") as fh:
        fh.write('{"job": "b", "ev')
    assert [e["job"] for e in read_events(tmp_path)] == ["a"]
