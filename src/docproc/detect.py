"""Media type detection from content (magic bytes), never from the file name."""

from __future__ import annotations

import codecs
from pathlib import Path

from docproc.errors import EmptyDocumentError, UnsupportedTypeError

PDF = "application/pdf"
PNG = "image/png"
JPEG = "image/jpeg"
TIFF = "image/tiff"
TEXT = "text/plain"

IMAGE_TYPES = frozenset({PNG, JPEG, TIFF})
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"  # a PNG file's first 8 bytes; its chunks follow
_SNIFF_BYTES = 8192
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (PNG_SIGNATURE, PNG),
    (b"\xff\xd8\xff", JPEG),
    (b"II*\x00", TIFF),
    (b"MM\x00*", TIFF),
    (b"II+\x00", TIFF),  # BigTIFF
    (b"MM\x00+", TIFF),
)
# Byte order marks and their codecs; UTF-32's come first, since they begin with UTF-16's.
_TEXT_BOMS: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xfe\x00\x00", "utf-32"),
    (b"\x00\x00\xfe\xff", "utf-32"),
    (b"\xef\xbb\xbf", "utf-8-sig"),
    (b"\xff\xfe", "utf-16"),
    (b"\xfe\xff", "utf-16"),
)
# Bytes that Windows-1252 leaves undefined; read as Latin-1 (C1 controls) instead.
_CP1252_UNDEFINED = frozenset(b"\x81\x8d\x8f\x90\x9d")
# Printable enough to be text: control characters are rare in real text (a stray ESC, a NUL-free
# binary header is not).
_MIN_PRINTABLE_SHARE = 0.95
_TEXT_CONTROLS = frozenset("\t\n\r\f\v")


def _legacy_bytes(exc: UnicodeError) -> tuple[str, int]:
    """Decode error handler: bytes that are not UTF-8 are Windows-1252 (a superset of Latin-1's
    printable characters), so Latin-1 text and UTF-8 text with a few legacy bytes both read right."""
    if not isinstance(exc, UnicodeDecodeError):
        raise exc
    chunk = exc.object[exc.start : exc.end]
    text = "".join(chr(b) if b in _CP1252_UNDEFINED else bytes((b,)).decode("cp1252") for b in chunk)
    return text, exc.end


codecs.register_error("docproc-legacy", _legacy_bytes)


def sniff(head: bytes) -> str:
    """The media type of a document whose first bytes are ``head``."""
    if not head:
        raise EmptyDocumentError("empty document (0 bytes)")
    for magic, media_type in _MAGIC:
        if head.startswith(magic):
            return media_type
    # The PDF header may be preceded by junk; readers accept it within the first 1 KiB.
    if b"%PDF-" in head[:1024]:
        return PDF
    if _looks_like_text(head):
        return TEXT
    raise UnsupportedTypeError(f"unsupported content (starts with {head[:8]!r})")


def sniff_file(path: Path) -> str:
    with path.open("rb") as fh:
        return sniff(fh.read(_SNIFF_BYTES))


def _looks_like_text(head: bytes) -> bool:
    """Text in any common encoding, whatever its first characters (blank lines, indentation)."""
    if head.startswith(tuple(bom for bom, _ in _TEXT_BOMS)):
        return True
    if b"\x00" in head:
        return False  # binary, or UTF-16/32 without a byte order mark (not supported)
    text = decode_text(head)
    printable = sum(ch.isprintable() or ch in _TEXT_CONTROLS for ch in text)
    return printable / len(text) > _MIN_PRINTABLE_SHARE


def decode_text(data: bytes) -> str:
    """Decode a plain-text document: by its byte order mark (UTF-8, UTF-16, UTF-32), else as
    UTF-8 where it is UTF-8 and Windows-1252/Latin-1 where it is not."""
    for bom, codec in _TEXT_BOMS:
        if data.startswith(bom):
            return data.decode(codec, errors="replace")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("utf-8", errors="docproc-legacy")
