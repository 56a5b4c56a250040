"""`docproc run` refuses what cannot work before any work is done."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from docproc.cli import EXIT_USAGE, app
from docproc.models import RunReport
from tests.documents import text_pdf


@pytest.mark.parametrize("out", [".", "./", "results/../"])
def test_out_equal_to_the_source_is_refused_before_any_work(tmp_path: Path, out: str) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "letter.txt").write_text("Dear Ms. Rivera, thank you.", encoding="utf-8")
    (inbox / "results").mkdir()

    result = CliRunner().invoke(app, ["run", str(inbox), "--out", str(inbox / out)])

    assert result.exit_code == EXIT_USAGE, result.output
    # Compared without line breaks: the console wraps the message at its width.
    assert "is the source folder itself" in " ".join(result.output.split())
    assert sorted(p.name for p in inbox.rglob("*")) == ["letter.txt", "results"]  # nothing written


@pytest.mark.parametrize("folder", ["quarantine", "pdf", "markdown", "index"])
def test_source_inside_the_outputs_is_refused(tmp_path: Path, folder: str) -> None:
    inbox = tmp_path / "out" / folder / "x"
    inbox.mkdir(parents=True)
    result = CliRunner().invoke(app, ["run", str(inbox), "--out", str(tmp_path / "out")])
    assert result.exit_code == EXIT_USAGE, result.output
    assert "inside the output folders" in " ".join(result.output.split())


def test_out_inside_the_source_is_left_out_of_the_inputs(tmp_path: Path) -> None:
    """Two runs with --out a sub-folder of the source: every output (result, text, searchable
    PDF, Markdown, report, outcomes) stays out of the second run's inputs."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "letter.txt").write_text("Dear Ms. Rivera, thank you for the invoice.", encoding="utf-8")
    text_pdf(inbox / "invoice.pdf", ["Invoice INV-7 of ACME Corp.", "Total due: 120.00 EUR"])
    out = inbox / "out"
    # The engine is never used (text and text-layer pages): tesseract is the one cheap to start.
    args = ["run", str(inbox), "--out", str(out), "--workers", "1", "--engine", "tesseract"]

    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    for folder in ("results", "text", "pdf", "markdown", "runs"):
        assert list((out / folder).rglob("*.*")), f"the first run wrote nothing under {folder}/"
    second = CliRunner().invoke(app, args)

    assert second.exit_code == 0, second.output
    reports = [RunReport.model_validate_json(p.read_text()) for p in out.glob("runs/*/report.json")]
    assert sorted(r.counts.get("skipped", 0) for r in reports) == [0, 2], [r.counts for r in reports]
    assert all(sum(r.counts.values()) == 2 for r in reports), [r.counts for r in reports]
    assert len(list((out / "results").glob("*.json"))) == 2
