"""Storage-level units of work on a local folder: planning, idempotency, quarantine."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from docproc import jobs
from docproc.errors import OcrFailedError
from docproc.models import DocumentOutcome, DocumentResult, PlannedDocument, SliceOutcome
from docproc.ocr import clear_engines
from docproc.settings import Settings
from docproc.storage import LocalStorage, ObjectInfo
from tests.documents import pages_pdf


def _doc(source: str, pages: int) -> PlannedDocument:
    return PlannedDocument(
        source=source, id=source * 8, media_type="application/pdf", pages=pages, size_bytes=1
    )


def test_batches_fill_pages_in_order_splitting_long_documents() -> None:
    docs = [_doc("a", 3), _doc("b", 4), _doc("c", 10), _doc("d", 1), _doc("e", 0)]
    batches = jobs.plan_batches(docs, 8)
    assert [[(s.doc.source, s.first, s.last) for s in b] for b in batches] == [
        [("a", 1, 3), ("b", 1, 4), ("c", 1, 1)],
        [("c", 2, 9)],
        [("c", 10, 10), ("d", 1, 1), ("e", 1, 1)],
    ]
    assert [s.whole for b in batches for s in b] == [True, True, False, False, False, True, True]


def test_batches_shrink_towards_the_end_of_a_run() -> None:
    docs = [_doc(f"d{i:02d}", 1) for i in range(25)]
    sizes = [len(b) for b in jobs.plan_batches(docs, 8, total_pages=25, threads=2)]
    # A quarter of the pages left each time (2 threads): no full batch of 8 ends the run.
    assert sizes == [7, 5, 4, 3, 2, 1, 1, 1, 1]
    many = [_doc(f"m{i:04d}", 3) for i in range(400)]
    batches = jobs.plan_batches(many, 8, total_pages=1200, threads=2)
    pages = [sum(s.last - s.first + 1 for s in b) for b in batches]
    assert sum(pages) == 1200
    assert pages[: len(pages) - 12] == [8] * (len(pages) - 12)  # full batches until the tail
    assert pages[-1] == 1
    # Every page of every document once, in order.
    assert [(s.doc.source, n) for b in batches for s in b for n in range(s.first, s.last + 1)] == [
        (d.source, n) for d in many for n in range(1, 4)
    ]


def test_result_key_changes_with_settings_that_change_results() -> None:
    doc_id = "ab" * 32
    base = jobs.result_key(doc_id, Settings())
    assert base.startswith(f"results/{doc_id}-")
    assert jobs.result_key(doc_id, Settings(workers=7)) == base  # execution settings don't count
    assert jobs.result_key(doc_id, Settings(dpi=300)) != base
    assert jobs.result_key(doc_id, Settings(engine="tesseract")) != base


@pytest.fixture
def stores(tmp_path: Path) -> tuple[LocalStorage, LocalStorage]:
    (tmp_path / "in").mkdir()
    return LocalStorage(tmp_path / "in"), LocalStorage(tmp_path / "out")


def test_text_document_is_processed_once_then_skipped(stores: tuple[LocalStorage, LocalStorage]) -> None:
    src, dst = stores
    src.write_bytes("notes/memo 1 ü.txt", b"Meeting moved to 2024-06-01. Call +1 617 555 0142.")
    settings = Settings()
    [obj] = list(src.iter_objects())
    planned = jobs.inspect_object(src, dst, obj, settings)
    assert isinstance(planned, PlannedDocument)
    outcome = jobs.process_document(src, dst, planned, settings)
    assert outcome.status == "processed"
    assert outcome.result_key is not None
    assert dst.exists(outcome.result_key)

    again = jobs.inspect_object(src, dst, obj, settings)
    assert isinstance(again, DocumentOutcome)
    assert (again.status, again.reason, again.result_key) == ("skipped", "result_exists", outcome.result_key)
    # A retried batch finds the result too and does not process the document again.
    assert jobs.process_document(src, dst, planned, settings).status == "skipped"
    forced = jobs.inspect_object(src, dst, obj, Settings(force=True))
    assert isinstance(forced, PlannedDocument)


def test_oversized_object_is_quarantined_before_download(stores: tuple[LocalStorage, LocalStorage]) -> None:
    src, dst = stores
    src.write_bytes("big.bin", b"x" * 2048)
    outcome = jobs.inspect_object(src, dst, ObjectInfo("big.bin", 2048), Settings(max_document_bytes=1024))
    assert isinstance(outcome, DocumentOutcome)
    assert (outcome.status, outcome.reason, outcome.id) == ("quarantined", "too_large", None)
    [error] = [o.key for o in dst.iter_objects("quarantine")]
    record = json.loads(dst.read_bytes(error))
    assert (record["source"], record["reason"]) == ("big.bin", "too_large")


def test_quarantine_names_are_safe_whatever_the_source_key(stores: tuple[LocalStorage, LocalStorage]) -> None:
    src, dst = stores
    key = "weird/" + "ä" * 100 + " name..pdf"
    src.write_bytes(key, b"%PDF-1.4\n%%EOF")
    [obj] = list(src.iter_objects())
    outcome = jobs.inspect_object(src, dst, obj, Settings())
    assert isinstance(outcome, DocumentOutcome)
    assert outcome.reason == "corrupt"
    keys = sorted(o.key for o in dst.iter_objects())
    assert keys == [f"quarantine/{outcome.id}/error.json", f"quarantine/{outcome.id}/original.pdf"]


@pytest.fixture
def crashing_tesseract(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tesseract_bin: Path
) -> Iterator[Path]:
    """A `tesseract` first on PATH that answers probes with the real one and SIGKILLs itself on
    every page: an engine that crashes on a document, deterministically."""
    real = str(tesseract_bin)
    bin_dir, calls = tmp_path / "bin", tmp_path / "calls"
    bin_dir.mkdir()
    script = bin_dir / "tesseract"
    script.write_text(
        "#!/bin/sh\n"
        'case "$*" in *--version*|*--list-langs*) exec ' + real + ' "$@";; esac\n'
        f"echo page >> {calls}\n"
        "kill -9 $$\n"
    )
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    clear_engines()
    yield calls
    clear_engines()


def test_engine_crashing_twice_quarantines_the_document_only(
    stores: tuple[LocalStorage, LocalStorage], corpus: Path, crashing_tesseract: Path
) -> None:
    src, dst = stores
    src.write_bytes("scan.tif", (corpus / "phototest.tif").read_bytes())
    settings = Settings(engine="tesseract", detect_orientation=False)
    [obj] = list(src.iter_objects())
    planned = jobs.inspect_object(src, dst, obj, settings)
    assert isinstance(planned, PlannedDocument)
    outcome = jobs.process_document(src, dst, planned, settings)
    assert (outcome.status, outcome.reason) == ("quarantined", "ocr_failed")
    assert crashing_tesseract.read_text().count("page") == 2  # tried, retried once, then quarantined


def test_copies_of_one_content_are_processed_once() -> None:
    a, b, c = _doc("b.pdf", 1), _doc("c.pdf", 2), _doc("a.pdf", 1)
    copy = PlannedDocument(source="z/copy of b.pdf", id=a.id, media_type=a.media_type, pages=1, size_bytes=1)
    unique, skipped = jobs.split_duplicates([copy, a, b, c], Settings())
    assert [d.source for d in unique] == ["a.pdf", "b.pdf", "c.pdf"]
    [dup] = skipped
    assert (dup.source, dup.status, dup.reason) == ("z/copy of b.pdf", "skipped", "duplicate")
    assert dup.result_key == jobs.result_key(a.id, Settings())


def test_document_split_across_batches_is_joined_in_page_order(
    stores: tuple[LocalStorage, LocalStorage],
) -> None:
    src, dst = stores
    pages_pdf(src.root / "report.pdf", [f"Chapter {n} of the annual report for 2023." for n in (1, 2, 3)])
    settings = Settings()
    [obj] = list(src.iter_objects())
    doc = jobs.inspect_object(src, dst, obj, settings)
    assert isinstance(doc, PlannedDocument)
    slices = [s for batch in jobs.plan_batches([doc], 2) for s in batch]
    assert [(s.first, s.last) for s in slices] == [(1, 2), (3, 3)]
    for piece in reversed(slices):  # batches finish in any order
        assert isinstance(jobs.process_slice(src, dst, piece, settings), SliceOutcome)
    assert len(list(dst.iter_objects("parts"))) == 3  # one part per page

    outcome = jobs.finish_document(src, dst, doc, settings)
    assert (outcome.status, outcome.pages) == ("processed", 3)
    assert outcome.result_key is not None
    result = DocumentResult.model_validate_json(dst.read_bytes(outcome.result_key))
    assert [p.number for p in result.pages] == [1, 2, 3]
    assert result.text.split("\f") == [f"Chapter {n} of the annual report for 2023." for n in (1, 2, 3)]
    assert list(dst.iter_objects("parts")) == []
    assert jobs.finish_document(src, dst, doc, settings).status == "skipped"


@pytest.mark.parametrize("size", [(5000, 1), (1, 1), (2, 4000)])
def test_page_too_thin_for_text_is_processed_as_empty(
    stores: tuple[LocalStorage, LocalStorage], size: tuple[int, int]
) -> None:
    # easyocr's own resizing fails on a 2600 x 1 page: it must not reach the engine.
    src, dst = stores
    Image.new("L", size, 0).save(src.root / "sliver.png")
    settings = Settings()
    [obj] = list(src.iter_objects())
    doc = jobs.inspect_object(src, dst, obj, settings)
    assert isinstance(doc, PlannedDocument)
    outcome = jobs.process_document(src, dst, doc, settings)
    assert (outcome.status, outcome.quality) == ("processed", "failed")


def _six_pages(src: LocalStorage, dst: LocalStorage) -> PlannedDocument:
    pages_pdf(src.root / "multipage.pdf", [f"Page {n} of the multipage document." for n in range(1, 7)])
    [obj] = list(src.iter_objects())
    doc = jobs.inspect_object(src, dst, obj, Settings())
    assert isinstance(doc, PlannedDocument)
    return doc


def test_parts_of_runs_with_other_batch_sizes_join_into_one_document(
    stores: tuple[LocalStorage, LocalStorage],
) -> None:
    src, dst = stores
    doc = _six_pages(src, dst)
    settings = Settings()
    # An interrupted run with 2-page batches read its first slice, a re-run cuts 3-page ones.
    [first, *_] = [s for batch in jobs.plan_batches([doc], 2) for s in batch]
    jobs.process_slice(src, dst, first, settings)
    for piece in (s for batch in jobs.plan_batches([doc], 3) for s in batch):
        assert isinstance(jobs.process_slice(src, dst, piece, settings), SliceOutcome)
    outcome = jobs.finish_document(src, dst, doc, settings)
    assert (outcome.status, outcome.pages) == ("processed", 6)
    assert outcome.result_key is not None
    result = DocumentResult.model_validate_json(dst.read_bytes(outcome.result_key))
    assert [p.number for p in result.pages] == [1, 2, 3, 4, 5, 6]
    assert list(dst.iter_objects("parts")) == []


def test_finishing_reads_again_the_pages_a_concurrent_run_cleaned(
    stores: tuple[LocalStorage, LocalStorage],
) -> None:
    src, dst = stores
    doc = _six_pages(src, dst)
    settings = Settings()
    for piece in (s for batch in jobs.plan_batches([doc], 4) for s in batch):
        jobs.process_slice(src, dst, piece, settings)
    dst.delete(jobs.part_key(doc.id, settings, 2))
    dst.write_bytes(jobs.part_key(doc.id, settings, 5), b'{"torn": ')
    outcome = jobs.finish_document(src, dst, doc, settings)
    assert (outcome.status, outcome.pages) == ("processed", 6)
    assert list(dst.iter_objects("parts")) == []


def test_parts_left_beside_a_finished_result_are_cleaned(stores: tuple[LocalStorage, LocalStorage]) -> None:
    src, dst = stores
    doc = _six_pages(src, dst)
    settings = Settings()
    assert jobs.process_document(src, dst, doc, settings).status == "processed"
    [piece, *_] = [s for batch in jobs.plan_batches([doc], 2) for s in batch]
    dst.write_bytes(jobs.part_key(doc.id, settings, 1), b"{}")  # left by a run that died
    assert jobs.process_slice(src, dst, piece, settings).status == "skipped"
    assert jobs.finish_document(src, dst, doc, settings).status == "skipped"
    assert list(dst.iter_objects("parts")) == []


def test_source_deleted_after_listing_is_skipped_as_source_missing(
    stores: tuple[LocalStorage, LocalStorage],
) -> None:
    src, dst = stores
    src.write_bytes("a.txt", b"Meeting moved to 2024-06-01.")
    src.write_bytes("b.txt", b"Invoice INV-1 due 2024-07-01.")
    a, b = sorted(src.iter_objects(), key=lambda o: o.key)
    planned = jobs.inspect_object(src, dst, b, Settings())
    assert isinstance(planned, PlannedDocument)
    src.delete("a.txt")
    src.delete("b.txt")
    for outcome in (
        jobs.inspect_object(src, dst, a, Settings()),
        jobs.process_document(src, dst, planned, Settings()),
    ):
        assert (outcome.status, outcome.reason) == ("skipped", "source_missing")
    assert list(dst.iter_objects()) == []


def test_unreadable_result_is_processed_again(stores: tuple[LocalStorage, LocalStorage]) -> None:
    src, dst = stores
    src.write_bytes("memo.txt", b"Meeting moved to 2024-06-01.")
    [obj] = list(src.iter_objects())
    doc = jobs.inspect_object(src, dst, obj, Settings())
    assert isinstance(doc, PlannedDocument)
    key = jobs.result_key(doc.id, Settings())
    for broken in (b"", b'{"schema_version": 1, "id": '):  # a crash mid-write, a torn copy
        dst.write_bytes(key, broken)
        planned = jobs.inspect_object(src, dst, obj, Settings())
        assert isinstance(planned, PlannedDocument)
        assert jobs.process_document(src, dst, planned, Settings()).status == "processed"
        assert DocumentResult.model_validate_json(dst.read_bytes(key)).source == "memo.txt"


def test_quarantine_is_remembered_until_retry_quarantined(stores: tuple[LocalStorage, LocalStorage]) -> None:
    src, dst = stores
    src.write_bytes("memo.txt", b"Meeting moved to 2024-06-01.")
    [obj] = list(src.iter_objects())
    doc = jobs.inspect_object(src, dst, obj, Settings())
    assert isinstance(doc, PlannedDocument)
    # An earlier run's engine failed on it twice.
    jobs.quarantine(src, dst, obj.key, doc.id, OcrFailedError("OCR engine failed twice"))

    again = jobs.inspect_object(src, dst, obj, Settings())
    assert isinstance(again, DocumentOutcome)
    assert (again.status, again.reason) == ("quarantined", "ocr_failed")
    assert "earlier run" in (again.message or "")
    assert jobs.process_document(src, dst, doc, Settings()).status == "quarantined"  # a retried batch too

    retry = Settings(retry_quarantined=True)
    planned = jobs.inspect_object(src, dst, obj, retry)
    assert isinstance(planned, PlannedDocument)
    assert jobs.process_document(src, dst, planned, retry).status == "processed"
    assert list(dst.iter_objects("quarantine")) == []
    assert jobs.inspect_object(src, dst, obj, Settings()).status == "skipped"  # type: ignore[union-attr]
