"""`docproc run` refuses what cannot work before any work is done."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from docproc.cli import EXIT_USAGE, app


@pytest.mark.parametrize("out", [".", "./", "results/../"])
def test_out_equal_to_the_source_is_refused_before_any_work(tmp_path: Path, out: str) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "letter.txt").write_text("Dear Ms. Rivera, thank you.", encoding="utf-8")
    (inbox / "results").mkdir()

    result = CliRunner().invoke(app, ["run", str(inbox), "--out", str(inbox / out)])

    assert result.exit_code == EXIT_USAGE, result.output
    assert "is the source folder itself" in result.output
    assert sorted(p.name for p in inbox.rglob("*")) == ["letter.txt", "results"]  # nothing written


def test_source_inside_the_outputs_is_refused(tmp_path: Path) -> None:
    inbox = tmp_path / "out" / "quarantine" / "x"
    inbox.mkdir(parents=True)
    result = CliRunner().invoke(app, ["run", str(inbox), "--out", str(tmp_path / "out")])
    assert result.exit_code == EXIT_USAGE, result.output
    assert "inside the output folders" in result.output
