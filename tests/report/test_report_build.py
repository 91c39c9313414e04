"""The whole report: files, valid SVG/PNG, numbers against independent references, notes, CLI."""

from __future__ import annotations

import base64
import math
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from report_synth import C, distance_rows, finetune_rows, make_study, probe_rows
from scipy import special
from scipy import stats as sps
from typer.testing import CliRunner

from divssl.errors import ConfigError
from divssl.report import SECTIONS, build_report
from divssl.report.cli import app


def test_every_section_has_output(full_report) -> None:
    root, paths = full_report
    out = root / "report"
    assert paths["html"] == out / "report.html" and paths["markdown"] == out / "report.md"
    svgs = sorted(k for k in paths if k.endswith(".svg"))
    stems = {Path(k).stem.split("_")[0] for k in svgs}
    assert stems == {"figure3", "figure4", "id", "distance", "vendi"}
    for key in svgs:
        assert (out / key.replace(".svg", ".png")).is_file()
    md = paths["markdown"].read_text()
    # only the data-constrained fit is skipped: the synthetic study has a single budget C
    assert md.count("Skipped") == 1
    assert "> Skipped: byol / convnet_tiny / B / world_id: the grid (N in {30000}" in md


def test_figures_are_valid_svg_and_png(full_report) -> None:
    _, paths = full_report
    for key, path in paths.items():
        if key.endswith(".svg"):
            root = ET.parse(path).getroot()
            assert root.tag == "{http://www.w3.org/2000/svg}svg"
            assert float(root.get("width").removesuffix("pt")) > 100
        elif key.endswith(".png"):
            with Image.open(path) as img:
                img.verify()
            with Image.open(path) as img:
                assert img.format == "PNG" and img.width >= 800
                assert img.info["dpi"][0] == pytest.approx(200, abs=0.5)


def test_html_embeds_every_figure_and_markdown_links_pngs(full_report) -> None:
    root, paths = full_report
    html = paths["html"].read_text()
    embedded = re.findall(r'<img src="data:image/svg\+xml;base64,([^"]+)"', html)
    svgs = [p for k, p in paths.items() if k.endswith(".svg")]
    assert len(embedded) == len(svgs)
    assert {base64.b64decode(e) for e in embedded} == {p.read_bytes() for p in svgs}
    assert "<script" not in html
    md = paths["markdown"].read_text()
    pngs = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", md)
    assert len(pngs) == len(svgs)
    assert all((root / "report" / p).is_file() for p in pngs)
    # header values come from the run summaries and the results file
    assert "| device | cpu |" in md and "| torch version | 2.9.0+cpu |" in md
    assert f"| budget C (images) | 30,000, {C:,} |" in md


def test_figure3_numbers_match_pandas(full_report) -> None:
    root, paths = full_report
    numbers = pd.read_csv(paths[f"tables/figure3_world_id_convnet_tiny_{C}_numbers.csv"])
    raw = pd.DataFrame(probe_rows())
    comp = raw[raw["composition"].notna()]
    for (method, name, norm), values in comp.groupby(["method", "composition", "normalization"])[
        "value"
    ]:
        label = name if norm == "compute" else f"{name} (epoch-normalized)"
        row = numbers[(numbers["method"] == method) & (numbers["pretrain_set"] == label)]
        assert len(row) == 1
        assert row["mean"].iloc[0] == pytest.approx(values.mean(), abs=1e-12)
        assert row["n"].iloc[0] == len(values)


def _effective_robustness_reference() -> dict[str, tuple[float, float]]:
    """ER per condition from the definition: least squares in logit space on the baseline
    points, ER = ood - expit(b + a * logit(id)), averaged per run then over runs."""
    raw = pd.DataFrame(finetune_rows())
    wide = raw.pivot_table(index=["run", "eval_point"], columns="split", values="value")
    info = raw.drop_duplicates("run").set_index("run")
    wide = wide.join(info[["baseline", "unique_images"]], on="run")
    base = wide[wide["baseline"].astype(bool)]
    slope, intercept = np.polyfit(special.logit(base["id"]), special.logit(base["ood"]), 1)
    pre = wide[~wide["baseline"].astype(bool)].copy()
    pre["er"] = pre["ood"] - special.expit(intercept + slope * special.logit(pre["id"]))
    out = {}
    for n, sub in pre.groupby("unique_images"):
        per_run = sub.groupby(level="run")["er"].mean().to_numpy()
        half = sps.t.ppf(0.975, len(per_run) - 1) * per_run.std(ddof=1) / math.sqrt(len(per_run))
        out[f"simclr · world · N={int(n) // 1000}k"] = (per_run.mean(), half)
    return out


