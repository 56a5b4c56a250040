"""One document never sinks a run: real faults on a real LocalCluster, through the CLI.

The faults come from inside the OCR engine (a plugin, ``tests.fault_engines``), on one chosen
document at every attempt: a SIGKILL of the worker process (what a native crash or an OOM kill
does), a page that never returns, storage that stays down. Nothing is mocked.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner, Result

from docproc.cli import EXIT_INFRA, app
from docproc.models import QuarantineRecord, RunReport
from docproc.storage import LocalStorage
from tests.documents import pages_pdf, text_pdf
from tests.e2e_checks import check_results
from tests.fault_engines import HANG_SIZE, KILL_SIZE, STORAGE_DOWN_SIZE

FAULT_ENGINE = "tests.fault_engines:FaultEngine"


def _page(path: Path, size: tuple[int, int]) -> Path:
    height, width = size
    Image.new("L", (width, height), 255).save(path)
    return path


def _inbox(folder: Path, fault: str, size: tuple[int, int]) -> list[str]:
    """A bad page among good documents of each kind; returns the good ones."""
    folder.mkdir()
    _page(folder / f"{fault}.png", size)
    _page(folder / "scan-a.png", (800, 700))
    _page(folder / "scan-b.png", (850, 700))
    text_pdf(folder / "memo.pdf", ["Quarterly report", "Revenue grew by 12 percent in Q3 2024."])
    pages_pdf(folder / "long.pdf", [f"Section {n} of the long report." for n in range(1, 6)])
    (folder / "letter.txt").write_text("Dear Ms. Rivera,\n\nthank you for your letter.\n", encoding="utf-8")
    return ["scan-a.png", "scan-b.png", "memo.pdf", "long.pdf", "letter.txt"]


@pytest.fixture
def fault_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.setenv("DOCPROC_ENGINE", FAULT_ENGINE)
    monkeypatch.setenv("DOCPROC_DETECT_ORIENTATION", "false")
    monkeypatch.setenv("DOCPROC_DESKEW", "false")
    return monkeypatch


def _run(inbox: Path, out: Path, *args: str) -> Result:
    return CliRunner().invoke(
        app, ["run", str(inbox), "--out", str(out), "--workers", "2", "--batch-size", "3", *args]
    )


def _report(out: Path) -> RunReport:
    [path] = out.glob("runs/*/report.json")
    return RunReport.model_validate_json(path.read_text())


def _record(out: Path, source: str) -> QuarantineRecord:
    for path in out.glob("quarantine/*/error.json"):
        record = QuarantineRecord.model_validate_json(path.read_text())
        if record.source == source:
            return record
    raise AssertionError(f"{source} is not quarantined")


@pytest.mark.slow
def test_document_that_kills_its_worker_is_quarantined_and_the_rest_processed(
    tmp_path: Path, fault_env: pytest.MonkeyPatch
) -> None:
    inbox, out = tmp_path / "inbox", tmp_path / "out"
    good = _inbox(inbox, "crash", KILL_SIZE)

    result = _run(inbox, out)

    assert result.exit_code == 0, result.output
    assert "5 processed, 0 skipped, 1 quarantined" in result.output, result.output
    check_results(LocalStorage(out), good, quarantined={"crash.png": "worker_crashed"})
    record = _record(out, "crash.png")
    # Tried, retried once, then quarantined: one piece of evidence per worker it ended.
    assert [e.attempt for e in record.evidence] == [1, 2], record
    assert {e.kind for e in record.evidence} == {"worker_crashed"}, record
    assert all(e.worker for e in record.evidence), record
    assert (next(out.glob("quarantine/*/original.png"))).read_bytes() == (inbox / "crash.png").read_bytes()
    assert not list(out.glob("attempts/*"))
    assert not list(out.glob("parts/**/*.json"))

    # The quarantine is remembered: a re-run neither crashes again nor processes anything.
    again = _run(inbox, out)
    assert again.exit_code == 0, again.output
    assert "0 processed, 5 skipped, 1 quarantined" in again.output, again.output


@pytest.mark.slow
def test_document_that_hangs_is_ended_and_quarantined_as_timeout(
    tmp_path: Path, fault_env: pytest.MonkeyPatch
) -> None:
    inbox, out = tmp_path / "inbox", tmp_path / "out"
    good = _inbox(inbox, "hang", HANG_SIZE)
    # Generous for the good documents on a loaded machine (their first attempt also waits for
    # the worker's spaCy model), small enough that the test does not wait long on the bad one.
    fault_env.setenv("DOCPROC_DOCUMENT_TIMEOUT_SECONDS", "45")
    fault_env.setenv("DOCPROC_PAGE_TIMEOUT_SECONDS", "0")

    result = _run(inbox, out)

    assert result.exit_code == 0, result.output
    assert "5 processed, 0 skipped, 1 quarantined" in result.output, result.output
    check_results(LocalStorage(out), good, quarantined={"hang.png": "timeout"})
    record = _record(out, "hang.png")
    assert [e.kind for e in record.evidence] == ["timeout", "timeout"], record
    assert "limit 45.0 s" in record.evidence[0].detail


@pytest.mark.slow
def test_run_that_fails_still_writes_its_report(tmp_path: Path, fault_env: pytest.MonkeyPatch) -> None:
    inbox, out = tmp_path / "inbox", tmp_path / "out"
    _inbox(inbox, "storage-down", STORAGE_DOWN_SIZE)
    fault_env.setenv("DOCPROC_RETRIES", "1")
    fault_env.setenv("DOCPROC_RETRY_DELAY_SECONDS", "0.1")

    result = _run(inbox, out)

    assert result.exit_code == EXIT_INFRA, result.output
    assert "run failed: storage answered 503" in result.output, result.output
    report = _report(out)
    assert report.error is not None
    assert "StorageUnavailableError" in report.error
    assert report.counts["quarantined"] == 0
    markdown = next(out.glob("runs/*/report.md")).read_text()
    assert "the run failed" in markdown
    outcomes = [
        json.loads(line) for f in out.glob("runs/*/outcomes/*.jsonl") for line in f.read_text().splitlines()
    ]
    assert len(outcomes) == sum(report.counts.values())
