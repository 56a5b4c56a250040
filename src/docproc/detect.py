"""Media type detection from content (magic bytes), never from the file name."""

from __future__ import annotations

from pathlib import Path

from docproc.errors import UnsupportedTypeError

PDF = "application/pdf"
PNG = "image/png"
JPEG = "image/jpeg"
TIFF = "image/tiff"
TEXT = "text/plain"

IMAGE_TYPES = frozenset({PNG, JPEG, TIFF})
_SNIFF_BYTES = 8192
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", PNG),
    (b"\xff\xd8\xff", JPEG),
    (b"II*\x00", TIFF),
    (b"MM\x00*", TIFF),
    (b"II+\x00", TIFF),  # BigTIFF
    (b"MM\x00+", TIFF),
)
_TEXT_BOMS = (b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff")


def sniff(head: bytes) -> str:
    """The media type of a document whose first bytes are ``head``."""
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
    if not head.strip():
        return False
    if head.startswith(_TEXT_BOMS):
        return True
    if b"\x00" in head:
        return False
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        # A multi-byte character cut at the sniff boundary is still text.
        if exc.start < len(head) - 4:
            return False
        text = head[: exc.start].decode("utf-8")
    printable = sum(ch.isprintable() or ch in "\t\n\r\f" for ch in text)
    return printable / max(len(text), 1) > 0.95


def decode_text(data: bytes) -> str:
    """Decode a plain-text document: UTF-8 or UTF-16 with a BOM, UTF-8 otherwise."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16")
    return data.decode("utf-8-sig", errors="replace")
