"""NLP stage on realistic texts, with the real spaCy model and the real fastText language model."""

from __future__ import annotations

import itertools
import socket
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from spacy.language import Language as SpacyLanguage

from docproc import nlp
from docproc.models import Entity
from docproc.nlp import language, ner, patterns

# -- realistic samples, one per document type (also used by tests/test_validate.py)

INVOICE = """ACME Industrial Supplies Ltd.
1200 Harbor Boulevard, Oakland, CA 94607
Phone: (510) 555-0148  |  billing@acme-industrial.com

INVOICE

Invoice No. INV-2024-0042
Invoice Date: March 5, 2024
Due Date: April 4, 2024

Bill To:
Northwind Traders Inc.
Attn: Margaret Chen
455 Market Street, San Francisco, CA 94105

Description                      Qty   Unit Price      Amount
Hydraulic pump, model HP-200      2     $1,150.00     $2,300.00
Replacement seals (pack of 10)    5        $24.50       $122.50

Subtotal                                               $2,422.50
Sales Tax (8.5%)                                         $205.91
Total Due                                              $2,628.41

Payment terms: Net 30. Please remit payment to the account below.
Bank: First Harbor Bank, IBAN GB82 WEST 1234 5698 7654 32
Questions? Visit https://www.acme-industrial.com/billing
"""

RECEIPT = """GREEN LEAF GROCERY
Store #0417  -  88 Elm Street, Portland, OR
Tel 503-555-0199

SALES RECEIPT
03/14/2024   18:42   Register 3   Cashier: DANA

Organic bananas          2.49
Whole milk 1 gal         4.29
Sourdough bread          5.99
Free-range eggs (12)     6.49

SUBTOTAL                $19.26
TAX                      $0.00
TOTAL                   $19.26
VISA  **** 4821         $19.26
AUTH CODE 083312   APPROVED

Items sold: 4
Thank you for shopping with us! Please come again.
"""

LETTER = """Harrington & Cole LLP
14 Fleet Street
London EC4Y 1AA

12 February 2024

Mr. Thomas Whitfield
27 Rosemary Lane
Bristol BS1 4QA

Re: Your enquiry of 2 February

Dear Mr. Whitfield,

Thank you for your letter regarding the lease of the premises at Rosemary Lane. I am writing
to confirm that our client, Mrs. Eleanor Marsh, is willing to extend the current lease by a
further twelve months on the existing terms.

Please find enclosed a copy of the proposed extension for your review. We look forward to
hearing from you at your earliest convenience.

Yours sincerely,

Jonathan Cole
Partner, Harrington & Cole LLP
"""

CONTRACT = """CONSULTING SERVICES AGREEMENT

This Consulting Services Agreement (the "Agreement") is entered into as of January 15, 2024
(the "Effective Date") by and between Brightwater Analytics Inc., a Delaware corporation
(hereinafter the "Company"), and Samuel Ortiz, an individual (hereinafter the "Consultant").
The Company and the Consultant are each a "Party" and together the "Parties".

WHEREAS, the Company wishes to obtain data analysis services, and the Consultant is willing
to provide such services on the terms set out herein;

1. Services. The Consultant shall provide the services described in Exhibit A.
2. Compensation. The Company shall pay the Consultant USD 150 per hour, invoiced monthly.
3. Term and Termination. The term of this Agreement is twelve months. Either Party may
   terminate this Agreement on thirty days' written notice.
4. Confidentiality. The Consultant shall keep confidential all information disclosed hereunder.
5. Governing Law. This Agreement is governed by the laws of the State of Delaware.

IN WITNESS WHEREOF, the Parties have executed this Agreement as of the Effective Date.

Brightwater Analytics Inc.                 Consultant
By: ______________________                 ______________________
Name: Laura Bennett, CEO                   Samuel Ortiz
"""

FORM = """CITY OF SPRINGFIELD
PARKING PERMIT APPLICATION FORM

Please print clearly in black ink and complete all sections.

Section 1 - Applicant
First Name: ______________________   Last Name: ______________________
Date of Birth: ____ / ____ / ______
Address: ____________________________________________
Phone: ____________________   E-mail: ____________________

Section 2 - Vehicle
Make: ______________   Model: ______________   Plate number: __________

Permit type (check one):   [ ] Resident   [ ] Visitor   [ ] Business

Do you hold a disabled parking badge?   Yes / No    If yes, attach a copy.

Signature: ______________________   Date: ______________

FOR OFFICE USE ONLY   Permit no.: ________   Approved by: ________
"""

