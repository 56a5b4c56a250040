"""Type detection and loading: magic bytes, text layers, limits, bad input."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from PIL import Image

from docproc import detect, loader
from docproc.errors import (
    CorruptDocumentError,
    EmptyDocumentError,
    EncryptedDocumentError,
    TooLargeError,
    UnsupportedTypeError,
    permanent_error,
)
from docproc.settings import Settings
from tests.documents import huge_png, text_pdf


@pytest.fixture
def settings() -> Settings:
    return Settings()


@pytest.mark.parametrize(
    ("name", "media_type"),
    [
        ("phototest.tif", detect.TIFF),
        ("linn.png", detect.PNG),
        ("c02-22.pdf", detect.PDF),
        ("linn.txt", detect.TEXT),
    ],
)
def test_type_comes_from_content_not_name(corpus: Path, tmp_path: Path, name: str, media_type: str) -> None:
    disguised = tmp_path / "document.bin"
    shutil.copy(corpus / name, disguised)
    assert detect.sniff_file(disguised) == media_type


def test_jpeg_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "scan.pdf"  # the wrong extension on purpose
    Image.new("RGB", (10, 10), "white").save(path, format="JPEG")
    assert detect.sniff_file(path) == detect.JPEG


@pytest.mark.parametrize(
    "content",
    [
        b"GIF89a\x01\x00\x01\x00\x00\x00\x00",
        b"PK\x03\x04zipped",
        b"\x00\x01\x02\x03" * 100,
        b"\x1b\x02\x03\x04binary\x05\x06" * 50,
    ],
)
def test_anything_else_is_unsupported(content: bytes) -> None:
    with pytest.raises(UnsupportedTypeError):
        detect.sniff(content)


LETTER = "Dear Ms. Chen,\nThank you for the order of 5 March.\nGrüße, Zoë\n"


TEXT_CASES = [
    ("blank lines", b"\n" * 10_000 + LETTER.encode(), "\n" * 10_000 + LETTER),
    ("CRLF blank lines", b"\r\n" * 5_000 + LETTER.encode(), "\r\n" * 5_000 + LETTER),
    ("spaces and tabs", b" \t  " * 3_000 + LETTER.encode(), " \t  " * 3_000 + LETTER),
    ("short indentation", b"\n\n  \t" + LETTER.encode(), "\n\n  \t" + LETTER),
    ("only whitespace", b" \n\t" * 4_000, " \n\t" * 4_000),
    ("UTF-8 BOM", b"\xef\xbb\xbf" + LETTER.encode(), LETTER),
    ("UTF-16 LE BOM", LETTER.encode("utf-16"), LETTER),
    ("UTF-16 BE BOM", b"\xfe\xff" + ("\n\n" + LETTER).encode("utf-16-be"), "\n\n" + LETTER),
    ("UTF-32 BOM", LETTER.encode("utf-32"), LETTER),
    ("Latin-1", ("\n\n" + LETTER).encode("latin-1"), "\n\n" + LETTER),
    ("Windows-1252", "Total: 12 € – paid".encode("cp1252"), "Total: 12 € – paid"),
    ("Latin-1 after 8 KiB of ASCII", b"a" * 9000 + "é".encode("latin-1"), "a" * 9000 + "é"),
]


@pytest.mark.parametrize(("name", "content", "text"), TEXT_CASES, ids=[case[0] for case in TEXT_CASES])
def test_plain_text_is_text_whatever_it_starts_with(
    tmp_path: Path, settings: Settings, name: str, content: bytes, text: str
) -> None:
    path = tmp_path / "note.txt"
    path.write_bytes(content)
    info = loader.inspect(path, settings)
    assert info.media_type == detect.TEXT, name
    [page] = loader.iter_pages(path, info.media_type, settings)
    assert page.text == text, name


def test_an_empty_file_is_quarantined_as_empty(tmp_path: Path, settings: Settings) -> None:
    path = tmp_path / "empty.txt"
    path.write_bytes(b"")
    with pytest.raises(EmptyDocumentError, match="empty") as info:
        loader.inspect(path, settings)
    assert info.value.reason == "empty"
    assert permanent_error("empty", "x").reason == "empty"


def test_utf8_text_cut_mid_character_is_still_text() -> None:
    head = ("Übergröße " * 900).encode()[:8191]
    assert detect.sniff(head) == detect.TEXT


def test_born_digital_pdf_is_read_from_its_text_layer(tmp_path: Path, settings: Settings) -> None:
    path = text_pdf(tmp_path / "memo.pdf", ["Quarterly report", "Revenue grew by 12 percent in Q3."])
    info = loader.inspect(path, settings)
    pages = list(loader.iter_pages(path, info.media_type, settings))
    assert info.page_count == 1
    assert pages[0].image is None
    assert pages[0].text is not None
    assert "Revenue grew by 12 percent in Q3." in pages[0].text
    # A4 at the default 200 dpi; fpdf2 writes lines top down from a 10 mm margin.
    assert (pages[0].width, pages[0].height) == (1654, 2339)
    assert [line.text for line in pages[0].lines] == ["Quarterly report", "Revenue grew by 12 percent in Q3."]
    first, second = (line.bbox for line in pages[0].lines)
    assert 0 < first[0] < first[2] < pages[0].width
    assert first[1] < first[3] <= second[1] < second[3] < pages[0].height


def test_image_only_pdf_page_is_rasterized_at_the_configured_dpi(corpus: Path) -> None:
    settings = Settings(dpi=100)
    pages = list(loader.iter_pages(corpus / "c02-22.pdf", detect.PDF, settings))
    assert len(pages) == 1
    image = pages[0].image
    assert image is not None
    assert pages[0].text is None
    # The page is 384 x 470.88 points: 1/72 inch each.
    width, height = image.size
    assert abs(width - 384 * 100 / 72) <= 1
    assert abs(height - 470.88 * 100 / 72) <= 1


def test_multipage_pdf_counts_pages(corpus: Path, settings: Settings) -> None:
    assert loader.inspect(corpus / "multipage.pdf", settings).page_count == 6


def test_multipage_tiff_yields_every_frame(tmp_path: Path, settings: Settings) -> None:
    path = tmp_path / "pages.tif"
    frames = [Image.new("L", (100 + i, 50), 255) for i in range(3)]
    frames[0].save(path, save_all=True, append_images=frames[1:])
    info = loader.inspect(path, settings)
    pages = list(loader.iter_pages(path, info.media_type, settings))
    assert info.page_count == 3
    assert [p.image.size for p in pages if p.image] == [(100, 50), (101, 50), (102, 50)]


def test_corrupt_pdf(corpus: Path, settings: Settings) -> None:
    with pytest.raises(CorruptDocumentError):
        loader.inspect(corpus / "invalid.pdf", settings)


def test_encrypted_pdf(tmp_path: Path, settings: Settings) -> None:
    path = text_pdf(tmp_path / "secret.pdf", ["Salary statement"], password="hunter2")
    with pytest.raises(EncryptedDocumentError):
        loader.inspect(path, settings)


def test_truncated_png_is_corrupt(corpus: Path, tmp_path: Path, settings: Settings) -> None:
    path = tmp_path / "cut.png"
    path.write_bytes((corpus / "linn.png").read_bytes()[:5000])
    info = loader.inspect(path, settings)  # the header is intact
    with pytest.raises(CorruptDocumentError):
        list(loader.iter_pages(path, info.media_type, settings))


def test_decompression_bomb_is_too_large_without_decoding(tmp_path: Path, settings: Settings) -> None:
    path = huge_png(tmp_path / "bomb.png")
    with pytest.raises(TooLargeError) as raised:
        loader.inspect(path, settings)
    assert raised.value.reason == "too_large"


def test_limits_on_bytes_pages_and_pixels(corpus: Path) -> None:
    with pytest.raises(TooLargeError, match="max_document_bytes"):
        loader.inspect(corpus / "linn.png", Settings(max_document_bytes=1000))
    with pytest.raises(TooLargeError, match="max_pages"):
        loader.inspect(corpus / "multipage.pdf", Settings(max_pages=5))
    with pytest.raises(TooLargeError, match="max_page_pixels"):
        loader.inspect(corpus / "linn.png", Settings(max_page_pixels=2550 * 3300 - 1))
    assert loader.inspect(corpus / "linn.png", Settings(max_page_pixels=2550 * 3300)).page_count == 1


def test_pdf_page_pixels_are_checked_at_render_dpi(corpus: Path) -> None:
    # 384 x 470.88 pt at 600 dpi is 3200 x 3924 pixels.
    with pytest.raises(TooLargeError):
        loader.inspect(corpus / "c02-22.pdf", Settings(dpi=600, max_page_pixels=3200 * 3924 - 1))


def test_plain_text_with_bom(tmp_path: Path, settings: Settings) -> None:
    path = tmp_path / "note"
    path.write_bytes("Invoice total 10 €".encode("utf-16"))
    info = loader.inspect(path, settings)
    [page] = loader.iter_pages(path, info.media_type, settings)
    assert page.text == "Invoice total 10 €"
