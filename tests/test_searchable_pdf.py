"""Searchable PDFs: the text a viewer finds is the result's text, over the words on the page.

Documents go through the real pipeline (tesseract, the faster engine on these pages) into
local storage; the PDFs are read back with pypdfium2 and checked against the result and
against where the words are on the input, computed here from how the test made the input
(turned or slanted phototest), not from docproc's own geometry.
"""

from __future__ import annotations

import contextlib
import io
import math
import shutil
import struct
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pikepdf
import pypdfium2 as pdfium
import pytest
from fpdf import FPDF
from PIL import Image

from docproc import outputs, searchable_pdf
from docproc.models import DocumentResult
from docproc.settings import Settings
from docproc.storage import LocalStorage
from tests.processing import process_one

SKEW_DEGREES = 4.0
Point = tuple[float, float]


@dataclass(frozen=True)
class Word:
    text: str
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in the input image's pixels, y down

    @property
    def centre(self) -> Point:
        return ((self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2)


@dataclass(frozen=True)
class Processed:
    result: DocumentResult
    pdf: Path
    source: Path


def _run(folder: Path, settings: Settings) -> dict[str, Processed]:
    src, dst = LocalStorage(folder / "in"), LocalStorage(folder / "out")
    done = {}
    for obj in src.iter_objects():
        result = process_one(src, dst, obj, settings)
        done[obj.key] = Processed(
            result=result,
            pdf=folder / "out" / outputs.pdf_key(result.id, settings),
            source=folder / "in" / obj.key,
        )
    return done


def _skew_forward(size: tuple[int, int], turned: tuple[int, int]) -> Callable[[Point], Point]:
    """Where Pillow's ``rotate(SKEW_DEGREES, expand=True)`` puts a point of the upright page."""
    angle = math.radians(SKEW_DEGREES)
    cx, cy = size[0] / 2, size[1] / 2
    nx, ny = turned[0] / 2, turned[1] / 2

    def forward(p: Point) -> Point:
        dx, dy = p[0] - cx, p[1] - cy
        return (
            nx + dx * math.cos(angle) + dy * math.sin(angle),
            ny - dx * math.sin(angle) + dy * math.cos(angle),
        )

    return forward


def _inverse(forward: Callable[[Point], Point]) -> Callable[[Point], Point]:
    # Affine: solve from three points.
    o, ex, ey = forward((0, 0)), forward((1, 0)), forward((0, 1))
    a, b, c, d = ex[0] - o[0], ey[0] - o[0], ex[1] - o[1], ey[1] - o[1]
    det = a * d - b * c

    def back(p: Point) -> Point:
        x, y = p[0] - o[0], p[1] - o[1]
        return ((d * x - b * y) / det, (-c * x + a * y) / det)

    return back


@pytest.fixture(scope="module")
def scans(tmp_path_factory: pytest.TempPathFactory, phototest: Image.Image) -> dict[str, Processed]:
    """phototest upright, turned a quarter counter-clockwise, slanted by 4 degrees and stored
    turned with an EXIF orientation, and a PDF whose first page is born-digital and whose
    second is the scan, through the pipeline."""
    folder = tmp_path_factory.mktemp("searchable")
    (folder / "in").mkdir()
    gray = phototest.convert("L")
    gray.save(folder / "in" / "upright.png")
    gray.rotate(90, expand=True, fillcolor=255).save(folder / "in" / "quarter.png")
    gray.rotate(SKEW_DEGREES, expand=True, fillcolor=255, resample=Image.Resampling.BICUBIC).save(
        folder / "in" / "slanted.png"
    )
    _exif_turned_png(gray, folder / "in" / "exif.png")
    _mixed_pdf(folder / "in" / "mixed.pdf", gray)
    _turned_pdf(folder / "in" / "quarter.png", folder / "in" / "turned.pdf")
    return _run(folder, Settings(engine="tesseract", languages=("en",)))


def _mixed_pdf(path: Path, scan: Image.Image) -> None:
    pdf = FPDF(unit="pt", format=(480, 360))
    pdf.add_page()
    pdf.set_font("helvetica", size=14)
    pdf.text(40, 60, "A born-digital page with its own text layer.")
    pdf.add_page()
    buffer = io.BytesIO()
    scan.save(buffer, format="PNG")
    pdf.image(buffer, x=0, y=0, w=480, h=360)
    pdf.output(str(path))


def _exif_turned_png(upright: Image.Image, path: Path) -> None:
    """``upright`` stored turned a quarter counter-clockwise, with EXIF orientation 6 (turn it a
    quarter clockwise to show it) in an eXIf chunk after the pixels, where PNG allows it."""
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    upright.rotate(90, expand=True).save(buffer, format="PNG", exif=exif)
    data, chunks, at = buffer.getvalue(), [], 8
    while at < len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        chunks.append(data[at : at + 12 + length])
        at += 12 + length
    exif_chunk = next(c for c in chunks if c[4:8] == b"eXIf")
    chunks.remove(exif_chunk)
    chunks.insert(len(chunks) - 1, exif_chunk)  # just before IEND
    path.write_bytes(data[:8] + b"".join(chunks))


def _turned_pdf(sideways: Path, path: Path) -> None:
    """A page scanned sideways (``sideways``, text running upwards) that /Rotate 90 shows upright."""
    pdf = FPDF(unit="pt", format=(360, 480))
    pdf.add_page()
    pdf.image(str(sideways), x=0, y=0, w=360, h=480)
    buffer = io.BytesIO(bytes(pdf.output()))
    with pikepdf.open(buffer) as turned:
        turned.pages[0].rotate(90, relative=False)
        turned.save(path)


def _pdf_words(
    path: Path, index: int, image_size: tuple[int, int], *, user_space: bool = False
) -> tuple[str, list[Word]]:
    """The page's extracted text and its words, boxes in the input image's pixels.

    PDFium's character boxes are in the page's user space; with ``user_space`` they are scaled
    from the media box (the image as drawn, before /Rotate), otherwise from the page as shown.
    """
    pdf = pdfium.PdfDocument(path)
    try:
        page = pdf[index]
        if user_space:
            left, bottom, right, top = page.get_mediabox()
            width, height = right - left, top - bottom
        else:
            width, height = page.get_size()
        sx, sy = image_size[0] / width, image_size[1] / height
        textpage = page.get_textpage()
        count = textpage.count_chars()
        text = textpage.get_text_range()
        words: list[Word] = []
        current: list[tuple[str, tuple[float, float, float, float]]] = []
        for i in range(count + 1):
            char = textpage.get_text_range(i, 1) if i < count else " "
            if char.strip() and char != "\ufffe":
                current.append((char, textpage.get_charbox(i, loose=True)))
                continue
            if current:
                left = min(b[0] for _, b in current)
                bottom = min(b[1] for _, b in current)
                right = max(b[2] for _, b in current)
                top = max(b[3] for _, b in current)
                box = (left * sx, (height - top) * sy, right * sx, (height - bottom) * sy)
                words.append(Word("".join(c for c, _ in current), box))
                current = []
        return text, words
    finally:
        pdf.close()


def _collapse(text: str) -> str:
    # PDFium marks a hyphen that ends a line as a soft hyphen (U+FFFE).
    return " ".join(text.replace("\ufffe", "-").split())


def _check_words_on_lines(
    words: list[Word], reference: DocumentResult, to_reference: Callable[[Point], Point], tolerance: float
) -> None:
    """Every word's centre, taken back to the upright page, lies in a line of the upright page's
    result; nearly all of them in a line that reads the same word."""
    lines = reference.pages[0].lines
    same_text = 0
    for word in words:
        x, y = to_reference(word.centre)
        holders = [
            line
            for line in lines
            if line.bbox[0] - tolerance <= x <= line.bbox[2] + tolerance
            and line.bbox[1] - tolerance <= y <= line.bbox[3] + tolerance
        ]
        assert holders, f"{word.text!r} at {x:.0f},{y:.0f} lies on no OCR line"
        same_text += any(word.text in line.text.split() for line in holders)
    assert same_text >= 0.9 * len(words), f"only {same_text} of {len(words)} words on a line reading them"


def test_text_extracted_from_the_pdf_is_the_results_text(scans: dict[str, Processed]) -> None:
    for name, done in scans.items():
        assert done.pdf.is_file(), name
        # Beside the result: pdf/<id>-<settings>.pdf, as results/<id>-<settings>.json.
        assert done.pdf.parent.name == "pdf"
        assert done.pdf.name == f"{done.result.id}-{done.result.settings_fingerprint}.pdf"
        for page in done.result.pages:
            text, _ = _pdf_words(done.pdf, page.number - 1, (page.width, page.height))
            assert _collapse(text) == _collapse(page.text), f"{name} page {page.number}"
    assert "12 point text" in scans["upright.png"].result.text


def test_words_lie_on_their_ocr_boxes(scans: dict[str, Processed]) -> None:
    upright = scans["upright.png"].result
    page = upright.pages[0]
    assert (page.rotation, page.skew, page.width, page.height) == (0, 0.0, 640, 480)
    _, words = _pdf_words(scans["upright.png"].pdf, 0, (640, 480))
    assert len(words) >= 50
    _check_words_on_lines(words, upright, lambda p: p, tolerance=2)
    # Each word also stays within its line's height: the text is not drawn above or below it.
    for word in words:
        line = next(
            ln
            for ln in page.lines
            if ln.bbox[0] - 2 <= word.centre[0] <= ln.bbox[2] + 2
            and ln.bbox[1] <= word.centre[1] <= ln.bbox[3]
        )
        assert word.box[1] >= line.bbox[1] - 2, (word, line.bbox)
        assert word.box[3] <= line.bbox[3] + 2, (word, line.bbox)


def test_quarter_turned_page_keeps_its_geometry(scans: dict[str, Processed]) -> None:
    done = scans["quarter.png"]
    page = done.result.pages[0]
    assert page.rotation == 90
    with Image.open(done.source) as image:
        size = image.size
    assert size == (480, 640)
    with pikepdf.open(done.pdf) as pdf:  # the page is the input as it is, not turned upright
        box = pdf.pages[0].mediabox
        assert float(box[2]) / float(box[3]) == pytest.approx(480 / 640)
    _, words = _pdf_words(done.pdf, 0, size)
    assert len(words) >= 50
    # Pillow turned the upright page counter-clockwise: (x, y) went to (y, 640 - x).
    _check_words_on_lines(words, scans["upright.png"].result, lambda p: (640 - p[1], p[0]), tolerance=3)


def test_exif_oriented_png_shows_upright_with_its_words_on_their_lines(scans: dict[str, Processed]) -> None:
    # Its EXIF sits after the pixels: the PDF must still find it, and turn the page to show it.
    done = scans["exif.png"]
    assert searchable_pdf._png_has_exif(done.source)
    page = done.result.pages[0]
    assert (page.rotation, page.width, page.height) == (0, 640, 480)
    with pikepdf.open(done.pdf) as pdf:  # the stored pixels, shown turned a quarter clockwise
        assert int(pdf.pages[0].get("/Rotate", 0)) % 360 == 90
        box = pdf.pages[0].mediabox
        assert float(box[2]) / float(box[3]) == pytest.approx(480 / 640)
    # The words in the stored image's pixels (the page's user space, before /Rotate), which
    # Pillow turned counter-clockwise: (x, y) of the upright page went to (y, 640 - x).
    _, words = _pdf_words(done.pdf, 0, (480, 640), user_space=True)
    assert len(words) >= 50
    _check_words_on_lines(words, scans["upright.png"].result, lambda p: (640 - p[1], p[0]), tolerance=3)


def test_chunk_scan_finds_no_exif_in_a_png_without_it(scans: dict[str, Processed]) -> None:
    assert not searchable_pdf._png_has_exif(scans["upright.png"].source)


def test_deskewed_page_maps_back_onto_the_slanted_original(scans: dict[str, Processed]) -> None:
    done = scans["slanted.png"]
    page = done.result.pages[0]
    assert page.skew == pytest.approx(SKEW_DEGREES, abs=0.3)
    with Image.open(done.source) as image:
        size = image.size
    _, words = _pdf_words(done.pdf, 0, size)
    assert len(words) >= 50
    back = _inverse(_skew_forward((640, 480), size))
    _check_words_on_lines(words, scans["upright.png"].result, back, tolerance=4)


def test_pdf_keeps_its_pages_and_their_text_layers(scans: dict[str, Processed]) -> None:
    done = scans["mixed.pdf"]
    assert [p.text_source for p in done.result.pages] == ["text_layer", "ocr"]
    with pikepdf.open(done.source) as original, pikepdf.open(done.pdf) as made:
        assert len(made.pages) == 2
        # The born-digital page is untouched; the scanned page keeps its image and gains text.
        assert made.pages[0].obj.Contents.read_bytes() == original.pages[0].obj.Contents.read_bytes()
        assert set(made.pages[1].Resources.XObject.keys()) == set(original.pages[1].Resources.XObject.keys())
    page = done.result.pages[1]
    _, words = _pdf_words(done.pdf, 1, (page.width, page.height))
    assert len(words) >= 50


def test_structure_is_valid_for_qpdf(scans: dict[str, Processed], qpdf: str) -> None:
    for name, done in scans.items():
        check = subprocess.run([qpdf, "--check", str(done.pdf)], capture_output=True, text=True, check=False)
        assert check.returncode == 0, (name, check.stdout[-800:], check.stderr[-800:])
        assert "No syntax or stream encoding errors found" in check.stdout


def _verapdf(verapdf: str, paths: list[Path]) -> dict[str, str]:
    done = subprocess.run(
        [verapdf, "--flavour", "2b", "--format", "text", "-v", *map(str, paths)],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    verdicts = {}
    for line in done.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] in ("PASS", "FAIL"):
            verdicts[Path(parts[1]).name] = parts[0]
    assert verdicts, done.stdout[-800:] + done.stderr[-800:]
    return verdicts


def test_pdfa_output_passes_verapdf(scans: dict[str, Processed], verapdf: str, tmp_path: Path) -> None:
    settings = Settings(engine="tesseract", languages=("en",), pdfa=True)
    made = []
    for name in ("upright.png", "quarter.png", "slanted.png"):
        done = scans[name]
        path = tmp_path / f"{Path(name).stem}-pdfa.pdf"
        path.write_bytes(searchable_pdf.build(done.source, done.result, settings))
        made.append(path)
        plain = tmp_path / f"{Path(name).stem}-plain.pdf"
        shutil.copy(done.pdf, plain)
        made.append(plain)
    verdicts = _verapdf(verapdf, made)
    for path in made:
        # The validator tells the two apart: only the PDF/A option makes a PDF/A file.
        expected = "PASS" if path.stem.endswith("-pdfa") else "FAIL"
        assert verdicts[path.name] == expected, (path.name, verdicts)
    with pikepdf.open(made[0]) as pdf:
        assert pdf.open_metadata()["pdfaid:part"] == "2"


def test_setting_switches_the_pdf_off_and_changes_the_key(tmp_path: Path, phototest: Image.Image) -> None:
    (tmp_path / "in").mkdir()
    phototest.convert("L").save(tmp_path / "in" / "page.png")
    off = Settings(engine="tesseract", languages=("en",), searchable_pdf=False)
    assert off.fingerprint() != Settings(engine="tesseract", languages=("en",)).fingerprint()
    done = _run(tmp_path, off)["page.png"]
    assert not (tmp_path / "out" / "pdf").exists()
    assert not done.pdf.exists()


def test_rotated_pdf_page_gets_its_text_in_its_own_user_space(scans: dict[str, Processed]) -> None:
    """A sideways scan that /Rotate shows upright: read upright, its text drawn on the image as
    the page's user space holds it (sideways)."""
    done = scans["turned.pdf"]
    page = done.result.pages[0]
    assert page.rotation == 0  # PDFium rendered it upright
    text, _ = _pdf_words(done.pdf, 0, (640, 480))
    assert _collapse(text) == _collapse(page.text)
    with pikepdf.open(done.pdf) as pdf:
        assert pdf.pages[0].rotation == 90  # kept as it was
    # In user space the drawn image is quarter.png (480x640 px on 360x480 points).
    _, words = _pdf_words(done.pdf, 0, (480, 640), user_space=True)
    assert len(words) >= 50
    _check_words_on_lines(words, scans["upright.png"].result, lambda p: (640 - p[1], p[0]), tolerance=4)


def test_default_engine_lays_its_lines_on_the_page(tmp_path: Path, phototest: Image.Image) -> None:
    """easyocr, the default engine, joins its own segments into lines: the same checks hold."""
    (tmp_path / "in").mkdir()
    phototest.convert("L").save(tmp_path / "in" / "page.png")
    done = _run(tmp_path, Settings(engine="easyocr", languages=("en",)))["page.png"]
    page = done.result.pages[0]
    assert page.engine == "easyocr"
    text, words = _pdf_words(done.pdf, 0, (640, 480))
    assert _collapse(text) == _collapse(page.text)
    assert len(words) >= 50
    _check_words_on_lines(words, done.result, lambda p: p, tolerance=2)


def test_a_pdf_that_cannot_be_built_leaves_the_other_outputs(
    scans: dict[str, Processed], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    done = scans["upright.png"]
    # A result that does not fit its document (two pages for a one-page image).
    wrong = done.result.model_copy(update={"pages": [*done.result.pages, *done.result.pages]})
    settings = Settings(engine="tesseract", languages=("en",))
    dst = LocalStorage(tmp_path / "out")
    with pytest.raises(searchable_pdf.SearchablePdfError, match="1 pages in the PDF, 2 in the result"):
        searchable_pdf.build(done.source, wrong, settings)
    outputs.write_outputs(dst, wrong, settings, lambda: contextlib.nullcontext(done.source))
    assert not dst.exists(outputs.pdf_key(wrong.id, settings))
    assert dst.exists(outputs.markdown_key(wrong.id, settings))
    assert "no searchable PDF for upright.png" in caplog.text