REPORT = """Quarterly Sales Report: Q3 2023
Prepared by the Analytics Team, Northwind Traders

Executive Summary
Revenue for the third quarter rose 12.4% year-over-year to $4.2 million, driven by growth in
the online channel. Gross margin declined slightly to 38.1% because of higher freight costs.

1. Introduction
This report analyses sales performance across regions and channels for July to September 2023.

2. Methodology
Figures are taken from the ERP system and reconciled with the general ledger. Table 1 lists
revenue by region; Figure 2 shows the monthly trend.

3. Findings
The West region grew fastest (+21%), while the Northeast fell 3% after a distributor exit.
Online orders accounted for 46% of revenue, up from 39% a year earlier.

4. Recommendations
We recommend expanding the online catalogue and renegotiating freight contracts before Q1.
"""

OTHER = """The river rises in the hills north of the town and winds for some forty miles through
farmland and woods before it reaches the sea. In spring the meadows along its banks fill with
wild flowers, and herons stand motionless in the shallows waiting for fish. Children from the
village come down on summer evenings to swim near the old stone bridge, and in autumn the
trees on the far bank turn gold and red before the first frosts strip them bare.
"""

SAMPLES = {
    "invoice": INVOICE,
    "receipt": RECEIPT,
    "letter": LETTER,
    "contract": CONTRACT,
    "form": FORM,
    "report": REPORT,
    "other": OTHER,
}


def found(text: str, kind: str) -> list[str | dict[str, str] | None]:
    return [e.value for e in nlp.analyze(text, [0]).entities if e.type == kind and e.source == "pattern"]


# -- pattern entities, one type at a time


def test_dates_in_every_supported_format_normalize_to_iso() -> None:
    text = (
        "Issued 2024-03-05, shipped 03/05/2024, paid 05.03.2024, filed March 5, 2024, "
        "signed 5 March 2024, posted Mar. 5, 2024, closed 5th of March 2024, renewed 1/2/24."
    )
    assert found(text, "date") == ["2024-03-05"] * 7 + ["2024-01-02"]


def test_slashed_dates_are_month_first_unless_the_first_number_cannot_be_a_month() -> None:
    assert found("Due 04/11/2024 and 25/12/2024.", "date") == ["2024-04-11", "2024-12-25"]


def test_impossible_dates_are_not_reported() -> None:
    assert found("Dated 02/30/2024 and 31.04.2024 and February 30, 2024.", "date") == []


def test_money_symbols_codes_and_separators_normalize_to_amount_and_iso_4217() -> None:
    text = (
        "Paid $1,234.56, then €12, 1.234,56 EUR, USD 99, 12,50 €, £5.20, ¥1000, "
        "1 234,56 € and CHF 1'250.00; budget $4.2 million."
    )
    assert found(text, "money") == [
        {"amount": "1234.56", "currency": "USD"},
        {"amount": "12", "currency": "EUR"},
        {"amount": "1234.56", "currency": "EUR"},
        {"amount": "99", "currency": "USD"},
        {"amount": "12.50", "currency": "EUR"},
        {"amount": "5.20", "currency": "GBP"},
        {"amount": "1000", "currency": "JPY"},
        {"amount": "1234.56", "currency": "EUR"},
        {"amount": "1250.00", "currency": "CHF"},
        {"amount": "4200000", "currency": "USD"},
    ]


def test_bare_numbers_are_not_money() -> None:
    assert found("Quantity 1,234.56 of 12 items, part 99-100.", "money") == []


def test_emails_keep_the_local_part_and_lowercase_the_domain() -> None:
    text = "Write to Jane.Doe+billing@Example.COM or support@mail.acme.co.uk."
    assert found(text, "email") == ["Jane.Doe+billing@example.com", "support@mail.acme.co.uk"]


def test_phone_numbers_normalize_to_e164_with_us_as_default_region() -> None:
    text = "Call (415) 555-0132 or +44 20 7946 0958, fax 212.555.0187."
    assert found(text, "phone") == ["+14155550132", "+442079460958", "+12125550187"]


def test_urls_drop_trailing_punctuation_and_keep_balanced_brackets() -> None:
    text = (
        "See https://example.com/docs?id=7. Or (www.acme.org/path), https://en.wikipedia.org/wiki/Foo_(bar)!"
    )
    assert found(text, "url") == [
        "https://example.com/docs?id=7",
        "http://www.acme.org/path",
        "https://en.wikipedia.org/wiki/Foo_(bar)",
    ]


