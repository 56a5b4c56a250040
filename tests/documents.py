"""Documents made by the tests: born-digital and encrypted PDFs, rotated and oversized images."""

from __future__ import annotations

from pathlib import Path

from fpdf import FPDF
from PIL import Image


def text_pdf(path: Path, lines: list[str], *, password: str | None = None) -> Path:
    pdf = FPDF()
    pdf.add_page()
    pdf.set_font("helvetica", size=12)
    for line in lines:
        pdf.cell(0, 8, line, new_x="LMARGIN", new_y="NEXT")
    if password is not None:
        pdf.set_encryption(owner_password=password + "-owner", user_password=password)
    pdf.output(str(path))
    return path


def huge_png(path: Path, side: int = 20000) -> Path:
    """A decompression bomb: tiny on disk, side x side pixels once decoded."""
    Image.new("1", (side, side), 1).save(path, optimize=True)
    return path


def rotated(src: Path, dest: Path, degrees: int) -> Path:
    """``src`` turned ``degrees`` counter-clockwise, as a page scanned sideways would be."""
    with Image.open(src) as image:
        image.convert("L").rotate(degrees, expand=True, fillcolor=255).save(dest)
    return dest


def pages_pdf(path: Path, pages: list[str]) -> Path:
    """A born-digital PDF with one line of text per page."""
    pdf = FPDF()
    pdf.set_font("helvetica", size=12)
    for text in pages:
        pdf.add_page()
        pdf.cell(0, 8, text)
    pdf.output(str(path))
    return path


# Written for these tests (no third-party text): one paragraph each in German, French, Spanish,
# Italian and Portuguese, with the accents an English-only reader loses.
MULTILINGUAL_LINES = (
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "Grüße aus München: die Straße ist nass, die Bäume sind grün.",
    "En été, chacun a ses raisons; l'élève préfère le café très chaud.",
    "Où est la bibliothèque? À côté de la gare, près du marché.",
    "El niño comió una manzana marrón en el jardín por la mañana.",
    "¿Dónde está la estación? Está a la izquierda, señor.",
    "La città è bella; perché non andiamo più spesso al mercato?",
    "O cão e o pão estão na mesa; a lição começa às nove horas.",
)


def multilingual_pdf(path: Path) -> Path:
    """A born-digital one-page PDF of ``MULTILINGUAL_LINES`` in 14-point Helvetica.

    Rasterized by the loader like any page without a text layer once its text layer is ignored
    (the tests render it themselves), it is the multilingual page the OCR tests read.
    """
    pdf = FPDF()
    pdf.add_page()
    pdf.set_font("helvetica", size=14)
    for line in MULTILINGUAL_LINES:
        pdf.cell(0, 10, line, new_x="LMARGIN", new_y="NEXT")
    pdf.output(str(path))
    return path
