"""Running studies locally: records, skipping, failures, resume, locks, concurrent runners."""

from __future__ import annotations

import json
import threading

import pandas as pd
import pytest

from divssl.errors import RunFailed
from divssl.io import read_json
from divssl.pretrain.config import config_from_tree
from divssl.study.plan import build_plan
from divssl.study.progress import read_events
from divssl.study.runner import execute_job, prepare_study, run_study
from divssl.study.spec import study_from_tree

from .conftest import tiny_tree


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A two-run study (N = 32 and 64 at C = 64) run once on the local backend."""
    import io

    from rich.console import Console

    root = tmp_path_factory.mktemp("study") / "s"
    plan = build_plan(study_from_tree(tiny_tree()), root)
    outcome = run_study(plan, console=Console(file=io.StringIO()))
    return plan, outcome


def test_every_run_is_pretrained_evaluated_and_recorded(finished):
    plan, outcome = finished
    assert [r["status"] for r in outcome.results] == ["done", "done"]
    frame = pd.read_parquet(plan.study_dir / "results.parquet")
    csv = pd.read_csv(plan.study_dir / "results.csv")
    assert len(frame) == len(csv) == outcome.rows == 2 * 2 * 3  # runs x (id, ood) x metrics
    for run in plan.runs:
        summary = read_json(run.run_dir / "summary.json")
        assert summary["status"] == "completed" and summary["images_seen"] == 64
        (ev,) = run.evaluations
        (result_file,) = (run.run_dir / "eval" / ev.id).glob("knn_*.json")
        result = read_json(result_file)
        for split, name in (("test", "id"), ("ood", "ood")):
            for metric in ("top1", "top5", "macro_f1"):
                want = result["results"][0][split][metric]
                row = frame[
                    (frame.run == run.id) & (frame.split == name) & (frame.metric == metric)
                ]
                assert len(row) == 1
                assert row.value.item() == pytest.approx(want["value"])
                assert row.ci_low.item() == pytest.approx(want["ci_low"])
                assert row.n.item() == want["n"] == 32
        row = frame[frame.run == run.id].iloc[0]
        assert row.unique_images == run.unique_images and row.budget_images == 64
        assert row["subset.fraction"] == run.factors["subset.fraction"] and row.k == 3
        assert row.method == "simclr" and row.pool == "w" and not row.baseline


def test_a_second_run_skips_finished_jobs(finished, quiet_console):
    plan, _ = finished
    before = len(read_events(plan.study_dir))
    again = run_study(plan, console=quiet_console)
    assert [r["status"] for r in again.results] == ["skipped", "skipped"]
    events = read_events(plan.study_dir)[before:]
    assert {e["event"] for e in events} == {"skipped"}


def test_a_held_lock_means_another_runner_has_the_job(finished):
    from filelock import FileLock

    plan, _ = finished
    job = plan.runs[0].id
    with FileLock(str(plan.study_dir / "locks" / f"{job}.lock")):
        assert execute_job(str(plan.study_dir), job)["status"] == "locked"
    assert execute_job(str(plan.study_dir), job)["status"] == "skipped"


def test_a_failed_run_is_recorded_and_the_others_continue(tmp_path, monkeypatch, quiet_console):
    import divssl.study.worker

    real = divssl.study.worker.pretrain  # the trainer entry point the worker calls

    def flaky(cfg, resume=False, **kw):
        if cfg.seed == 1:
            raise RunFailed("non-finite loss nan at step 1 (test)")
        return real(cfg, resume=resume, **kw)

    monkeypatch.setattr(divssl.study.worker, "pretrain", flaky)
    tree = tiny_tree(grid={"pool": ["w"], "seed": [0, 1]})
    plan = build_plan(study_from_tree(tree), tmp_path / "s", count_flops=False)
    outcome = run_study(plan, console=quiet_console)
    status = {r["id"]: r["status"] for r in outcome.results}
    bad = next(r for r in plan.runs if r.factors["seed"] == 1)
    good = next(r for r in plan.runs if r.factors["seed"] == 0)
    assert status == {good.id: "done", bad.id: "failed"}
    failure = read_json(bad.run_dir / "failed.json")
    assert failure["type"] == "RunFailed" and "non-finite loss" in failure["error"]
    assert failure["stage"] == "pretrain" and failure["attempts"] == 1
    assert "non-finite" in quiet_console.file.getvalue()
    monkeypatch.setattr(divssl.study.worker, "pretrain", real)
    retry = run_study(plan, console=quiet_console)
    assert {r["id"]: r["status"] for r in retry.results} == {good.id: "skipped", bad.id: "done"}
    assert not (bad.run_dir / "failed.json").exists()


def test_an_interrupted_run_resumes_from_its_checkpoint(tmp_path, quiet_console):
    from divssl.pretrain.loop import pretrain

    tree = tiny_tree(grid={"pool": ["w"]})
    tree["base"]["budget.images"] = 128  # 4 steps, a checkpoint after each
    plan = build_plan(study_from_tree(tree), tmp_path / "s", count_flops=False)
    (run,) = plan.runs
    pretrain(config_from_tree(run.config), step_limit=2)
    assert read_json(run.run_dir / "summary.json")["status"] == "interrupted"
    first_lines = (run.run_dir / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in first_lines] == [1, 2]
    outcome = run_study(plan, console=quiet_console)
    assert outcome.results[0]["status"] == "done"
    lines = (run.run_dir / "metrics.jsonl").read_text().splitlines()
    assert lines[:2] == first_lines  # kept verbatim (a restart would rewrite their timings)
    assert [json.loads(x)["step"] for x in lines] == [1, 2, 3, 4]
    assert read_json(run.run_dir / "summary.json")["images_seen"] == 128


def test_two_runners_never_execute_the_same_job(tmp_path, quiet_console):
    tree = tiny_tree(grid={"pool": ["w"], "seed": [0, 1, 2]})
    plan = build_plan(study_from_tree(tree), tmp_path / "s", count_flops=False)
    prepare_study(plan)
    outcomes = []

    def runner():
        outcomes.append(run_study(plan, console=quiet_console))

    threads = [threading.Thread(target=runner) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    starts = [e["job"] for e in read_events(plan.study_dir) if e["event"] == "start"]
    assert sorted(starts) == sorted(r.id for r in plan.runs)  # each job started exactly once
    for run in plan.runs:
        statuses = [r["status"] for o in outcomes for r in o.results if r["id"] == run.id]
        assert sorted(statuses)[0] == "done" and statuses.count("done") == 1
        assert set(statuses) <= {"done", "locked", "skipped"}
    final = pd.read_parquet(plan.study_dir / "results.parquet")
    assert sorted(final.run.unique()) == sorted(r.id for r in plan.runs)


def test_linear_finetune_and_from_scratch_baselines_are_recorded(tmp_path, quiet_console):
    evaluations = [
        {"kind": "linear", "task": "wt", "fractions": [50, 100], "n_boot": 10,
         "weight_decays": [0.1, 1.0], "max_iter": 100},
        {"kind": "finetune", "task": "wt", "epochs": 1, "batch_size": 16, "eval_points": 2,
         "n_boot": 10, "scratch_seeds": [3]},
    ]  # fmt: skip
    tree = tiny_tree(grid={"pool": ["w"]}, evaluations=evaluations)
    plan = build_plan(study_from_tree(tree), tmp_path / "s", count_flops=False)
    (baseline,) = plan.baselines
    assert baseline.seed == 3 and baseline.backbone == "convnet_tiny"
    outcome = run_study(plan, console=quiet_console)
    assert sorted(r["status"] for r in outcome.results) == ["done", "done"]
    frame = pd.read_parquet(plan.study_dir / "results.parquet")
    linear = frame[frame["eval"] == "linear"]
    assert sorted(linear.label_fraction.unique()) == [50.0, 100.0] and len(linear) == 2 * 2 * 3
    (linear_file,) = (plan.runs[0].run_dir / "eval").glob("linear-*/linear_*.json")
    assert [s["weight_decay"] for s in read_json(linear_file)["config"]["settings"]] == [0.1, 1.0]
    tuned = frame[(frame["eval"] == "finetune") & ~frame.baseline]
    scratch = frame[frame.baseline]
    assert set(scratch.method) == {"scratch"} and set(scratch.seed) == {3}
    for part in (tuned, scratch):
        assert sorted(part.eval_point.unique()) == [0, 1] and set(part.split) == {"id", "ood"}
        assert len(part) == 2 * 2 * 3
    (result_file,) = (tmp_path / "s" / "baselines" / baseline.id / "eval").rglob("*.json")
    result = read_json(result_file)
    assert result["encoder"]["init"] == "random" and result["encoder"]["seed"] == 3
    last = scratch[
        (scratch.eval_point == 1) & (scratch.split == "ood") & (scratch.metric == "top1")
    ]
    assert last.value.item() == pytest.approx(result["points"][1]["ood"]["top1"]["value"])


def test_vdna_distances_bin_over_the_declared_reference_pool(finished):
    from divssl.data.pool import open_pool
    from divssl.distances import get_extractor, pool_features
    from divssl.distances.metrics import vdna, vdna_ranges
    from divssl.study.runner import compute_distances

    from .conftest import OTHER, POOL

    plan, _ = finished
    run_id = plan.runs[0].id
    block = {
        "a": ["w"],
        "b": ["w", "w_other"],
        "metric": ["vdna"],
        "extractor": f"run:{run_id}",
        "max_images": 64,
        "vdna_bins": 50,
        "vdna_reference": "w_other",
    }
    rows = compute_distances(plan.study_dir, study_from_tree(tiny_tree(distances=[block])))
    ext = get_extractor(f"run:{plan.study_dir / 'runs' / run_id}")
    acts = {s: pool_features(open_pool(s), ext, 64, 0, with_acts=True).acts for s in (POOL, OTHER)}
    want = vdna(acts[POOL], acts[OTHER], 50, vdna_ranges(acts[OTHER])).mean
    value = {r["b"]: r["value"] for r in rows}
    assert value["w_other"] == pytest.approx(want, rel=1e-12)
    assert value["w"] == 0.0
