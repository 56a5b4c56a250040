"""Outputs written beside a document's result: the searchable PDF and the Markdown.

Keys follow the result's: ``pdf/<id>-<fingerprint>.pdf`` and ``markdown/<id>-<fingerprint>.md``,
so a changed setting writes new files and a re-run finds the old ones by the result key. They
are written before the result, whose presence marks a document done.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

from docproc import markdown, searchable_pdf
from docproc.models import DocumentResult
from docproc.settings import Settings
from docproc.storage import Storage

log = logging.getLogger(__name__)

SourceOpener = Callable[[], AbstractContextManager[Path]]


def pdf_key(doc_id: str, settings: Settings) -> str:
    return f"pdf/{doc_id}-{settings.fingerprint()}.pdf"


def markdown_key(doc_id: str, settings: Settings) -> str:
    return f"markdown/{doc_id}-{settings.fingerprint()}.md"


def write_outputs(
    dst: Storage, result: DocumentResult, settings: Settings, open_source: SourceOpener
) -> None:
    """Write the outputs the settings ask for. ``open_source`` gives a local copy of the original,
    asked for only when an output needs its pages (the searchable PDF)."""
    if settings.markdown:
        text = markdown.render(result)
        dst.write_bytes(markdown_key(result.id, settings), text.encode(), "text/markdown; charset=utf-8")
    if settings.searchable_pdf and result.media_type in searchable_pdf.SUPPORTED_TYPES:
        # Built in a file, not in memory: a document may be hundreds of megabytes.
        with open_source() as path, tempfile.TemporaryDirectory(prefix="docproc-pdf-") as folder:
            made = Path(folder) / "searchable.pdf"
            try:
                searchable_pdf.write(path, result, settings, made)
            except searchable_pdf.SearchablePdfError as exc:
                # The text and result stand on their own: the document is processed, without its PDF.
                log.error("no searchable PDF for %s (%s): %s", result.source, result.id[:12], exc)
                return
            dst.write_file(pdf_key(result.id, settings), made, "application/pdf")
