"""Markdown per document: structure from line boxes, in reading order.

A generated report with known headings, paragraphs and lists is read from its text layer and,
rendered to an image, by OCR; the two-column linn brochure checks reading order against its
reference transcription.
"""

from __future__ import annotations

import difflib
import re
import shutil
from pathlib import Path

import pypdfium2 as pdfium
import pytest
from fpdf import FPDF

from docproc import markdown, outputs
from docproc.models import DocumentResult, PageResult
from docproc.settings import Settings
from docproc.storage import LocalStorage
from tests.processing import process_one

TESSERACT = Settings(engine="tesseract", languages=("en",), searchable_pdf=False)

PARAGRAPH_1 = (
    "The river was sampled at twelve stations between March and October. Water quality "
    "improved at most of them, and the upstream stations met every target for the first time."
)
PARAGRAPH_2 = (
    "Each station was visited once a week by the same team, with the same instruments, "
    "calibrated before every visit."
)
PARAGRAPH_3 = (
    "Nitrate levels fell by a fifth on average. Two stations below the treatment works "
    "still exceed the limit after heavy rain."
)
BULLETS = ["Samples were taken at dawn.", "Results were checked twice."]
STEPS = ["Upgrade the treatment works.", "Publish the data every month."]

EXPECTED = "\n".join(
    [
        "# Annual Report on River Quality",
        "",
        PARAGRAPH_1,
        "",
        "## Methods",
        "",
        PARAGRAPH_2,
        "",
        *(f"- {b}" for b in BULLETS),
        "",
        "## Results",
        "",
        PARAGRAPH_3,
        "",
        *(f"{n}. {s}" for n, s in enumerate(STEPS, start=1)),
        "",
    ]
)


def _report_pdf(path: Path) -> Path:
    pdf = FPDF(unit="pt", format="A4")
    pdf.set_margins(72, 72, 72)
    pdf.add_page()

    def heading(text: str, size: int) -> None:
        pdf.set_font("helvetica", "B", size)
        pdf.multi_cell(0, size * 1.3, text)
        pdf.ln(8)

    def paragraph(text: str) -> None:
        pdf.set_font("helvetica", "", 11)
        pdf.multi_cell(0, 15, text)
        pdf.ln(12)

    def items(lines: list[str]) -> None:
        pdf.set_font("helvetica", "", 11)
        for line in lines:
            pdf.cell(0, 15, line, new_x="LMARGIN", new_y="NEXT")
        pdf.ln(12)

    heading("Annual Report on River Quality", 24)
    paragraph(PARAGRAPH_1)
    heading("Methods", 17)
    paragraph(PARAGRAPH_2)
    items([f"- {b}" for b in BULLETS])
    heading("Results", 17)
    paragraph(PARAGRAPH_3)
    items([f"{n}. {s}" for n, s in enumerate(STEPS, start=1)])
    pdf.output(str(path))
    return path


def _process(folder: Path, name: str, settings: Settings) -> tuple[DocumentResult, str]:
    src, dst = LocalStorage(folder / "in"), LocalStorage(folder / "out")
    result = process_one(src, dst, next(o for o in src.iter_objects() if o.key == name), settings)
    key = outputs.markdown_key(result.id, settings)
    assert key == f"markdown/{result.id}-{result.settings_fingerprint}.md"
    written = (folder / "out" / key).read_text()
    assert written == markdown.render(result)
    return result, written


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("markdown")
    (folder / "in").mkdir()
    _report_pdf(folder / "in" / "report.pdf")
    pdf = pdfium.PdfDocument(folder / "in" / "report.pdf")
    pdf[0].render(scale=200 / 72, grayscale=True).to_pil().save(folder / "in" / "report.png")
    pdf.close()
    return folder


def test_born_digital_report_becomes_its_structure(report: Path) -> None:
    result, text = _process(report, "report.pdf", TESSERACT)
    assert result.pages[0].text_source == "text_layer"
    assert text == EXPECTED


def test_scanned_report_gets_the_same_structure_by_ocr(report: Path) -> None:
    result, text = _process(report, "report.png", TESSERACT)
    assert result.pages[0].text_source == "ocr"
    headings = [line for line in text.splitlines() if line.startswith("#")]
    assert headings == ["# Annual Report on River Quality", "## Methods", "## Results"]
    assert [line for line in text.splitlines() if line.startswith("- ")] == [f"- {b}" for b in BULLETS]
    assert [line for line in text.splitlines() if re.match(r"\d\. ", line)] == [
        f"{n}. {s}" for n, s in enumerate(STEPS, start=1)
    ]
    blocks = text.strip().split("\n\n")
    assert len(blocks) == len(EXPECTED.strip().split("\n\n"))
    ratio = difflib.SequenceMatcher(None, text, EXPECTED).ratio()
    assert ratio > 0.97, text


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def test_two_column_brochure_reads_in_column_order(corpus: Path, tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    shutil.copy(corpus / "linn.png", tmp_path / "in" / "linn.png")
    _, text = _process(tmp_path, "linn.png", TESSERACT)
    reference = _words((corpus / "linn.txt").read_text())
    ours = _words(text)
    # Order: the words in the same sequence as the reference transcription. A row-by-row
    # reading across both columns scores far lower (measured below).
    order = difflib.SequenceMatcher(None, ours, reference, autojunk=False).ratio()
    rows = _words(" ".join(" ".join(line.text for line in p.lines) for p in _row_major(tmp_path)))
    interleaved = difflib.SequenceMatcher(None, rows, reference, autojunk=False).ratio()
    print(f"linn word-order similarity: markdown {order:.3f}, row by row {interleaved:.3f}")
    assert order >= 0.9
    assert order > interleaved + 0.1
    # Its section titles are bold body-sized type: found as short lines standing apart.
    headings = [line.lstrip("# ") for line in text.splitlines() if line.startswith("#")]
    for title in ("Recording a Sequence", "Editing", "Creating a Song", "Additional Features"):
        assert title in headings, headings
    assert headings.index("Editing") < headings.index("Creating a Song")  # left column first
    # The two bullet lists: 9 features at the top, 10 additional ones at the bottom.
    assert sum(line.startswith("- ") for line in text.splitlines()) >= 17
    assert "\n\nTo erase a wrong note, simply hold ERASE" in text


def _row_major(folder: Path) -> list[PageResult]:
    """linn's OCR lines sorted top to bottom, left to right, ignoring columns."""
    result = DocumentResult.model_validate_json(next((folder / "out" / "results").glob("*.json")).read_text())
    pages = []
    for page in result.pages:
        lines = sorted(page.lines, key=lambda ln: (ln.bbox[1] // 20, ln.bbox[0]))
        pages.append(page.model_copy(update={"lines": lines}))
    return pages


def test_plain_text_document_keeps_its_paragraphs(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "note.txt").write_text(
        "First line\nof a paragraph.\n\n# not a heading\n\n- not a list\n"
    )
    _, text = _process(tmp_path, "note.txt", TESSERACT)
    assert text == "First line of a paragraph.\n\n\\# not a heading\n\n\\- not a list\n"
