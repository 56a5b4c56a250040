"""Log records made while a page is read name its document and page."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from docproc import logcontext, pipeline
from docproc.models import PlannedDocument
from docproc.settings import Settings
from tests.documents import pages_pdf


def test_records_carry_document_and_page(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    logcontext.install()
    logcontext.install()  # idempotent: one wrapper, not two
    path = pages_pdf(tmp_path / "two.pdf", ["First page of the memo, with text.", "Second page of it, too."])
    doc = PlannedDocument(source="two.pdf", id="f" * 64, media_type="application/pdf", pages=2, size_bytes=1)
    with caplog.at_level(logging.DEBUG, logger="docproc.pipeline"):
        pipeline.read_pages(path, doc, Settings())
    records = [r for r in caplog.records if r.name == "docproc.pipeline"]
    assert [(r.doc_id, r.page) for r in records] == [("f" * 64, 1), ("f" * 64, 2)]  # type: ignore[attr-defined]
    outside = logging.getLogger("docproc.test").makeRecord(
        "docproc.test", logging.INFO, "f", 1, "m", (), None
    )
    assert (outside.doc_id, outside.page) == (None, None)  # type: ignore[attr-defined]