def test_effective_robustness_matches_reference(full_report) -> None:
    _, paths = full_report
    table = pd.read_csv(paths["tables/robustness_world_id_macro_f1.csv"])
    reference = _effective_robustness_reference()
    assert set(table["label"]) == set(reference)
    for label, (mean, half) in reference.items():
        row = table[table["label"] == label].iloc[0]
        assert row["er"] == pytest.approx(mean, abs=1e-9)
        assert row["er_high"] - row["er"] == pytest.approx(half, rel=1e-6)
        assert row["n"] == 3 and row["points"] == 15
    assert reference["simclr · world · N=60k"][0] > reference["simclr · world · N=6k"][0] > 0


def test_spearman_in_caption_matches_rank_correlation(full_report) -> None:
    _, paths = full_report
    html = paths["html"].read_text()
    raw = pd.DataFrame(probe_rows())
    probe = raw[
        (raw["eval"] == "linear")
        & (raw["task"] == "world_id")
        & (raw["split"] == "id")
        & (raw["metric"] == "top1")
        & (raw["label_fraction"] == 100.0)
        & (raw["normalization"] == "compute")
    ]
    probe = probe.assign(pset=probe["composition"].fillna(probe["pool"]))
    largest = probe["unique_images"] == probe.groupby("pset")["unique_images"].transform("max")
    means = probe[largest].groupby(["pset", "method"])["value"].mean()
    fid = {r["a"]: r["value"] for r in distance_rows() if r["metric"] == "fid"}
    x = np.array([fid[pset] for pset, _ in means.index])
    ranks_x, ranks_y = sps.rankdata(x), sps.rankdata(means.to_numpy())
    rho = np.corrcoef(ranks_x, ranks_y)[0, 1]
    assert f"FID (inception): ρ = {rho:+.2f}, n = {len(x)}" in html


def test_missing_sections_are_noted_not_fatal(tmp_path: Path) -> None:
    root = make_study(
        tmp_path / "s",
        finetune=False,
        distances=False,
        sections=["summary", "id_ood", "distances", "table5", "figure3"],
    )
    frame = pd.read_parquet(root / "results.parquet")
    frame = frame[frame["eval"] == "knn"]  # no linear probe -> no label fractions, no Figure 3
    frame.to_parquet(root / "results.parquet", index=False)
    paths = build_report(root, tmp_path / "out")
    md = paths["markdown"].read_text()
    html = paths["html"].read_text()
    for note in (
        "Skipped: no fine-tuning results",
        "Skipped: no distances.json or distances.csv in the study folder",
        "Skipped: needs linear-probe results at two or more label fractions",
        "Skipped: no probe results of named compositions",
    ):
        assert note in md and note in html
    assert not [k for k in paths if k.endswith(".svg")]
    assert "Factors (what varies)" in md


def test_bad_section_writes_nothing(tmp_path: Path) -> None:
    root = make_study(tmp_path / "s", sections=["summary", "table9"])
    with pytest.raises(ConfigError) as err:
        build_report(root)
    assert err.value.field == "report.sections[1]"
    assert not (root / "report").exists()


def test_cli_report_command(tmp_path: Path) -> None:
    root = make_study(tmp_path / "s", sections=["summary", "table1"])
    result = CliRunner().invoke(app, [str(root), "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    assert str(tmp_path / "r" / "report.html") in result.output
    assert (tmp_path / "r" / "report.md").is_file()
    result = CliRunner().invoke(app, [str(tmp_path / "nope")])
    assert isinstance(result.exception, ConfigError)
    assert result.exception.field == "study_dir"


def test_empty_results_note_every_section(tmp_path: Path) -> None:
    root = make_study(tmp_path / "s", distances=False, vendi=False)
    pd.DataFrame().to_parquet(root / "results.parquet")
    paths = build_report(root)
    md = paths["markdown"].read_text()
    # every section but the experiment summary and the findings (contrasts with no data)
    assert md.count("> Skipped:") == len(SECTIONS) - 2
    assert "| budget C (images) | — |" in md
