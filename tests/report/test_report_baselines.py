"""Reference baselines (baselines.json) in the report: rows beside Table 1, lines in Figure 4."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib
import pandas as pd
import pytest
from report_synth import make_study

from divssl.errors import ConfigError

matplotlib.use("Agg")

# (baseline, eval, label fraction, k, split, value); backbone "pixels" for pixel baselines
REFERENCE = [
    ("pixels_logreg", "linear", 100.0, None, "id", 0.512),
    ("pixels_logreg", "linear", 100.0, None, "ood", 0.301),
    ("random_init", "linear", 100.0, None, "id", 0.402),
    ("pixels_knn", "knn", 100.0, 20, "id", 0.455),
    ("pixels_logreg", "linear", 10.0, None, "id", 0.333),
]


def _baseline_rows() -> list[dict]:
    rows = []
    for name, ev, frac, k, split, value in REFERENCE:
        rows.append({
            "baseline": name, "eval": ev, "eval_id": f"{ev}-world_id", "task": "world_id",
            "label_fraction": frac, "k": k, "split": split, "metric": "top1", "value": value,
            "ci_low": value - 0.01, "ci_high": value + 0.01, "n": 2000,
            "backbone": "pixels" if name != "random_init" else "convnet_tiny",
            "image_size": 16, "cifar_stem": False, "seconds": 1.0,
        })  # fmt: skip
    return rows


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    from divssl.report import build_report

    root = make_study(tmp_path_factory.mktemp("baselines") / "study", finetune=False)
    (root / "baselines.json").write_text(json.dumps(_baseline_rows()))
    return root, build_report(root)


def test_reference_rows_follow_table1(report):
    root, paths = report
    md = paths["markdown"].read_text()
    assert "world_id: reference baselines (no pretraining)" in md
    table1_at = md.index("Diversity at a fixed budget")
    assert md.index("reference baselines") > table1_at
    # cells: percent with the bootstrap interval, from the rows written above
    assert (
        "| raw pixels, logistic regression | pixels @ 16 px | linear probe, 100% labels | "
        "51.2 [50.2, 52.2] | 30.1 [29.1, 31.1] |"
    ) in md
    assert "| random-init encoder | convnet_tiny @ 16 px | linear probe, 100% labels | " in md
    numbers = pd.read_csv(root / "report" / "tables" / "baselines_world_id.csv")
    assert len(numbers) == len(REFERENCE)
    assert "reference baselines" in paths["html"].read_text()


def test_figure4_draws_matching_reference_lines(report):
    import matplotlib.pyplot as plt

    from divssl.report.figures import reference_lines
    from divssl.report.tables import load_study, primary_probe

    root, paths = report
    assert any(k.startswith("figures/figure4") for k in paths)
    data = load_study(root)
    group = primary_probe(data.results)
    group = group[(group["task"] == "world_id")].head(1)  # linear, 100% labels, top-1
    _, ax = plt.subplots()
    lines = reference_lines(ax, data.baselines, "world_id", group, "id")
    ys = sorted(h.get_ydata()[0] for h in lines.values())
    assert ys == pytest.approx([40.2, 51.2])  # knn and 10%-label rows are another setting
    ood = reference_lines(ax, data.baselines, "world_id", group, "ood")
    assert [h.get_ydata()[0] for h in ood.values()] == pytest.approx([30.1])
    assert reference_lines(ax, None, "world_id", group, "id") == {}
    plt.close("all")


def test_malformed_baselines_file_is_a_config_error(tmp_path: Path):
    from divssl.report.tables import read_baselines

    (tmp_path / "baselines.json").write_text(json.dumps([{"baseline": "pixels_knn"}]))
    with pytest.raises(ConfigError, match="baselines.json"):
        read_baselines(tmp_path)
    assert read_baselines(tmp_path / "nothing") is None
