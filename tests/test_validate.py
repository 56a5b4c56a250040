"""Validation rules: pure functions over result models, plus the real NLP output of the samples."""

from __future__ import annotations

from typing import Literal

import pytest

from docproc import nlp
from docproc.models import DocumentType, DocumentTypeLabel, Entity, Line, PageResult
from docproc.validate import assess_quality, ocr_confidence
from tests.test_nlp import CONTRACT, INVOICE, LETTER, RECEIPT

MIN_CONFIDENCE = 0.5
OTHER = DocumentType(label="other", score=1.0)


def ocr_page(number: int, confidences: list[float], text: str = "some words") -> PageResult:
    lines = [
        Line(text=text, bbox=(0, 10 * i, 100, 10 * i + 9), confidence=c) for i, c in enumerate(confidences)
    ]
    mean = sum(confidences) / len(confidences) if confidences else None
    return PageResult(
        number=number, width=1000, height=1400, rotation=0, text_source="ocr", engine="easyocr",
        mean_confidence=mean, text="\n".join(line.text for line in lines), lines=lines,
    )  # fmt: skip


def text_page(number: int, text: str) -> PageResult:
    return PageResult(
        number=number, width=612, height=792, rotation=0, text_source="text_layer", engine=None,
        mean_confidence=None, text=text, lines=[],
    )  # fmt: skip


def entity(kind: str) -> Entity:
    # spaCy labels are upper case, pattern types lower case.
    source: Literal["ner", "pattern"] = "ner" if kind.isupper() else "pattern"
    return Entity(type=kind, source=source, text="x", value=None, page=1, start=0, end=1)


def doc_type(label: DocumentTypeLabel) -> DocumentType:
    return DocumentType(label=label, score=0.9)


# -- no text


@pytest.mark.parametrize(
    "pages",
    [[], [text_page(1, "")], [text_page(1, " \n\f "), ocr_page(2, [])]],
    ids=["no pages", "empty text layer", "blank pages"],
)
def test_a_document_without_text_fails(pages: list[PageResult]) -> None:
    quality = assess_quality(pages, [], OTHER, MIN_CONFIDENCE)
    assert quality.status == "failed"
    assert quality.reasons == ["no_text"]


def test_text_on_any_page_is_enough() -> None:
    quality = assess_quality([text_page(1, ""), text_page(2, "A short note.")], [], OTHER, MIN_CONFIDENCE)
    assert (quality.status, quality.reasons) == ("ok", [])


# -- OCR confidence


def test_confidence_is_weighted_by_lines() -> None:
    # 9 lines at 0.9 and 1 line at 0.1: per page the mean would be 0.5, per line it is 0.82.
    pages = [ocr_page(1, [0.9] * 9), ocr_page(2, [0.1])]
    assert ocr_confidence(pages) == pytest.approx(0.82)
    assert assess_quality(pages, [], OTHER, MIN_CONFIDENCE).status == "ok"


def test_low_mean_confidence_needs_review_with_the_value_in_the_reason() -> None:
    pages = [ocr_page(1, [0.3, 0.5]), ocr_page(2, [0.4] * 2)]
    quality = assess_quality(pages, [], OTHER, MIN_CONFIDENCE)
    assert quality.status == "needs_review"
    assert quality.reasons == ["low_confidence:0.40"]


def test_the_threshold_comes_from_the_caller() -> None:
    pages = [ocr_page(1, [0.7, 0.8])]
    assert assess_quality(pages, [], OTHER, 0.5).status == "ok"
    assert assess_quality(pages, [], OTHER, 0.9).reasons == ["low_confidence:0.75"]


