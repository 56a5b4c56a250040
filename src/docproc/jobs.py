"""Storage-level units of work: what the flow's tasks call, with keys in and small models out.

Every output key derives from the document's sha256 and the settings fingerprint, and a unit
skips work whose output already exists: retries and re-runs are safe and never duplicate.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

from docproc import __version__, loader, outputs, pipeline
from docproc.errors import (
    DocprocError,
    InternalDocumentError,
    OcrEngineError,
    OcrFailedError,
    PermanentDocumentError,
    TooLargeError,
    TransientError,
    permanent_error,
)
from docproc.models import (
    DocumentOutcome,
    DocumentResult,
    DocumentSlice,
    OutcomeStatus,
    PagesPart,
    PartError,
    PlannedDocument,
    QuarantineRecord,
    SliceOutcome,
)
from docproc.settings import Settings
from docproc.storage import ObjectInfo, Storage

log = logging.getLogger(__name__)

_CHUNK = 1 << 20
_SAFE_SUFFIX = re.compile(r"^\.[A-Za-z0-9]{1,8}$")


def result_key(doc_id: str, settings: Settings) -> str:
    return f"results/{doc_id}-{settings.fingerprint()}.json"


def text_key(doc_id: str, settings: Settings) -> str:
    return f"text/{doc_id}-{settings.fingerprint()}.txt"


def quarantine_prefix(doc_id: str) -> str:
    return f"quarantine/{doc_id}/"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def inspect_object(
    src: Storage, dst: Storage, obj: ObjectInfo, settings: Settings
) -> PlannedDocument | DocumentOutcome:
    """Plan one listed object: a PlannedDocument to process, or its final outcome already
    (skipped because its result exists, or quarantined because it is bad input)."""
    if obj.size > settings.max_document_bytes:
        # Refused before download: its hash would cost a full read of something we reject.
        error = TooLargeError(f"{obj.size} bytes exceeds max_document_bytes={settings.max_document_bytes}")
        return quarantine(src, dst, obj.key, None, error)
    with src.local_copy(obj.key) as path:
        doc_id = sha256_file(path)
        existing = _existing_outcome(dst, obj.key, doc_id, settings)
        if existing is not None:
            return existing
        try:
            with _contained(obj.key):
                info = loader.inspect(path, settings)
        except PermanentDocumentError as exc:
            return quarantine(src, dst, obj.key, doc_id, exc, local_path=path)
    return PlannedDocument(
        source=obj.key,
        id=doc_id,
        media_type=info.media_type,
        pages=info.page_count,
        size_bytes=info.size_bytes,
    )


def _existing_outcome(dst: Storage, source: str, doc_id: str, settings: Settings) -> DocumentOutcome | None:
    if settings.force:
        return None
    key = result_key(doc_id, settings)
    if not dst.exists(key):
        return None
    result = DocumentResult.model_validate_json(dst.read_bytes(key))
    return _outcome(source, result, key, "skipped", reason="result_exists")


def _outcome(
    source: str,
    result: DocumentResult,
    key: str,
    status: OutcomeStatus,
    reason: str | None = None,
    seconds: float = 0.0,
) -> DocumentOutcome:
    return DocumentOutcome(
        source=source,
        id=result.id,
        status=status,
        reason=reason,
        result_key=key,
        quality=result.quality.status,
        document_type=result.document_type.label,
        language=result.language.code,
        pages=len(result.pages),
        ocr_pages=sum(p.text_source == "ocr" for p in result.pages) if status == "processed" else 0,
        seconds=round(seconds, 4),
    )


def part_prefix(doc_id: str, settings: Settings) -> str:
    return f"parts/{doc_id}-{settings.fingerprint()}/"


def part_key(doc_id: str, settings: Settings, first: int, last: int) -> str:
    return f"{part_prefix(doc_id, settings)}{first:06d}-{last:06d}.json"


def process_document(src: Storage, dst: Storage, doc: PlannedDocument, settings: Settings) -> DocumentOutcome:
    """Process one whole planned document and write its result and text; quarantine it on bad input."""
    started = time.perf_counter()
    existing = _existing_outcome(dst, doc.source, doc.id, settings)
    if existing is not None:  # a retried batch: this document was finished by the first attempt
        return existing
    with src.local_copy(doc.source) as path:
        try:
            with _contained(doc.source):
                result = pipeline.finish(doc, [_read_with_engine_retry(path, doc, settings)], settings)
        except PermanentDocumentError as exc:
            return quarantine(src, dst, doc.source, doc.id, exc, local_path=path)
    return _store_result(src, dst, doc, result, settings, started)


def process_slice(
    src: Storage, dst: Storage, piece: DocumentSlice, settings: Settings
) -> DocumentOutcome | SliceOutcome:
    """A whole document is processed; part of a split one is read and kept under parts/ until
    ``finish_document`` joins it with the other parts."""
    doc = piece.doc
    if piece.whole:
        return process_document(src, dst, doc, settings)
    done = SliceOutcome(source=doc.source, id=doc.id, first=piece.first, last=piece.last)
    key = part_key(doc.id, settings, piece.first, piece.last)
    if dst.exists(key) or _existing_outcome(dst, doc.source, doc.id, settings) is not None:
        return done  # read by an earlier attempt, or the whole document is finished already
    with src.local_copy(doc.source) as path:
        try:
            with _contained(doc.source):
                read = _read_with_engine_retry(path, doc, settings, piece.first, piece.last)
            part = PagesPart(first=piece.first, last=piece.last, pages=read.pages, timings=read.timings)
        except PermanentDocumentError as exc:
            error = PartError(reason=exc.reason, message=str(exc), page=exc.page)
            part = PagesPart(first=piece.first, last=piece.last, pages=[], timings={}, error=error)
    dst.write_bytes(key, part.model_dump_json().encode(), "application/json")
    return done


def finish_document(src: Storage, dst: Storage, doc: PlannedDocument, settings: Settings) -> DocumentOutcome:
    """Join the parts of a split document into its result (or quarantine it), then drop the parts."""
    started = time.perf_counter()
    existing = _existing_outcome(dst, doc.source, doc.id, settings)
    if existing is not None:
        return existing
    keys = [o.key for o in dst.iter_objects(part_prefix(doc.id, settings))]
    parts = [PagesPart.model_validate_json(dst.read_bytes(key)) for key in keys]
    error = next((part.error for part in parts if part.error is not None), None)
    if error is not None:
        outcome = quarantine(
            src, dst, doc.source, doc.id, permanent_error(error.reason, error.message, error.page)
        )
    else:
        numbers = sorted(page.number for part in parts for page in part.pages)
        if numbers != list(range(1, doc.pages + 1)):
            raise TransientError(f"parts of {doc.source} cover pages {numbers}, not 1..{doc.pages}")
        reads = [pipeline.PagesRead(pages=part.pages, timings=part.timings) for part in parts]
        try:
            with _contained(doc.source):
                result = pipeline.finish(doc, reads, settings)
        except PermanentDocumentError as exc:
            outcome = quarantine(src, dst, doc.source, doc.id, exc)
        else:
            outcome = _store_result(src, dst, doc, result, settings, started)
    for key in keys:
        dst.delete(key)
    return outcome


def _store_result(
    src: Storage,
    dst: Storage,
    doc: PlannedDocument,
    result: DocumentResult,
    settings: Settings,
    started: float,
) -> DocumentOutcome:
    key = result_key(doc.id, settings)
    # Text, PDF and Markdown first, result last: the result's presence marks the document done.
    dst.write_bytes(text_key(doc.id, settings), result.text.encode(), "text/plain; charset=utf-8")
    outputs.write_outputs(dst, result, settings, lambda: src.local_copy(doc.source))
    dst.write_bytes(key, result.model_dump_json(indent=2).encode(), "application/json")
    log.info("processed %s (%s, %d pages, %s)", doc.source, doc.id[:12], doc.pages, result.quality.status)
    return _outcome(doc.source, result, key, "processed", seconds=time.perf_counter() - started)


@contextmanager
def _contained(source: str) -> Iterator[None]:
    """Turn an unforeseen failure on one document (a bug) into its quarantine, so the run goes on.

    docproc's own errors pass through: permanent ones quarantine as they are, transient ones
    are retried by the caller.
    """
    try:
        yield
    except DocprocError:
        raise
    except Exception as exc:
        log.exception("unexpected failure on %s", source)
        raise InternalDocumentError(f"{type(exc).__name__}: {exc}") from exc


def _read_with_engine_retry(
    path: Path, doc: PlannedDocument, settings: Settings, first: int = 1, last: int | None = None
) -> pipeline.PagesRead:
    """An engine crash (killed, out of memory) gets one more try; twice on the same pages, it is
    the document's doing, and it is quarantined rather than failing its whole batch."""
    try:
        return pipeline.read_pages(path, doc, settings, first, last)
    except OcrEngineError as exc:
        log.warning("OCR engine failed on %s, retrying once: %s", doc.source, exc)
    try:
        return pipeline.read_pages(path, doc, settings, first, last)
    except OcrEngineError as exc:
        raise OcrFailedError(f"OCR engine failed twice: {exc}") from exc


