"""``divssl report STUDY_DIR``: HTML and Markdown reports computed only from a study's files.

:func:`build_report` reads ``results.parquet`` (or ``.csv``), ``study.yaml``, ``distances.json``
(or ``.csv``), ``vendi.csv`` (measured diversity, when the study declares ``vendi:``) and every
``runs/*/summary.json`` / ``config.yaml``, builds the sections named in the spec's
``report.sections`` (all of :data:`SECTIONS` by default) and writes into ``out_dir`` (default
``STUDY_DIR/report``): ``report.html`` (one self-contained page, figures embedded),
``report.md`` (referencing the PNGs), ``figures/*.svg`` + ``figures/*.png`` (200 dpi) and
``tables/*.csv`` (the numbers behind every table). A section without data is replaced by a
one-line note; nothing in a report is typed by hand.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from divssl.report.sections import (
    SECTION_INTROS,
    SECTION_TITLES,
    SECTIONS,
    SKIP_REASONS,
    Section,
    section_names,
)

if TYPE_CHECKING:  # the heavy modules (pandas, matplotlib, torch) load only when a report is built
    from divssl.report.tables import StudyData


def build_sections(data: StudyData, fig_dir: Path, names: list[str]) -> list[Section]:
    """Build each named section from a loaded study (figures are written to ``fig_dir``)."""
    # deferred: `divssl --help` and study-spec validation import this package for SECTIONS only;
    # the section builders pull in pandas, matplotlib and torch
    from divssl.report import figures, tables

    out = []
    for name in names:
        sec = Section(name, SECTION_TITLES[name], SECTION_INTROS[name])
        if name == "findings":
            from divssl.report.findings import findings

            sec.blocks = list(findings(data))
        elif name == "summary":
            sec.blocks = list(tables.experiment_summary(data))
        elif name in ("table1", "table2", "table5"):
            sec.blocks = getattr(tables, name)(data)
            if name == "table1":  # reference rows: pixels and a random-init encoder
                sec.blocks += tables.baseline_table(data)
        elif name == "vendi":
            panel = figures.vendi_figure(data, fig_dir)
            sec.blocks, sec.notes = panel.blocks, panel.notes
        elif name == "fit":
            from divssl.report.fit_section import fit_section

            panel = fit_section(data, fig_dir)
            sec.blocks, sec.notes = panel.blocks, panel.notes
        elif name == "distances":
            sec.blocks = list(tables.distance_tables(data))
            if sec.blocks:
                panel = figures.distance_figure(data, fig_dir)
                sec.blocks += panel.blocks
                sec.notes += panel.notes
        else:
            builder = {
                "figure3": figures.figure3,
                "figure4": figures.figure4,
                "id_ood": figures.id_ood,
            }[name]
            panel = builder(data, fig_dir)
            sec.blocks, sec.notes = panel.blocks, panel.notes
        if not sec.blocks and not sec.notes:
            sec.notes = [SKIP_REASONS.get(name, "no data for this section")]
        out.append(sec)
    return out


def build_report(study_dir: str | Path, out_dir: str | Path | None = None) -> dict[str, Path]:
    """Build the HTML and Markdown report of a study folder.

    Args:
        study_dir: folder holding ``results.parquet`` (or ``.csv``), ``study.yaml``, ...
        out_dir: output folder (default ``STUDY_DIR/report``).

    Returns:
        ``{"html": report.html, "markdown": report.md, "dir": out_dir}`` plus one entry per
        written figure and table file, keyed by its path relative to ``out_dir``.

    Raises:
        ConfigError: no study folder or results, invalid results, unknown section names (checked
            before anything is written).
    """
    # deferred: the renderers pull in pandas and matplotlib, which `divssl --help` (it imports
    # this package) must not load
    from divssl.io import atomic_write_text
    from divssl.report.figures import FigureBlock
    from divssl.report.html import render_html
    from divssl.report.markdown import render_markdown
    from divssl.report.tables import load_study, report_header

    data = load_study(study_dir)
    names = section_names(data.spec)
    out = Path(out_dir) if out_dir is not None else data.study_dir / "report"
    fig_dir, table_dir = out / "figures", out / "tables"
    sections = build_sections(data, fig_dir, names)
    header = report_header(data)
    title = _title(data)
    paths: dict[str, Path] = {}
    for sec in sections:
        for block in sec.blocks:
            if isinstance(block, FigureBlock):
                paths[f"figures/{block.svg.name}"] = block.svg
                paths[f"figures/{block.png.name}"] = block.png
            else:
                csv = table_dir / f"{block.key}.csv"
                atomic_write_text(csv, block.numbers.to_csv(index=False))
                paths[f"tables/{csv.name}"] = csv
    html_path, md_path = out / "report.html", out / "report.md"
    atomic_write_text(html_path, render_html(title, header, sections, out))
    atomic_write_text(md_path, render_markdown(title, header, sections, out))
    return {"html": html_path, "markdown": md_path, "dir": out, **paths}


def _title(data: StudyData) -> str:
    report = data.spec.get("report") or {}
    custom = report.get("title") if isinstance(report, dict) else None
    return str(custom or f"divssl study report: {data.spec.get('name') or data.study_dir.name}")


__all__ = [
    "SECTIONS",
    "SECTION_INTROS",
    "SECTION_TITLES",
    "SKIP_REASONS",
    "Section",
    "build_report",
    "build_sections",
    "section_names",
]