def test_text_layer_pages_do_not_count_for_confidence() -> None:
    pages = [text_page(1, "Clean digital text. " * 50), ocr_page(2, [0.2, 0.3])]
    assert ocr_confidence(pages) == pytest.approx(0.25)
    assert assess_quality(pages, [], OTHER, MIN_CONFIDENCE).reasons == ["low_confidence:0.25"]
    assert ocr_confidence([text_page(1, "Only a text layer.")]) is None
    assert assess_quality([text_page(1, "Only a text layer.")], [], OTHER, MIN_CONFIDENCE).status == "ok"


# -- fields expected for the document's type


@pytest.mark.parametrize(
    ("label", "present", "missing"),
    [
        ("invoice", ["date", "money"], ["missing:reference"]),
        ("invoice", ["reference"], ["missing:date", "missing:money"]),
        ("receipt", ["date"], ["missing:money"]),
        ("receipt", ["money", "phone"], ["missing:date"]),
        ("contract", ["date", "GPE"], ["missing:party"]),
        ("contract", ["PERSON"], ["missing:date"]),
        ("letter", ["PERSON", "email"], ["missing:date"]),
    ],
)
def test_missing_expected_fields_need_review(
    label: DocumentTypeLabel, present: list[str], missing: list[str]
) -> None:
    entities = [entity(kind) for kind in present]
    quality = assess_quality([text_page(1, "some text")], entities, doc_type(label), MIN_CONFIDENCE)
    assert quality.status == "needs_review"
    assert quality.reasons == missing


@pytest.mark.parametrize(
    ("label", "present"),
    [
        ("invoice", ["date", "money", "reference"]),
        ("receipt", ["date", "money"]),
        ("contract", ["date", "ORG"]),
        ("contract", ["date", "PERSON"]),
        ("letter", ["date"]),
        ("form", []),
        ("report", []),
        ("other", []),
    ],
)
def test_documents_with_their_expected_fields_are_ok(label: DocumentTypeLabel, present: list[str]) -> None:
    entities = [entity(kind) for kind in present]
    quality = assess_quality([text_page(1, "some text")], entities, doc_type(label), MIN_CONFIDENCE)
    assert (quality.status, quality.reasons) == ("ok", [])


def test_every_reason_is_reported_together() -> None:
    quality = assess_quality([ocr_page(1, [0.2])], [entity("money")], doc_type("invoice"), MIN_CONFIDENCE)
    assert quality.status == "needs_review"
    assert quality.reasons == ["low_confidence:0.20", "missing:date", "missing:reference"]


# -- on the real NLP output of realistic samples


@pytest.mark.parametrize("text", [INVOICE, RECEIPT, LETTER, CONTRACT])
def test_complete_realistic_documents_are_ok(text: str) -> None:
    analysis = nlp.analyze(text, [0])
    quality = assess_quality([text_page(1, text)], analysis.entities, analysis.document_type, MIN_CONFIDENCE)
    assert (quality.status, quality.reasons) == ("ok", [])


def test_an_undated_letter_needs_review() -> None:
    text = LETTER.replace("12 February 2024\n", "")
    analysis = nlp.analyze(text, [0])
    assert analysis.document_type.label == "letter"
    quality = assess_quality([text_page(1, text)], analysis.entities, analysis.document_type, MIN_CONFIDENCE)
    assert quality.reasons == ["missing:date"]


def test_an_invoice_without_its_number_needs_review() -> None:
    text = INVOICE.replace("Invoice No. INV-2024-0042\n", "")
    analysis = nlp.analyze(text, [0])
    assert analysis.document_type.label == "invoice"
    quality = assess_quality([text_page(1, text)], analysis.entities, analysis.document_type, MIN_CONFIDENCE)
    assert quality.reasons == ["missing:reference"]


def test_text_longer_than_the_nlp_limit_needs_review() -> None:
    quality = assess_quality([text_page(1, "some text")], [], OTHER, MIN_CONFIDENCE, nlp_truncated=True)
    assert (quality.status, quality.reasons) == ("needs_review", ["nlp_truncated"])
    assert assess_quality([text_page(1, "some text")], [], OTHER, MIN_CONFIDENCE).status == "ok"