def quarantine(
    src: Storage,
    dst: Storage,
    source: str,
    doc_id: str | None,
    error: PermanentDocumentError,
    local_path: Path | None = None,
) -> DocumentOutcome:
    """Copy the original under quarantine/<id>/ with an error JSON naming the reason."""
    folder_id = doc_id or "key-" + hashlib.sha256(source.encode()).hexdigest()
    prefix = quarantine_prefix(folder_id)
    suffix = PurePosixPath(source).suffix
    original = prefix + "original" + (suffix.lower() if _SAFE_SUFFIX.match(suffix) else "")
    if local_path is not None:
        dst.write_file(original, local_path)
    elif error.reason != "too_large":
        with src.local_copy(source) as path:
            dst.write_file(original, path)
    record = QuarantineRecord(
        id=doc_id,
        source=source,
        reason=error.reason,
        message=str(error),
        page=error.page,
        pipeline_version=__version__,
        quarantined_at=datetime.now(UTC),
    )
    dst.write_bytes(prefix + "error.json", record.model_dump_json(indent=2).encode(), "application/json")
    log.warning("quarantined %s: %s (%s)", source, error.reason, error)
    return DocumentOutcome(
        source=source, id=doc_id, status="quarantined", reason=error.reason, message=str(error)
    )


def split_duplicates(
    docs: Sequence[PlannedDocument], settings: Settings
) -> tuple[list[PlannedDocument], list[DocumentOutcome]]:
    """One document per content, in source order; copies are skipped, pointing at its result."""
    first: dict[str, PlannedDocument] = {}
    copies: list[DocumentOutcome] = []
    for doc in sorted(docs, key=lambda d: d.source):
        if doc.id not in first:
            first[doc.id] = doc
            continue
        copies.append(
            DocumentOutcome(
                source=doc.source,
                id=doc.id,
                status="skipped",
                reason="duplicate",
                message=f"same content as {first[doc.id].source}",
                result_key=result_key(doc.id, settings),
            )
        )
    return list(first.values()), copies


def batch_pages(total_pages: int, batch_size: int, workers: int) -> int:
    """Pages per batch: ``batch_size``, but small enough that a small run still uses every worker."""
    return max(1, min(batch_size, math.ceil(total_pages / max(workers, 1))))


def plan_batches(docs: Sequence[PlannedDocument], batch_pages: int) -> list[list[DocumentSlice]]:
    """Fill batches of ``batch_pages`` pages in listing order, splitting a document across
    batches where it does not fit, so that one long document does not hold up a run."""
    batches: list[list[DocumentSlice]] = []
    current: list[DocumentSlice] = []
    room = batch_pages
    for doc in docs:
        first, total = 1, max(doc.pages, 1)
        while first <= total:
            take = min(room, total - first + 1)
            current.append(DocumentSlice(doc=doc, first=first, last=first + take - 1))
            first += take
            room -= take
            if room == 0:
                batches.append(current)
                current, room = [], batch_pages
    if current:
        batches.append(current)
    return batches


def chunks(items: Sequence[ObjectInfo], size: int) -> Iterable[list[ObjectInfo]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])
