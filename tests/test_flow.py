"""End to end on the embedded default: the CLI runs the Prefect flow on a real LocalCluster
with the real models, against a folder of real and deliberately bad documents."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from uuid import UUID

import jsonschema
import pytest
from PIL import Image
from typer.testing import CliRunner, Result

from docproc.cli import EXIT_QUARANTINE, EXIT_USAGE, app
from docproc.models import DocumentResult, RunReport
from docproc.schema import document_result_schema
from docproc.settings import Settings
from docproc.storage import LocalStorage
from flows.deployments import RunStatus, read_status
from flows.local_api import prefect_api
from tests.documents import huge_png, pages_pdf, rotated, text_pdf
from tests.e2e_checks import check_results

GOOD = ["phototest.tif", "rotated-90.png", "memo.pdf", "letter.txt", "report.pdf"]
BAD = {
    "invalid.pdf": "corrupt",
    "locked.pdf": "encrypted",
    "bomb.png": "too_large",
    "animation.gif": "unsupported_type",
}
LETTER = """Dear Ms. Rivera,

Your payment of $1,250.00 was received on 2024-03-05. Please quote reference INV-7781
in any reply, or write to accounts@example.org.

Sincerely,
Tom Becker
"""


@pytest.fixture(scope="module")
def inbox(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("inbox")
    shutil.copy(corpus / "phototest.tif", folder / "phototest.tif")
    rotated(corpus / "phototest.tif", folder / "rotated-90.png", 90)
    text_pdf(folder / "memo.pdf", ["Quarterly report", "Revenue grew by 12 percent in Q3 2024."])
    (folder / "letter.txt").write_text(LETTER, encoding="utf-8")
    # 3 pages: 7 pages over 2 workers go in batches of at most 2 pages, so this one is split.
    pages_pdf(folder / "report.pdf", [f"Annual report 2023, section {n}." for n in (1, 2, 3)])
    shutil.copy(corpus / "invalid.pdf", folder / "invalid.pdf")
    text_pdf(folder / "locked.pdf", ["Salary statement"], password="hunter2")
    huge_png(folder / "bomb.png")
    Image.new("P", (8, 8)).save(folder / "animation.gif")
    return folder


@pytest.fixture(scope="module")
def run_status(inbox: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Result, RunStatus]:
    """The first run, and its status as `docproc status` reads it from the run's artifacts."""
    out = tmp_path_factory.mktemp("out")
    # One embedded API for the CLI (which reuses a configured one) and for reading the artifacts.
    with prefect_api():
        result = CliRunner().invoke(app, ["run", str(inbox), "--out", str(out), "--workers", "2"])
        [status] = read_status(UUID(_report(out).run_id)) if result.exit_code == 0 else [None]
    return out, result, status


@pytest.fixture(scope="module")
def first_run(run_status: tuple[Path, Result, RunStatus]) -> tuple[Path, Result]:
    return run_status[0], run_status[1]


def test_run_progress_and_report_are_published_as_artifacts(
    run_status: tuple[Path, Result, RunStatus],
) -> None:
    out, _, status = run_status
    assert status.state == "Completed"
    assert (status.done, status.total, status.quarantined) == (9, 9, 4)
    assert status.report == f"{out.resolve()}/runs/{_report(out).run_id}/report.json"


def _report(out: Path) -> RunReport:
    [path] = out.glob("runs/*/report.json")
    return RunReport.model_validate_json(path.read_text())


def test_run_exits_0_with_quarantined_documents(first_run: tuple[Path, Result]) -> None:
    _, result = first_run
    assert result.exit_code == 0, result.output
    assert "5 processed, 0 skipped, 4 quarantined" in result.output


def test_every_document_has_one_valid_result_or_one_quarantine(first_run: tuple[Path, Result]) -> None:
    out, _ = first_run
    results = check_results(LocalStorage(out), GOOD, quarantined=BAD)
    schema = document_result_schema()
    for source, result in results.items():
        jsonschema.validate(json.loads(result.model_dump_json()), schema)
        assert (out / "text" / f"{result.id}-{Settings().fingerprint()}.txt").read_text() == result.text, (
            source
        )