def test_ibans_with_a_valid_checksum_are_reported_compact() -> None:
    text = "IBAN: DE89 3704 0044 0532 0130 00 BIC COBADEFFXXX, or GB82WEST12345698765432."
    assert found(text, "iban") == ["DE89370400440532013000", "GB82WEST12345698765432"]


def test_ibans_failing_the_mod_97_checksum_are_not_reported() -> None:
    # The same IBANs as above with one digit changed.
    text = "IBAN: DE89 3704 0044 0532 0130 01 BIC COBADEFFXXX, or GB82WEST12345698765433."
    assert found(text, "iban") == []
    assert patterns.iban_is_valid("DE89370400440532013000")
    assert not patterns.iban_is_valid("DE89370400440532013001")


def test_reference_numbers_need_a_keyword_and_a_marker() -> None:
    text = (
        "Invoice No. INV-2024-0042 replaces Invoice #12345 (Ref: AB-778), Order Number: 55123. "
        "Invoice 2024 was sent in the order received."
    )
    assert found(text, "reference") == [
        {"kind": "invoice", "number": "INV-2024-0042"},
        {"kind": "invoice", "number": "12345"},
        {"kind": "reference", "number": "AB-778"},
        {"kind": "order", "number": "55123"},
    ]


def test_overlapping_matches_are_reported_once_as_the_more_specific_type() -> None:
    text = "Invoice #4155550132 is at https://example.com/archive/2024-03-05/invoice.pdf"
    # Each finder alone sees the inner match: the phone in the invoice number, the date in the URL.
    assert [m.value for m in patterns._phones(text)] == ["+14155550132"]
    assert [m.value for m in patterns._dates(text)] == ["2024-03-05"]
    assert [(e.type, e.text) for e in nlp.analyze(text, [0]).entities if e.source == "pattern"] == [
        ("reference", "4155550132"),
        ("url", "https://example.com/archive/2024-03-05/invoice.pdf"),
    ]


# -- named entities, spans and pages


def test_named_entities_come_from_spacy_with_their_labels() -> None:
    entities = nlp.analyze(INVOICE, [0]).entities
    named = {(e.type, e.text) for e in entities if e.source == "ner"}
    assert {("PERSON", "Margaret Chen"), ("ORG", "Northwind Traders Inc."), ("GPE", "San Francisco")} <= named
    # Numbers are left to the pattern stage: no CARDINAL, and no DATE that is only digits.
    assert not any(e.type == "CARDINAL" or (e.type == "DATE" and e.text.isdigit()) for e in entities)


def test_a_named_entity_stops_at_a_line_break() -> None:
    named = [(e.type, e.text) for e in nlp.analyze(LETTER, [0]).entities if e.source == "ner"]
    assert ("PERSON", "Jonathan Cole") in named
    assert not any("\n" in text for _, text in named)


def test_entities_carry_their_page_and_exact_span() -> None:
    pages = [
        "Invoice No. INV-7 from Northwind Traders Inc., dated March 5, 2024.",
        "Questions: billing@northwind.example or (415) 555-0132.",
        "Pay $2,628.41 to IBAN GB82 WEST 1234 5698 7654 32. Margaret Chen signed it.",
    ]
    text = "\f".join(pages)
    starts = [0, len(pages[0]) + 1, len(pages[0]) + len(pages[1]) + 2]
    entities = nlp.analyze(text, starts).entities

    assert entities == sorted(entities, key=lambda e: e.start)
    for entity in entities:
        assert text[entity.start : entity.end] == entity.text
        assert entity.page is not None
        assert entity.text in pages[entity.page - 1]
    by_type = {e.type: e.page for e in entities}
    assert (by_type["reference"], by_type["date"], by_type["email"], by_type["phone"]) == (1, 1, 2, 2)
    assert (by_type["money"], by_type["iban"], by_type["PERSON"]) == (3, 3, 3)


def test_without_page_starts_entities_have_no_page() -> None:
    entities = nlp.analyze("Paid $5 on 2024-03-05.", []).entities
    assert [e.page for e in entities] == [None, None]


def test_chunks_cut_at_line_breaks_and_cover_the_whole_segment() -> None:
    text = "".join(f"Line {i} of the document.\n" for i in range(200))
    spans = list(ner.chunks(text, 10, len(text), 100))
    assert spans[0][0] == 10
    assert spans[-1][1] == len(text)
    assert all(b - a <= 100 for a, b in spans)
    assert all(a2 == b1 for (_, b1), (a2, _) in itertools.pairwise(spans))
    assert all(text[b - 1] == "\n" for _, b in spans[:-1])
    # No whitespace at all: a hard cut.
    assert list(ner.chunks("x" * 250, 0, 250, 100)) == [(0, 100), (100, 200), (200, 250)]


