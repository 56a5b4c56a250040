"""Validation: is a document's result good enough to use, or does a person need to look at it?

Reasons are machine-readable strings: ``no_text``, ``low_confidence:<mean>``,
``missing:<field>``, ``nlp_truncated`` (the text is longer than ``nlp_max_chars``: entities
and type come from its beginning only). The status is ``failed`` with no text at all, ``needs_review`` with any
other reason, else ``ok``.
"""

from __future__ import annotations

from collections.abc import Sequence

from docproc.models import DocumentType, DocumentTypeLabel, Entity, PageResult, Quality

# Fields a document of each type is expected to carry; a field is an entity type, or "party".
EXPECTED_FIELDS: dict[DocumentTypeLabel, tuple[str, ...]] = {
    "invoice": ("date", "money", "reference"),
    "receipt": ("date", "money"),
    "contract": ("date", "party"),
    "letter": ("date",),
}
PARTY_TYPES = frozenset({"PERSON", "ORG"})


def ocr_confidence(pages: Sequence[PageResult]) -> float | None:
    """Mean OCR confidence over the lines of OCR pages; None without any OCR line.

    Weighted by lines, so a nearly blank page with one doubtful line does not outweigh a full one.
    Text-layer pages (confidence None) do not count.
    """
    weighted = [
        (page.mean_confidence, len(page.lines))
        for page in pages
        if page.text_source == "ocr" and page.mean_confidence is not None and page.lines
    ]
    total = sum(weight for _, weight in weighted)
    return sum(conf * weight for conf, weight in weighted) / total if total else None


def _fields(entities: Sequence[Entity]) -> set[str]:
    types = {e.type for e in entities}
    return types | {"party"} if types & PARTY_TYPES else types


def assess_quality(
    pages: Sequence[PageResult],
    entities: Sequence[Entity],
    document_type: DocumentType,
    min_confidence: float,
    *,
    nlp_truncated: bool = False,
) -> Quality:
    if not any(page.text.strip() for page in pages):
        return Quality(status="failed", reasons=["no_text"])
    reasons: list[str] = []
    confidence = ocr_confidence(pages)
    if confidence is not None and confidence < min_confidence:
        reasons.append(f"low_confidence:{confidence:.2f}")
    present = _fields(entities)
    reasons.extend(
        f"missing:{field}" for field in EXPECTED_FIELDS.get(document_type.label, ()) if field not in present
    )
    if nlp_truncated:
        reasons.append("nlp_truncated")
    return Quality(status="needs_review" if reasons else "ok", reasons=reasons)
