"""Split documents under re-runs, changed batch sizes and concurrent runs (real LocalCluster).

A document longer than a batch is read in slices whose boundaries depend on the run (its
batch size, its other documents). Parts are kept per page, so the runs' slices never
conflict, and they are gone once the document is done.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from docproc.cli import EXIT_INFRA, app
from docproc.models import DocumentResult
from docproc.storage import LocalStorage
from tests.documents import pages_pdf, text_pdf
from tests.e2e_checks import check_results

PAGES = [f"Chapter {n}: the {n}th page of the multipage report." for n in range(1, 7)]
# The OCR engine is never used here (text-layer pages): tesseract is the one cheap to start.
ENGINE = "tesseract"


def _result(out: Path, source: str) -> DocumentResult:
    found = [
        r
        for r in (DocumentResult.model_validate_json(p.read_text()) for p in out.glob("results/*.json"))
        if r.source == source
    ]
    assert len(found) == 1, [r.source for r in found]
    return found[0]


def _part_files(out: Path) -> list[Path]:
    return sorted(p for p in out.glob("parts/**/*") if p.is_file())


def _run(inbox: Path, out: Path, batch_size: int) -> list[str]:
    return [
        "run", str(inbox), "--out", str(out), "--workers", "2", "--batch-size", str(batch_size),
        "--engine", ENGINE,
    ]  # fmt: skip


def test_interrupted_run_then_rerun_with_another_batch_size(tmp_path: Path) -> None:
    inbox, out = tmp_path / "inbox", tmp_path / "out"
    inbox.mkdir()
    pages_pdf(inbox / "multipage.pdf", PAGES)
    # Interrupt the first run after its slices are read: the result cannot be written, since
    # a file stands where the results folder goes, so the run fails with its parts in place.
    out.mkdir()
    (out / "results").write_text("not a folder")
    first = CliRunner().invoke(app, _run(inbox, out, 2))
    assert first.exit_code == EXIT_INFRA, first.output
    assert list(out.glob("parts/**/*.json")), "the interrupted run left no parts"

    (out / "results").unlink()
    second = CliRunner().invoke(app, _run(inbox, out, 3))

    assert second.exit_code == 0, second.output
    assert "1 processed, 0 skipped, 0 quarantined" in second.output, second.output
    result = _result(out, "multipage.pdf")
    assert [p.number for p in result.pages] == [1, 2, 3, 4, 5, 6]
    assert [p.text.strip() for p in result.pages] == PAGES
    assert _part_files(out) == []


@pytest.mark.slow
def test_two_concurrent_runs_over_the_same_inbox(tmp_path: Path) -> None:
    inbox, out = tmp_path / "inbox", tmp_path / "out"
    inbox.mkdir()
    docs = []
    for i in range(4):
        pages_pdf(inbox / f"report-{i}.pdf", [f"Report {i}, page {n}." for n in range(1, 6 + i)])
        docs.append(f"report-{i}.pdf")
    text_pdf(inbox / "memo.pdf", ["A one page memo."])
    docs.append("memo.pdf")

    docproc = Path(sys.executable).parent / "docproc"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    runs = [
        subprocess.Popen(
            [str(docproc), *_run(inbox, out, size)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env
        )
        for size in (2, 3)
    ]
    outputs = []
    try:
        for run in runs:
            output, _ = run.communicate(timeout=900)
            outputs.append(output.decode(errors="replace"))
    finally:
        for run in runs:
            if run.poll() is None:
                run.kill()
    for run, output in zip(runs, outputs, strict=True):
        assert run.returncode == 0, output[-3000:]
    check_results(LocalStorage(out), docs)
    for i in range(4):
        result = _result(out, f"report-{i}.pdf")
        assert [p.text.strip() for p in result.pages] == [f"Report {i}, page {n}." for n in range(1, 6 + i)]
    assert _part_files(out) == []
