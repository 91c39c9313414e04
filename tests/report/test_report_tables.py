"""Report tables: seed summaries against pandas and the Student-t formula, table shapes, inputs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from report_synth import METHODS, SEEDS, SIZES, C, finetune_rows, make_study, probe_rows
from scipy import stats as sps

from divssl.errors import ConfigError
from divssl.report import section_names
from divssl.report.tables import (
    format_interval,
    informative_factors,
    load_study,
    normalize_results,
    read_distances,
    summarize_seeds,
    table1,
    table2,
    table5,
)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory):
    return load_study(make_study(tmp_path_factory.mktemp("tables") / "study"))


def _t_half(values: np.ndarray) -> float:
    """Half-width of the Student-t 95% interval, from the textbook formula."""
    n = len(values)
    return sps.t.ppf(0.975, n - 1) * values.std(ddof=1) / math.sqrt(n)


def test_table1_means_and_intervals_match_pandas(data) -> None:
    blocks = {b.key: b for b in table1(data)}
    block = blocks[f"table1_world_id_linear_100_convnet_tiny_{C}"]
    raw = pd.DataFrame(probe_rows())
    ref = raw[
        (raw["eval"] == "linear")
        & (raw["task"] == "world_id")
        & (raw["split"] == "id")
        & (raw["metric"] == "top1")
        & (raw["label_fraction"] == 100.0)
        & raw["pool"].notna()
    ]
    grouped = ref.groupby(["method", "unique_images"])["value"]
    assert block.display.shape == (len(SIZES), 3 + len(METHODS))
    assert list(block.display.columns) == ["pretraining set", "N", "D = N/C", *METHODS]
    for (method, n), values in grouped:
        row = block.numbers[
            (block.numbers["method"] == method) & (block.numbers["unique_images"] == n)
        ].iloc[0]
        v = values.to_numpy()
        assert row["mean"] == pytest.approx(v.mean(), abs=1e-12)
        assert row["ci_high"] - row["mean"] == pytest.approx(_t_half(v), rel=1e-9)
        assert row["n"] == len(SEEDS) and row["n_kind"] == "seeds"
        shown = block.display.loc[block.display["N"] == f"{int(n):,}", method].iloc[0]
        assert shown == f"{v.mean() * 100:.1f} ± {_t_half(v) * 100:.1f} (n={len(SEEDS)})"
    # one table per (task, probe setting): linear 100% and kNN k=20/200 on world_id, world_far
    assert len(blocks) == 4


def test_table2_pools_by_tasks(data) -> None:
    blocks = table2(data)
    assert [b.key for b in blocks] == [
        f"table2_byol_convnet_tiny_{C}",
        f"table2_simclr_convnet_tiny_{C}",
    ]
    display = blocks[1].display
    # rows: 3 subsets of `world` + 3 compositions (the epoch-normalized B is not at this C)
    assert display.shape == (6, 6)
    assert list(display.columns[3:]) == ["world_id", "world_far", "world_id [OOD]"]
    raw = pd.DataFrame(probe_rows())
    ref = raw[
        (raw["method"] == "simclr")
        & (raw["task"] == "world_far")
        & (raw["unique_images"] == SIZES[0])
        & raw["pool"].notna()
    ]["value"]
    cell = display[(display["N"] == f"{SIZES[0]:,}")]["world_far"].iloc[0]
    assert cell.startswith(f"{ref.mean() * 100:.1f} ± ")


def test_table5_label_fractions(data) -> None:
    blocks = table5(data)
    assert len(blocks) == 2
    display = blocks[0].display
    assert list(display.columns) == [
        "backbone",
        "pretraining set",
        "N",
        "D = N/C",
        "10% labels",
        "100% labels",
    ]
    # subsets of `world` and the compositions (linear 100% only -> their 10% cell is empty)
    assert (display["10% labels"] == "—").sum() == 3
    assert (display["10% labels"] != "—").sum() == len(SIZES)


def test_single_seed_keeps_bootstrap_interval_and_test_n() -> None:
    frame = normalize_results(pd.DataFrame(probe_rows()))
    one = frame[frame["seed"] == 0]
    stats = summarize_seeds(
        one,
        [
            "method",
            "pretrain_set",
            "unique_images",
            "eval",
            "task",
            "split",
            "label_fraction",
            "k",
            "metric",
            "normalization",
            "budget_images",
        ],
    )
    assert (stats["n_kind"] == "test").all() and (stats["n"] == 2000).all()
    rec = stats.iloc[0]
    assert rec["ci_high"] - rec["mean"] == pytest.approx(0.02)
    text = format_interval(rec["mean"], rec["ci_low"], rec["ci_high"], 2000, "test")
    assert text.endswith("(1 seed, n=2000)") and text.count("[") == 1


def test_format_interval_forms() -> None:
    assert format_interval(0.621, 0.608, 0.634, 3) == "62.1 ± 1.3 (n=3)"
    assert format_interval(0.01, math.nan, math.nan, 1, "runs", signed=True, unit=" pp") == (
        "+1.0 pp (n=1, no interval)"
    )
    assert format_interval(math.nan, 0, 1, 3) == "—"


def test_informative_factors_drop_duplicates_of_known_columns() -> None:
    frame = normalize_results(pd.DataFrame(probe_rows()))
    assert informative_factors(frame, ["subset.fraction", "method"]) == []
    # the same grid point run at two learning rates: the axis must stay a group key
    swept = pd.concat([frame.assign(**{"optim.base_lr": lr}) for lr in (0.1, 0.3)])
    assert informative_factors(swept, ["optim.base_lr"]) == ["optim.base_lr"]
    stats = summarize_seeds(
        swept[swept["eval"] == "knn"], ["method", "unique_images", "k", "optim.base_lr"]
    )
    assert (stats["n"] == len(SEEDS)).all() and len(stats) == 2 * 3 * 2 * 2


def test_csv_results_with_string_booleans(tmp_path: Path) -> None:
    root = make_study(tmp_path / "s", fmt="csv")
    data = load_study(root)
    assert data.results_path.name == "results.csv"
    assert data.results["baseline"].dtype == bool
    assert data.results["baseline"].sum() == sum(r["baseline"] for r in finetune_rows())


def test_bad_inputs_raise_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="study_dir"):
        load_study(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no results.parquet or results.csv"):
        load_study(tmp_path / "empty")
    frame = pd.DataFrame(probe_rows()).drop(columns=["metric"])
    with pytest.raises(ConfigError, match="missing columns") as err:
        normalize_results(frame)
    assert err.value.field == "results"
    frame = pd.DataFrame(probe_rows())
    frame.loc[0, "value"] = 62.0  # a percent where a fraction is expected
    with pytest.raises(ConfigError) as err:
        normalize_results(frame)
    assert err.value.field == "results.value"
    with pytest.raises(ConfigError) as err:
        section_names({"report": {"sections": ["summary", "figure9"]}})
    assert err.value.field == "report.sections[1]" and "figure3" in str(err.value)


def test_distance_file_forms(tmp_path: Path) -> None:
    rows = [{"a": "p", "b": "t", "metric": "fid", "extractor": "inception", "value": 3.0}]
    (tmp_path / "distances.json").write_text(json.dumps({"rows": rows}))
    assert read_distances(tmp_path)["value"].tolist() == [3.0]
    per_metric = {
        "kid": {
            "rows": ["p", "q"],
            "cols": ["t"],
            "values": [[0.1], [0.2]],
            "std": [[0.01], [0.02]],
        }
    }
    (tmp_path / "distances.json").write_text(json.dumps(per_metric))
    frame = read_distances(tmp_path)
    assert frame[["a", "b", "value", "std"]].values.tolist() == [
        ["p", "t", 0.1, 0.01],
        ["q", "t", 0.2, 0.02],
    ]
    (tmp_path / "distances.json").write_text(json.dumps([{"a": "p", "value": 1.0}]))
    with pytest.raises(ConfigError, match="missing columns"):
        read_distances(tmp_path)


def test_records_without_value_are_left_out_and_counted() -> None:
    frame = pd.DataFrame(probe_rows())
    frame.loc[[0, 5], "value"] = None  # undefined metrics are stored as null
    out = normalize_results(frame)
    assert len(out) == len(frame) - 2
    assert out.attrs["records_without_value"] == 2