def test_quarantine_holds_the_original_and_the_reason(first_run: tuple[Path, Result], inbox: Path) -> None:
    out, _ = first_run
    reasons = {}
    for error in out.glob("quarantine/*/error.json"):
        record = json.loads(error.read_text())
        reasons[record["source"]] = record["reason"]
        # Every one is copied, the bomb too (small on disk); only a document over
        # max_document_bytes is refused before download and left in the source.
        [original] = error.parent.glob("original*")
        assert original.read_bytes() == (inbox / record["source"]).read_bytes()
    assert reasons == BAD


def _result(out: Path, source: str) -> DocumentResult:
    for path in out.glob("results/*.json"):
        result = DocumentResult.model_validate_json(path.read_text())
        if result.source == source:
            return result
    raise AssertionError(f"no result for {source}")


def test_born_digital_pdf_is_read_from_its_text_layer_without_ocr(first_run: tuple[Path, Result]) -> None:
    result = _result(first_run[0], "memo.pdf")
    [page] = result.pages
    assert page.text_source == "text_layer"
    assert page.engine is None
    assert "ocr" not in result.timings
    assert "Revenue grew by 12 percent in Q3 2024." in result.text


def test_rotated_scan_is_turned_upright_and_read(first_run: tuple[Path, Result], corpus: Path) -> None:
    result = _result(first_run[0], "rotated-90.png")
    [page] = result.pages
    assert page.rotation == 90  # the scan lies rotated 90 degrees counter-clockwise
    expected = set((corpus / "phototest.txt").read_text().split())
    found = set(result.text.split())
    assert len(expected & found) / len(expected) > 0.9


def test_document_split_across_batches_comes_out_whole(first_run: tuple[Path, Result]) -> None:
    out = first_run[0]
    result = _result(out, "report.pdf")
    assert [p.number for p in result.pages] == [1, 2, 3]
    assert [p.text.strip() for p in result.pages] == [f"Annual report 2023, section {n}." for n in (1, 2, 3)]
    assert not list(out.glob("parts/**/*.json"))  # the parts are gone once the document is done


def test_entities_and_type_of_the_letter(first_run: tuple[Path, Result]) -> None:
    result = _result(first_run[0], "letter.txt")
    values = {(e.type, json.dumps(e.value, sort_keys=True)) for e in result.entities if e.source == "pattern"}
    assert ("date", '"2024-03-05"') in values
    assert ("money", '{"amount": "1250.00", "currency": "USD"}') in values
    assert ("email", '"accounts@example.org"') in values
    assert result.document_type.label == "letter"
    assert result.language.code == "en"


def test_report_counts_and_lists_quarantine_reasons(first_run: tuple[Path, Result]) -> None:
    report = _report(first_run[0])
    assert report.counts == {"processed": 5, "skipped": 0, "quarantined": 4}
    assert {o.source: o.reason for o in report.quarantined} == BAD
    assert report.pages == 7
    assert report.ocr_pages == 2
    assert report.pages_per_second > 0
    markdown = next(first_run[0].glob("runs/*/report.md")).read_text()
    assert "| `bomb.png` | too_large |" in markdown


def test_rerun_skips_finished_documents_and_can_fail_on_quarantine(
    first_run: tuple[Path, Result], inbox: Path
) -> None:
    out, _ = first_run
    before = sorted(p.name for p in out.glob("results/*.json"))
    result = CliRunner().invoke(app, ["run", str(inbox), "--out", str(out), "--fail-on-quarantine"])
    assert result.exit_code == EXIT_QUARANTINE, result.output
    assert "0 processed, 5 skipped, 4 quarantined" in result.output
    assert sorted(p.name for p in out.glob("results/*.json")) == before


def test_bad_arguments_exit_2(tmp_path: Path) -> None:
    missing = CliRunner().invoke(app, ["run", str(tmp_path / "nope"), "--out", str(tmp_path / "out")])
    assert missing.exit_code == EXIT_USAGE
    assert "does not exist" in missing.output
    bad_engine = CliRunner().invoke(app, ["run", str(tmp_path), "--out", str(tmp_path), "--engine", "magic"])
    assert bad_engine.exit_code == EXIT_USAGE
