"""The results store: flattening evaluation results, filters, seed summaries, exports."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from tests.study.conftest import planned_knn, pretrain_job

from divssl.errors import ConfigError
from divssl.study.jobs import BaselineJob, PlannedEvaluation
from divssl.study.results import (
    NUMERIC_COLUMNS,
    REQUIRED_COLUMNS,
    RESULT_COLUMNS,
    SCORE_METRICS,
    ResultRecord,
    eval_rows,
    export_results,
    filter_results,
    record_rows,
    run_columns,
    summarize,
    to_frame,
)
from divssl.study.spec import FinetuneEval


def _report(top1: float, n: int = 50) -> dict:
    iv = {"value": top1, "ci_low": top1 - 0.1, "ci_high": top1 + 0.1, "n": n}
    return {
        "top1": iv,
        "top5": {**iv, "value": 1.0},
        "macro_f1": {**iv, "value": top1 / 2},
        "per_class_accuracy": [top1],
        "n": n,
    }


JOB = pretrain_job(
    "abc123def456",
    factors={"subset.fraction": 0.5, "seed": 1, "method_args": {"temperature": 0.2}},
    config={"method": "simclr", "backbone": "convnet_tiny", "image_size": 16, "seed": 1},
)
KNN = planned_knn("t")


def test_knn_and_linear_results_become_one_row_per_split_setting_and_metric():
    base = run_columns(JOB, {"images_seen": 64, "wall_seconds": 1.5}, "tiny")
    assert base["method_args"] == '{"temperature": 0.2}' and base["subset.fraction"] == 0.5
    result = {"results": [
        {"fraction": 100.0, "k": 20, "test": _report(0.6), "ood": _report(0.4)},
        {"fraction": 100.0, "k": 200, "test": _report(0.7)},
    ]}  # fmt: skip
    rows = record_rows(eval_rows(base, KNN, result))
    assert len(rows) == (2 + 1) * 3
    row = next(r for r in rows if r["k"] == 20 and r["split"] == "ood" and r["metric"] == "top1")
    assert row["value"] == 0.4 and row["ci_low"] == pytest.approx(0.3) and row["n"] == 50
    assert row["run"] == JOB.id and row["images_seen"] == 64 and row["eval"] == "knn"
    assert row["eval_id"] == KNN.id and row["subset.fraction"] == 0.5
    f1 = next(r for r in rows if r["k"] == 200 and r["metric"] == "macro_f1")
    assert f1["value"] == pytest.approx(0.35) and f1["split"] == "id"


def test_finetune_points_become_eval_points():
    finetune = PlannedEvaluation.of(FinetuneEval(task="t", scratch_seeds=[2]), "spec")
    job = BaselineJob(
        id="b1", task="t", task_spec="spec", backbone="resnet18", image_size=32,
        cifar_stem=False, seed=2, evaluation=finetune, out="baselines/b1",
    )  # fmt: skip
    base = run_columns(job, None, "tiny")
    assert base["baseline"] is True and base["method"] == "scratch"
    points = [
        {"step": 5, "test": _report(0.3), "ood": _report(0.2)},
        {"step": 10, "test": _report(0.5), "ood": _report(0.3)},
    ]
    rows = record_rows(eval_rows(base, finetune, {"points": points}))
    assert len(rows) == 2 * 2 * 3
    last = [r for r in rows if r["eval_point"] == 1 and r["metric"] == "top1"]
    assert {r["split"]: r["value"] for r in last} == {"id": 0.5, "ood": 0.3}
    assert all(r["eval_step"] == 10 for r in last)


def test_rows_are_validated_when_written():
    base = run_columns(JOB, None, "tiny")
    bad = {"results": [{"fraction": 100.0, "k": 20, "test": {"top1": {"value": "high"}}}]}
    with pytest.raises(ConfigError) as err:
        eval_rows(base, KNN, bad)
    assert err.value.field == "results.value"
    with pytest.raises(ConfigError) as err:
        eval_rows({**base, "image_size": None}, KNN, {"results": [
            {"fraction": 100.0, "k": 20, "test": _report(0.5)}]})  # fmt: skip
    assert err.value.field == "results.image_size"


def test_schema_lists_come_from_the_one_record_model():
    # the report's and the store's column lists are derived from ResultRecord, not typed again
    assert RESULT_COLUMNS[:2] == ("study", "run") and "eval_id" in RESULT_COLUMNS
    assert set(REQUIRED_COLUMNS) == {
        "study", "run", "kind", "baseline", "method", "backbone", "image_size", "seed", "eval",
        "task", "split", "metric", "value", "eval_id",
    }  # fmt: skip
    assert {"budget_images", "diversity", "label_fraction", "k", "value", "n"} <= set(
        NUMERIC_COLUMNS
    )
    assert not {"method", "split", "baseline", "pool"} & set(NUMERIC_COLUMNS)
    assert SCORE_METRICS == ("top1", "top5", "macro_f1")
    record = ResultRecord.model_validate(
        {c: None for c in RESULT_COLUMNS}
        | {"study": "s", "run": "r", "kind": "pretrain", "baseline": False, "method": "m",
           "backbone": "b", "image_size": 8, "seed": 0, "eval": "knn", "task": "t",
           "split": "id", "metric": "top1", "value": 0.5, "eval_id": "e", "optim.base_lr": 0.1}
    )  # fmt: skip
    assert record.model_dump()["optim.base_lr"] == 0.1  # grid axes travel as extra columns


def _frame() -> pd.DataFrame:
    rows = []
    rng = np.random.default_rng(0)
    for n in (10, 50):
        for seed in range(3):
            for split in ("id", "ood"):
                rows.append(
                    {
                        "run": f"r{n}-{seed}",
                        "method": "simclr",
                        "seed": seed,
                        "unique_images": n,
                        "baseline": False,
                        "eval": "linear",
                        "split": split,
                        "metric": "top1",
                        "label_fraction": 100.0,
                        "value": float(rng.uniform(0.3, 0.7)),
                        "ci_low": 0.0,
                        "ci_high": 1.0,
                        "n": 100,
                        "wall_seconds": float(seed),
                    }
                )
    return to_frame(rows)


def test_frames_keep_types_and_filters_compare_numbers_as_numbers():
    frame = _frame()
    assert pd.api.types.is_numeric_dtype(frame["unique_images"])
    assert pd.api.types.is_bool_dtype(frame["baseline"])
    assert list(frame.columns[:3]) == ["run", "baseline", "method"]
    assert len(filter_results(frame, ["unique_images=10.0", "split=id"])) == 3
    assert len(filter_results(frame, ["baseline=false", "method=simclr"])) == 12
    assert filter_results(frame, ["method=byol"]).empty
    with pytest.raises(ConfigError) as err:
        filter_results(frame, ["colour=red"])
    assert err.value.field == "--where" and "unique_images" in err.value.choices
    with pytest.raises(ConfigError):
        filter_results(frame, ["unique_images=ten"])
    with pytest.raises(ConfigError):
        filter_results(frame, ["split"])


def test_summary_is_the_mean_and_t_interval_over_seeds():
    frame = _frame()
    table = summarize(frame)
    assert len(table) == 4 and set(table["n_seeds"]) == {3}
    for _, row in table.iterrows():
        values = frame[(frame.unique_images == row.unique_images) & (frame.split == row.split)]
        x = values["value"].to_numpy()
        half = stats.t.ppf(0.975, df=2) * x.std(ddof=1) / math.sqrt(3)
        assert row["mean"] == pytest.approx(x.mean())
        assert row["std"] == pytest.approx(x.std(ddof=1))
        assert row["ci_low"] == pytest.approx(x.mean() - half)
        assert row["ci_high"] == pytest.approx(x.mean() + half)


def test_export_writes_csv_or_parquet(tmp_path):
    frame = _frame()
    export_results(frame, tmp_path / "r.csv")
    export_results(frame, tmp_path / "r.parquet")
    assert len(pd.read_csv(tmp_path / "r.csv")) == len(frame)
    back = pd.read_parquet(tmp_path / "r.parquet")
    assert np.allclose(back["value"], frame["value"])
    with pytest.raises(ConfigError) as err:
        export_results(frame, tmp_path / "r.xlsx")
    assert err.value.choices == [".csv", ".parquet"]
