"""Loading documents into pages: a text layer where there is one, an image otherwise.

Every limit (bytes, pages, pixels) is checked before the expensive step it protects, so a
decompression bomb ends as a ``TooLargeError`` instead of an out-of-memory kill.
"""

from __future__ import annotations

import logging
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_raw
from PIL import Image, ImageSequence, UnidentifiedImageError

from docproc import detect
from docproc.errors import (
    CorruptDocumentError,
    EncryptedDocumentError,
    TooLargeError,
    UnsupportedTypeError,
)
from docproc.settings import Settings

log = logging.getLogger(__name__)

# PDFium is not thread-safe: one document operation at a time per process.
_PDFIUM_LOCK = threading.RLock()


@dataclass(frozen=True)
class LayerLine:
    """A run of text-layer text and its box, in pixels at the settings' DPI."""

    text: str
    bbox: tuple[int, int, int, int]


@dataclass(frozen=True)
class SourcePage:
    """One page as found in the document: a text layer, or an image to OCR."""

    number: int
    text: str | None
    image: Image.Image | None
    width: int = 0
    height: int = 0
    lines: tuple[LayerLine, ...] = ()


@dataclass(frozen=True)
class DocumentInfo:
    media_type: str
    page_count: int
    size_bytes: int


def inspect(path: Path, settings: Settings) -> DocumentInfo:
    """Detect the type, count the pages and check the limits, without rendering anything."""
    size = path.stat().st_size
    if size > settings.max_document_bytes:
        raise TooLargeError(f"{size} bytes exceeds max_document_bytes={settings.max_document_bytes}")
    media_type = detect.sniff_file(path)
    if media_type == detect.PDF:
        with _PDFIUM_LOCK, _open_pdf(path) as pdf:
            count = len(pdf)
            for index in range(count):
                width, height = pdf.get_page_size(index)
                _check_pixels(width * settings.dpi / 72, height * settings.dpi / 72, settings, index + 1)
    elif media_type in detect.IMAGE_TYPES:
        with _open_image(path) as image:
            count = getattr(image, "n_frames", 1)
            _check_page_count(count, settings)
            for number, frame in enumerate(ImageSequence.Iterator(image), start=1):
                _check_pixels(frame.width, frame.height, settings, number, frame.mode)
    else:
        count = 1
    _check_page_count(count, settings)
    return DocumentInfo(media_type=media_type, page_count=count, size_bytes=size)


def iter_pages(
    path: Path, media_type: str, settings: Settings, first: int = 1, last: int | None = None
) -> Iterator[SourcePage]:
    """Pages ``first``..``last`` (1-based, inclusive; all by default) in order.

    ``inspect`` must have accepted the document first. Pages outside the range are not decoded.
    """
    wanted = range(first, (last if last is not None else 1 << 31) + 1)
    if media_type == detect.PDF:
        yield from _pdf_pages(path, settings, wanted)
    elif media_type in detect.IMAGE_TYPES:
        yield from _image_pages(path, settings, wanted)
    elif media_type == detect.TEXT:
        if 1 in wanted:
            yield SourcePage(number=1, text=detect.decode_text(path.read_bytes()), image=None)
    else:
        raise UnsupportedTypeError(f"no loader for {media_type}")


def _check_page_count(count: int, settings: Settings) -> None:
    if count > settings.max_pages:
        raise TooLargeError(f"{count} pages exceeds max_pages={settings.max_pages}")


def bytes_per_pixel(mode: str) -> int:
    """Bytes per pixel of an image decoded by Pillow: 1 for bilevel, gray and palette images,
    2 for 16-bit ones, 4 for the rest (Pillow pads RGB to 4; 32-bit integers and floats)."""
    if mode in ("1", "L", "P"):
        return 1
    if mode.startswith("I;16"):
        return 2
    return 4


def _check_pixels(width: float, height: float, settings: Settings, page: int, mode: str = "L") -> None:
    """The page's pixels, and the memory they take decoded (a PDF page renders to 8-bit gray)."""
    pixels = int(width) * int(height)
    size = f"{int(width)}x{int(height)}"
    if pixels > settings.max_page_pixels:
        raise TooLargeError(
            f"page of {size} pixels exceeds max_page_pixels={settings.max_page_pixels}", page=page
        )
    depth = bytes_per_pixel(mode)
    if pixels * depth > settings.max_page_bytes:
        raise TooLargeError(
            f"page of {size} pixels in mode {mode} ({depth} bytes per pixel) takes "
            f"{pixels * depth:,} bytes decoded, exceeds max_page_bytes={settings.max_page_bytes:,}",
            page=page,
        )


