"""The report's sections: names, titles, one-line intros and the :class:`Section` container.

A leaf module (no pandas, matplotlib or torch), so study specs can validate ``report.sections``
and ``divssl --help`` can list commands without loading the report builders.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from divssl.errors import ConfigError, unknown_choice

if TYPE_CHECKING:  # the blocks' modules import pandas and matplotlib
    from divssl.report.figures import FigureBlock
    from divssl.report.tables import TableBlock

SECTIONS = (
    "findings",
    "summary",
    "table1",
    "table2",
    "table5",
    "figure3",
    "figure4",
    "id_ood",
    "distances",
    "vendi",
    "fit",
)
SECTION_TITLES = {
    "findings": "Findings",
    "summary": "Experiment summary",
    "table1": "Diversity at a fixed budget (Table 1-style)",
    "table2": "Pretraining sets x downstream tasks (Table 2-style)",
    "table5": "Label fractions of the linear probe (Table 5-style)",
    "figure3": "Adding data A to the baseline set B (Figure 3-style)",
    "figure4": "Saturation with pretraining diversity (Figure 4-style)",
    "id_ood": "ID vs OOD robustness after fine-tuning",
    "distances": "Distribution distances",
    "vendi": "Accuracy vs measured diversity (Vendi score)",
    "fit": "Data-constrained fit",
}
SECTION_INTROS = {
    "findings": "The declared contrasts, each with its interval and whether it is resolved.",
    "summary": "Every factor the study varies and every parameter it holds fixed.",
    "table1": "Probe scores for each number of unique images N (diversity D = N/C) at a fixed "
    "budget C: does more diversity help when the compute is the same?",
    "table2": "Each pretraining set evaluated on every downstream task.",
    "table5": "Probe scores when only a fraction of the task's labels is used.",
    "figure3": "B ∪ A compositions against B trained with the same compute (C) and with the same "
    "number of epochs (E).",
    "figure4": "Score against diversity on a log axis: does more diversity keep paying off?",
    "id_ood": "Effective robustness: OOD score above the trend of models trained from scratch.",
    "distances": "FID / KID / VisualDNA between pools, and their rank correlation with scores.",
    "vendi": "Score against the number of unique images N and against the pretraining set's "
    "measured diversity (Vendi score: effective number of distinct images): is N the right axis?",
    "fit": "Accuracy as a function of effective images C_eff(N, C) with repetition decay R* "
    "(Muennighoff et al. 2023): how many unique images a budget needs.",
}
SKIP_REASONS = {
    "findings": "the study declares no report.contrasts",
    "table1": "no compute-normalized linear-probe or kNN results on an ID split of a plain pool",
    "table2": "needs probe results on at least two downstream tasks or splits",
    "table5": "needs linear-probe results at two or more label fractions",
    "distances": "no distances.json or distances.csv in the study folder",
    "vendi": "no vendi.csv in the study folder (declare a vendi: block in the study)",
    "fit": "no family of runs whose grid identifies the data-constrained fit",
}


@dataclass
class Section:
    """One report section.

    Attributes:
        key: section name (one of :data:`SECTIONS`), also the HTML anchor.
        title: heading.
        intro: one-line description.
        blocks: tables and figures in order.
        notes: one-line notes on parts without data (the whole section when ``blocks`` is empty).
    """

    key: str
    title: str
    intro: str
    blocks: list[TableBlock | FigureBlock] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def section_names(spec: dict[str, Any]) -> list[str]:
    """Sections to build: the spec's ``report.sections`` (validated) or all of them.

    Raises:
        ConfigError: an unknown section name (the field is ``report.sections[i]``).
    """
    report = spec.get("report") or {}
    names = report.get("sections") if isinstance(report, dict) else None
    if names is None:
        return list(SECTIONS)
    if not isinstance(names, list):
        raise ConfigError("report.sections", "must be a list of section names", SECTIONS)
    for i, name in enumerate(names):
        if name not in SECTIONS:
            raise unknown_choice(f"report.sections[{i}]", str(name), SECTIONS)
    return list(dict.fromkeys(names))