def test_text_longer_than_a_chunk_is_processed_in_chunks_with_correct_offsets() -> None:
    paragraph = "Margaret Chen met the board of Northwind Traders Inc. in San Francisco.\n"
    text = paragraph * 30
    whole = ner.extract(text, [(0, len(text))])
    chunked = ner.extract(text, [(0, len(text))], limit=3 * len(paragraph) + 5)
    assert len([e for e in chunked if e.label == "PERSON"]) == 30
    assert {(e.label, text[e.start : e.end]) for e in chunked} == {
        (e.label, text[e.start : e.end]) for e in whole
    }


def test_named_entities_are_skipped_for_text_not_in_english() -> None:
    text = (
        "Madame, Monsieur, nous vous remercions de votre commande du 5 mars. Jean Dupont de la "
        "société Lumière vous contactera à Lyon la semaine prochaine. Contact: jean@lumiere.fr"
    )
    analysis = nlp.analyze(text, [0])
    assert analysis.language.code == "fr"
    assert [e.type for e in analysis.entities] == ["email"]


# -- language


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (
            "en",
            "Please find attached the signed copy of the agreement and let us know if anything is missing.",
        ),
        (
            "fr",
            "Veuillez trouver ci-joint la copie signée du contrat et dites-nous s'il manque quelque chose.",
        ),
        ("de", "Anbei finden Sie die unterschriebene Kopie des Vertrags. Bitte melden Sie sich bei Fragen."),
    ],
)
def test_language_is_detected(code: str, text: str) -> None:
    detected = language.detect_language(text)
    assert detected.code == code
    assert 0.5 < detected.score <= 1


@pytest.mark.parametrize("text", ["", "   \f\n ", "Page 3 of 12", "ok 1234 5678 9012 3456"])
def test_language_of_empty_or_too_short_text_is_undetermined(text: str) -> None:
    assert language.detect_language(text) == language.UNDETERMINED


def test_language_of_a_long_text_uses_a_sample() -> None:
    detected = language.detect_language(REPORT * 200)
    assert detected.code == "en"


# -- document type


@pytest.mark.parametrize("label", SAMPLES)
def test_document_type_of_realistic_samples(label: str) -> None:
    document_type = nlp.analyze(SAMPLES[label], [0]).document_type
    assert document_type.label == label
    assert 0.5 <= document_type.score <= 1


def test_an_invoice_mentioned_in_a_report_does_not_make_it_an_invoice() -> None:
    text = REPORT + "\nInvoice processing times fell after the new invoice system went live.\n"
    assert nlp.analyze(text, [0]).document_type.label == "report"


# -- models are loaded once per process


def test_models_load_once_and_are_shared() -> None:
    nlp.load_models()
    assert ner.get_pipeline() is ner.get_pipeline()
    assert language.get_detector() is language.get_detector()
    assert ner.get_pipeline().pipe_names == ["ner"]


def test_models_load_and_run_without_the_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    # Empty caches, so that this process loads both models again with the network refused.
    monkeypatch.setattr(ner, "_pipelines", {})
    monkeypatch.setattr(language, "_detectors", {})
    nlp.load_models()
    analysis = nlp.analyze(LETTER, [0])
    assert analysis.language.code == "en"
    assert any(e.type == "PERSON" for e in analysis.entities)


def test_pipeline_cache_is_keyed_and_safe_across_threads() -> None:
    exclude = ("tagger", "parser", "attribute_ruler", "lemmatizer")
    barrier = threading.Barrier(4)

    def load(_: int) -> SpacyLanguage:
        barrier.wait()
        return ner.get_pipeline(exclude)

    with ThreadPoolExecutor(4) as pool:
        pipelines = list(pool.map(load, range(4)))
    assert all(p is pipelines[0] for p in pipelines)
    assert pipelines[0] is not ner.get_pipeline()
    assert pipelines[0].pipe_names == ["tok2vec", "ner"]


def test_entities_are_result_models() -> None:
    entity = nlp.analyze("Paid $5.", [0]).entities[0]
    assert isinstance(entity, Entity)
    assert entity.model_dump() == {
        "type": "money", "source": "pattern", "text": "$5",
        "value": {"amount": "5", "currency": "USD"}, "page": 1, "start": 5, "end": 7,
    }  # fmt: skip