def _open_pdf(path: Path) -> pdfium.PdfDocument:
    try:
        return pdfium.PdfDocument(path)
    except pdfium.PdfiumError as exc:
        if getattr(exc, "err_code", None) == pdfium_raw.FPDF_ERR_PASSWORD:
            raise EncryptedDocumentError("PDF is encrypted and no password was given") from exc
        raise CorruptDocumentError(f"unreadable PDF: {exc}") from exc


def _pdf_pages(path: Path, settings: Settings, wanted: range) -> Iterator[SourcePage]:
    scale = settings.dpi / 72
    with _PDFIUM_LOCK:
        pdf = _open_pdf(path)
    try:
        for index in range(wanted.start - 1, min(len(pdf), wanted.stop - 1)):
            with _PDFIUM_LOCK:
                try:
                    page = pdf[index]
                    width, height = page.get_size()
                    textpage = page.get_textpage()
                    text: str | None = textpage.get_text_bounded()
                    lines: tuple[LayerLine, ...] = ()
                    image = None
                    if text is not None and len(text.strip()) >= settings.min_text_layer_chars:
                        lines = _layer_lines(textpage, height, scale)
                    else:
                        text = None
                        image = page.render(scale=scale, grayscale=True).to_pil()
                    textpage.close()
                    page.close()
                except pdfium.PdfiumError as exc:
                    raise CorruptDocumentError(f"unreadable PDF page: {exc}", page=index + 1) from exc
            yield SourcePage(
                number=index + 1,
                text=_normalize_layer_text(text),
                image=image,
                width=round(width * scale),
                height=round(height * scale),
                lines=lines,
            )
    finally:
        with _PDFIUM_LOCK:
            pdf.close()


def _layer_lines(textpage: pdfium.PdfTextPage, page_height: float, scale: float) -> tuple[LayerLine, ...]:
    """PDFium's text rectangles (one per run of text on a line), top-left origin, in pixels."""
    lines = []
    for index in range(textpage.count_rects()):
        left, bottom, right, top = textpage.get_rect(index)
        text = _normalize_layer_text(textpage.get_text_bounded(left, bottom, right, top)) or ""
        if text.strip():
            box = (
                round(left * scale),
                round((page_height - top) * scale),
                round(right * scale),
                round((page_height - bottom) * scale),
            )
            lines.append(LayerLine(text=text.strip(), bbox=box))
    return tuple(lines)


def _normalize_layer_text(text: str | None) -> str | None:
    if text is None:
        return None
    # PDFium ends lines with CRLF and may emit NULs or soft hyphens from the font's encoding.
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "").replace("\xad", "")


def _open_image(path: Path) -> Image.Image:
    try:
        with warnings.catch_warnings():
            # Our own pixel limit applies; Pillow's bomb check would raise before we can name it.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(path)
    except Image.DecompressionBombError as exc:
        raise TooLargeError(str(exc)) from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise CorruptDocumentError(f"unreadable image: {exc}") from exc


def _image_pages(path: Path, settings: Settings, wanted: range) -> Iterator[SourcePage]:
    with _open_image(path) as image:
        for number, frame in enumerate(ImageSequence.Iterator(image), start=1):
            if number not in wanted:
                continue  # seeking past a frame reads its header, not its pixels
            _check_pixels(frame.width, frame.height, settings, number, frame.mode)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                    page = frame.copy()  # decodes this frame only; keeps info (EXIF) for orientation
            except Image.DecompressionBombError as exc:
                raise TooLargeError(str(exc), page=number) from exc
            except (OSError, SyntaxError, ValueError) as exc:
                raise CorruptDocumentError(f"unreadable image data: {exc}", page=number) from exc
            yield SourcePage(number=number, text=None, image=page)


__all__ = ["DocumentInfo", "LayerLine", "SourcePage", "inspect", "iter_pages"]
