"""Log records that know which document and page they are about (like OCRmyPDF's PageNumberFilter).

``document(doc_id)`` and ``page(number)`` set the context; once ``install()`` has run in a
process, every log record made there carries ``doc_id`` and ``page`` attributes (None outside a
document), for formatters and structured log handlers to use.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

_document: ContextVar[str | None] = ContextVar("docproc_document", default=None)
_page: ContextVar[int | None] = ContextVar("docproc_page", default=None)
_installed = False


@contextmanager
def document(doc_id: str) -> Iterator[None]:
    token = _document.set(doc_id)
    try:
        yield
    finally:
        _document.reset(token)


@contextmanager
def page(number: int) -> Iterator[None]:
    token = _page.set(number)
    try:
        yield
    finally:
        _page.reset(token)


def install() -> None:
    """Make every record of this process carry the current document id and page. Idempotent."""
    global _installed
    if _installed:
        return
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        record.doc_id = _document.get()
        record.page = _page.get()
        return record

    logging.setLogRecordFactory(factory)
    _installed = True
