"""One document through the storage-level jobs, as a run processes it, for the output tests."""

from __future__ import annotations

from docproc import jobs
from docproc.models import DocumentResult, PlannedDocument
from docproc.settings import Settings
from docproc.storage import LocalStorage
from docproc.storage.base import ObjectInfo


def process_one(src: LocalStorage, dst: LocalStorage, obj: ObjectInfo, settings: Settings) -> DocumentResult:
    """Inspect and process ``obj`` from ``src`` into ``dst``; it must end processed. Returns its result."""
    planned = jobs.inspect_object(src, dst, obj, settings)
    assert isinstance(planned, PlannedDocument), planned
    outcome = jobs.process_document(src, dst, planned, settings)
    assert outcome.status == "processed", outcome
    assert outcome.result_key is not None
    return DocumentResult.model_validate_json(dst.read_bytes(outcome.result_key))
