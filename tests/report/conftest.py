"""Fixtures of the report tests (the synthetic study lives in ``report_synth``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from report_synth import make_study


@pytest.fixture(scope="session")
def full_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Path]]:
    """The synthetic study and its built report (built once per session)."""
    from divssl.report import build_report

    root = make_study(tmp_path_factory.mktemp("report") / "study")
    return root, build_report(root)
