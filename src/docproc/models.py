"""The result schema: pydantic models at docproc's boundaries.

``DocumentResult`` is written as one JSON per document; its JSON Schema is committed as
``schema/document-result.v{SCHEMA_VERSION}.json`` and checked against these models by the
tests. Bump ``SCHEMA_VERSION`` on any incompatible change.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION: Literal[1] = 1

TextSource = Literal["text_layer", "ocr"]
QualityStatus = Literal["ok", "needs_review", "failed"]
OutcomeStatus = Literal["processed", "skipped", "quarantined"]
DocumentTypeLabel = Literal["invoice", "receipt", "form", "letter", "contract", "report", "other"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Line(_Model):
    text: str
    bbox: tuple[int, int, int, int] = Field(description="x0, y0, x1, y1 in the page's pixels")
    confidence: float = Field(ge=0, le=1)


class PageResult(_Model):
    number: int = Field(ge=1, description="1-based page number")
    width: int = Field(description="width in pixels of the page as read (after rotation, scaling)")
    height: int
    rotation: int = Field(description="clockwise rotation applied to read the page: 0, 90, 180, 270")
    skew: float = Field(0.0, description="skew angle corrected, degrees")
    text_source: TextSource
    engine: str | None = Field(description="OCR engine, or null for a text-layer page")
    languages: list[str] = Field(
        default_factory=list,
        description="OCR languages the page was read with (ISO 639-1); empty for a text layer",
    )
    mean_confidence: float | None = Field(ge=0, le=1)
    text: str
    lines: list[Line]


class Entity(_Model):
    type: str = Field(description="date, money, email, phone, url, iban, reference, or a spaCy label")
    source: Literal["pattern", "ner"]
    text: str = Field(description="the entity as it appears in the text")
    value: str | dict[str, str] | None = Field(
        description="normalized value: ISO 8601 date, E.164 phone, {amount, currency}, ..."
    )
    page: int | None = Field(description="1-based page the entity is on")
    start: int = Field(ge=0, description="character offset in the document's full text")
    end: int = Field(ge=0)


class Language(_Model):
    code: str = Field(description="ISO 639-1 code, or 'und' when undetermined")
    score: float = Field(ge=0, le=1)


class DocumentType(_Model):
    label: DocumentTypeLabel
    score: float = Field(ge=0, le=1)


class Quality(_Model):
    status: QualityStatus
    reasons: list[str]


class DocumentResult(_Model):
    schema_version: Literal[1] = SCHEMA_VERSION
    id: str = Field(description="sha256 of the document's bytes")
    source: str = Field(description="the document's key relative to the run's source")
    media_type: str
    size_bytes: int
    pages: list[PageResult]
    text: str = Field(description="full text: pages joined by form feeds")
    language: Language
    entities: list[Entity]
    document_type: DocumentType
    quality: Quality
    timings: dict[str, float] = Field(description="seconds spent per stage")
    pipeline_version: str
    settings_fingerprint: str
    processed_at: datetime


class AttemptEvidence(_Model):
    """One failed attempt at a document that ended its worker: what was seen, and where."""

    attempt: int = Field(ge=1)
    kind: str = Field(description="worker_crashed, timeout or memory")
    detail: str
    worker: str | None = None
    at: datetime


class QuarantineRecord(_Model):
    id: str | None = Field(description="sha256 of the document, when it could be read")
    source: str
    reason: str = Field(description="machine-readable: corrupt, encrypted, unsupported_type, too_large, ...")
    message: str
    page: int | None = None
    evidence: list[AttemptEvidence] = Field(
        default_factory=list, description="the failed attempts, for worker_crashed and timeout"
    )
    pipeline_version: str
    quarantined_at: datetime


class DocumentOutcome(_Model):
    """What one document became in a run: small, passed between tasks and into the report."""

    source: str
    id: str | None
    status: OutcomeStatus
    reason: str | None = None
    message: str | None = None
    result_key: str | None = None
    quality: QualityStatus | None = None
    document_type: DocumentTypeLabel | None = None
    language: str | None = None
    pages: int = 0
    ocr_pages: int = 0
    seconds: float = 0.0


class RunReport(_Model):
    run_id: str
    source: str
    destination: str
    started_at: datetime
    finished_at: datetime
    pipeline_version: str
    settings_fingerprint: str
    counts: dict[str, int] = Field(description="documents by outcome: processed, skipped, quarantined")
    by_quality: dict[str, int]
    by_type: dict[str, int]
    by_language: dict[str, int]
    quarantined: list[DocumentOutcome] = Field(
        description="the first quarantined documents (up to report_limit); all are in outcomes_prefix"
    )
    documents: list[DocumentOutcome] = Field(
        description="the first documents to finish (up to report_limit); all are in outcomes_prefix"
    )
    pages: int
    ocr_pages: int
    wall_seconds: float
    pages_per_second: float
    outcomes_prefix: str | None = Field(
        None, description="key prefix of the run's JSON Lines files holding every document's outcome"
    )
    error: str | None = Field(None, description="why the run failed, when it did: this report is partial")


class PlannedDocument(_Model):
    """A listed document after inspection: what the processing stage needs, and nothing heavy."""

    source: str
    id: str
    media_type: str
    pages: int
    size_bytes: int


class DocumentSlice(_Model):
    """Pages ``first``..``last`` of a planned document: the unit a batch is made of."""

    doc: PlannedDocument
    first: int = Field(ge=1)
    last: int = Field(ge=1)

    @property
    def whole(self) -> bool:
        return self.first == 1 and self.last >= self.doc.pages


class PartError(_Model):
    reason: str
    message: str
    page: int | None = None


class PagesPart(_Model):
    """Pages of a split document read by one batch, kept in storage until the document is finished."""

    first: int
    last: int
    pages: list[PageResult]
    timings: dict[str, float]
    error: PartError | None = None


class SliceOutcome(_Model):
    """A slice of a split document is read; the document is finished once all its slices are."""

    source: str
    id: str
    first: int
    last: int
