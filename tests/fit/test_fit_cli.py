"""``divssl fit STUDY_DIR`` end to end on synthetic results tables (in-process and exit codes)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from fit_synth import TRUE, make_study

from divssl import cli


def run_main(args: list[str], monkeypatch, capsys) -> tuple[int, str, str]:
    """Run ``divssl ARGS`` in-process; return (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["divssl", *args])
    with pytest.raises(SystemExit) as info:
        cli.main()
    out = capsys.readouterr()
    return int(info.value.code or 0), out.out, out.err


@pytest.fixture()
def study(tmp_path: Path) -> Path:
    return make_study(tmp_path / "study")


def test_fit_writes_json_with_answers(study, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["divssl", "fit", str(study), "--n-boot", "20",
                                      "--predict", "1000,100000", "--best-n-at", "50000",
                                      "--epsilon", "0.02"])  # fmt: skip
    cli.main()
    out = capsys.readouterr().out
    text = (study / "fit.json").read_text()
    assert "NaN" not in text and "Infinity" not in text  # strict JSON: nan / inf as null
    doc = json.loads(text)
    assert str(study / "fit.json") in out and "R* =" in out
    assert "accuracy lost (points) by each extra repetition at C = 50,000" in out
    assert doc["selection"]["eval"] == "linear" and doc["selection"]["split"] == "id"
    assert doc["runs"] == 60 and doc["conditions"] == 20
    assert doc["params"]["r_star"] == pytest.approx(TRUE["r_star"], rel=0.15)
    lo, hi = doc["params"]["r_star_ci"]
    assert lo < doc["params"]["r_star"] < hi and doc["params"]["bootstrap_replicates"] == 20
    assert [p["c"] for p in doc["predictions"]] == [100_000.0]
    assert [b["c"] for b in doc["best_n"]] == [50_000.0] and doc["best_n"][0]["epsilon"] == 0.02
    assert len(doc["points"]) == 60 and {"residual", "loo_error", "c_eff"} <= set(doc["points"][0])
    assert {r["model"] for r in doc["comparison"]} >= {"law", "power_c"}
    assert len(doc["repetitions"]["50000"]) == 10


def test_fit_selects_knn_and_ood(study, monkeypatch, capsys):
    args = ["fit", str(study), "--eval", "knn", "--split", "ood", "--n-boot", "0"]
    monkeypatch.setattr(sys, "argv", ["divssl", *args, "--out", str(study / "k.json")])
    cli.main()
    doc = json.loads((study / "k.json").read_text())
    assert doc["selection"]["eval"] == "knn" and doc["selection"]["k"] == 20
    assert doc["params"]["r_star_ci"] == [None, None]  # no bootstrap asked for
    linear_id = [p["accuracy"] for p in doc["points"]]
    assert max(linear_id) < TRUE["ceiling"] - 0.1  # knn OOD values are 0.15 lower


@pytest.mark.parametrize(
    ("grid", "extra", "says"),
    [
        ({"budgets": (30_000,), "sizes": (1_000,)}, [], "grid: the study's grid does not identify"),
        ({}, ["--eval", "finetune"], "--eval: no records with eval = 'finetune'"),
        ({}, ["--where", "nosuch=1"], "--where: unknown column 'nosuch'"),
        ({}, ["--floor", "high"], "--floor: expected 'fit' or a number"),
        ({}, ["--predict", "1000"], "--predict: expected N,C"),
        ({}, ["--out", "fit.csv"], "--out: must be a .json file"),
    ],
)
def test_bad_input_exits_2_and_writes_nothing(tmp_path, monkeypatch, capsys, grid, extra, says):
    root = make_study(tmp_path / "s", **grid)
    code, _, err = run_main(["fit", str(root), "--n-boot", "10", *extra], monkeypatch, capsys)
    assert code == 2
    assert says in " ".join(err.split())
    assert sorted(p.name for p in root.iterdir()) == ["results.parquet", "study.yaml"]


def test_two_methods_need_a_where_filter(tmp_path, monkeypatch, capsys):
    root = make_study(tmp_path / "s", methods=("simclr", "vicreg"))
    code, _, err = run_main(["fit", str(root), "--n-boot", "0"], monkeypatch, capsys)
    err = " ".join(err.split())
    assert code == 2 and "not one family" in err and "method (simclr, vicreg)" in err
    monkeypatch.setattr(sys, "argv", ["divssl", "fit", str(root), "--n-boot", "0",
                                      "--where", "method=vicreg"])  # fmt: skip
    cli.main()
    assert json.loads((root / "fit.json").read_text())["selection"]["method"] == "vicreg"


def test_not_a_study_folder_exits_2(tmp_path, monkeypatch, capsys):
    code, _, err = run_main(["fit", str(tmp_path / "nope")], monkeypatch, capsys)
    assert not (tmp_path / "nope").exists()
    assert code == 2 and "STUDY_DIR" in err
