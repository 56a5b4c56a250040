"""The document made searchable: its own pages, with the OCR text laid invisibly over them.

Like OCRmyPDF's output, with pikepdf doing the PDF work:

- a PDF keeps its pages as they are; pages that were OCRed get one more content stream, text
  in rendering mode 3 (neither filled nor stroked) over the scanned image;
- an image becomes a PDF through img2pdf, which embeds the pixels without re-encoding them
  (JPEG stays JPEG, 1-bit scans stay 1-bit), then gets the same text layer.

Each OCR line is drawn with a glyph-less font (one empty glyph, half an em wide, for every
character; Unicode through a ToUnicode map, as tesseract's own PDF renderer does), stretched
to the width of its box and sized to its height, so that a viewer highlights the words where
they are on the image. Boxes are mapped back through the page's scale, rotation and skew, so a
line read on a straightened page is drawn along the slanted line of the original.

Optionally the file is made PDF/A-2b: XMP metadata declaring it and an sRGB output intent.
That holds for scans and images; a PDF whose own pages break PDF/A (unembedded fonts,
transparency) is not repaired.
"""

from __future__ import annotations

import io
import logging
import math
import struct
import zlib
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

import img2pdf
import numpy as np
import pikepdf
from fontTools.fontBuilder import FontBuilder
from fontTools.pens.ttGlyphPen import TTGlyphPen
from pikepdf.canvas import ContentStreamBuilder
from PIL import Image, ImageCms, ImageOps, ImageSequence

from docproc import detect, page_geometry
from docproc.models import DocumentResult, PageResult
from docproc.settings import Settings

log = logging.getLogger(__name__)

FONT_NAME = pikepdf.Name("/DocprocGlyphLess")
_UNITS_PER_EM = 1000
_GLYPH_ADVANCE = 500  # every character is half an em wide
_ASCENT = 800
_DESCENT = -200
# Lines narrower than this (points) or with nothing to say are not drawn.
_MIN_SIDE_POINTS = 0.5
_ORIENTATION_TAG = 0x0112  # EXIF

SUPPORTED_TYPES = frozenset({detect.PDF, *detect.IMAGE_TYPES})


class SearchablePdfError(Exception):
    """The searchable PDF of a document could not be built (the document's result still stands)."""


def build(source: Path, result: DocumentResult, settings: Settings) -> bytes:
    """The searchable PDF of ``source`` (a PDF or an image) from its result, as bytes."""
    out = io.BytesIO()
    write(source, result, settings, out)
    return out.getvalue()


def write(source: Path, result: DocumentResult, settings: Settings, out: Path | io.BytesIO) -> None:
    """Write the searchable PDF of ``source`` (a PDF or an image) from its result to ``out``."""
    if result.media_type not in SUPPORTED_TYPES:
        raise SearchablePdfError(f"no searchable PDF for {result.media_type}")
    try:
        if result.media_type == detect.PDF:
            pdf = pikepdf.open(source)
            sizes = [_rendered_size(page, settings.dpi) for page in pdf.pages]
        else:
            pdf, sizes = _image_pdf(source)
        with pdf:
            if len(pdf.pages) != len(result.pages):
                raise SearchablePdfError(
                    f"{len(pdf.pages)} pages in the PDF, {len(result.pages)} in the result"
                )
            font = None
            for page_result, page, size in zip(result.pages, pdf.pages, sizes, strict=True):
                if page_result.text_source != "ocr" or not page_result.lines:
                    continue  # a text-layer page is kept as it is
                if font is None:
                    font = _register_font(pdf)
                _add_text_layer(pdf, page, page_result, size, font, settings)
            if settings.pdfa:
                _make_pdfa(pdf, result)
            pdf.save(out, compress_streams=True, object_stream_mode=pikepdf.ObjectStreamMode.generate)
    except (pikepdf.PdfError, img2pdf.ImageOpenError, OSError, ValueError) as exc:
        raise SearchablePdfError(f"{type(exc).__name__}: {exc}") from exc


def _rendered_size(page: pikepdf.Page, dpi: int) -> tuple[int, int]:
    """The pixel size pypdfium2 renders ``page`` at (ceil of its displayed size at ``dpi``)."""
    width, height = _displayed_size(page)
    return math.ceil(width * dpi / 72), math.ceil(height * dpi / 72)


def _displayed_size(page: pikepdf.Page) -> tuple[float, float]:
    box = page.cropbox
    width, height = abs(float(box[2]) - float(box[0])), abs(float(box[3]) - float(box[1]))
    return (height, width) if page.rotation % 180 else (width, height)


def _image_pdf(source: Path) -> tuple[pikepdf.Pdf, list[tuple[int, int]]]:
    """The image as a PDF, one page per frame, and each frame's size as the loader saw it."""
    sizes, turned = [], False
    with Image.open(source) as image:
        # A PNG's EXIF may follow its pixels, so asking for it decodes the frame (a tenth of a
        # second on a 300-dpi page): a PNG without an eXIf chunk is not asked.
        exif = image.format != "PNG" or "exif" in image.info or _png_has_exif(source)
        for frame in ImageSequence.Iterator(image):
            orientation = frame.getexif().get(_ORIENTATION_TAG, 1) if exif else 1
            turned = turned or orientation not in (0, 1)
            # Orientations 5 to 8 turn the image by a quarter: the loader saw it on its side.
            sizes.append(frame.size[::-1] if orientation in (5, 6, 7, 8) else frame.size)
    # Upright frames need no EXIF from img2pdf, which would decode a PNG once more to find none.
    rotation = img2pdf.Rotation.ifvalid if turned else img2pdf.Rotation.none
    try:
        data = img2pdf.convert(str(source), rotation=rotation)
    except (img2pdf.AlphaChannelError, img2pdf.ExifOrientationError, ValueError) as exc:
        # What img2pdf will not embed losslessly as it is (alpha, mirrored EXIF orientations)
        # is flattened the way the loader flattens it for OCR, and embedded as PNG.
        log.debug("img2pdf cannot embed %s as is (%s); re-encoding", source.name, exc)
        data = img2pdf.convert(*_flattened_frames(source))
    return pikepdf.open(io.BytesIO(data)), sizes


def _png_has_exif(path: Path) -> bool:
    """Whether a PNG file holds an eXIf chunk, from its chunk headers alone (no pixels read)."""
    with path.open("rb") as fh:
        fh.seek(len(detect.PNG_SIGNATURE))
        while len(header := fh.read(8)) == 8:
            length, kind = struct.unpack(">I4s", header)
            if kind == b"eXIf":
                return True
            if kind == b"IEND":
                break
            fh.seek(length + 4, io.SEEK_CUR)  # the chunk's data and its CRC
    return False


def _flattened_frames(source: Path) -> list[bytes]:
    frames = []
    with Image.open(source) as image:
        for frame in ImageSequence.Iterator(image):
            upright = ImageOps.exif_transpose(frame)
            if upright.mode not in ("1", "L", "RGB"):
                paper = Image.new("RGBA", upright.size, (255, 255, 255, 255))
                upright = Image.alpha_composite(paper, upright.convert("RGBA")).convert("RGB")
            buffer = io.BytesIO()
            upright.save(buffer, format="PNG")
            frames.append(buffer.getvalue())
    return frames


def _displayed_to_user(page: pikepdf.Page) -> np.ndarray:
    """Matrix from displayed page points (top-left origin, y down) to the page's user space."""
    box = [float(v) for v in page.cropbox]
    x0, y0, x1, y1 = min(box[0], box[2]), min(box[1], box[3]), max(box[0], box[2]), max(box[1], box[3])
    rows = {
        0: [[1.0, 0.0, x0], [0.0, -1.0, y1]],
        90: [[0.0, 1.0, x0], [1.0, 0.0, y0]],
        180: [[-1.0, 0.0, x1], [0.0, 1.0, y0]],
        270: [[0.0, -1.0, x1], [-1.0, 0.0, y1]],
    }[page.rotation % 360]
    return np.array([*rows, [0.0, 0.0, 1.0]])


def _add_text_layer(
    pdf: pikepdf.Pdf,
    page: pikepdf.Page,
    result: PageResult,
    source_size: tuple[int, int],
    font: pikepdf.Dictionary,
    settings: Settings,
) -> None:
    displayed = _displayed_size(page)
    to_points = np.diag([displayed[0] / source_size[0], displayed[1] / source_size[1], 1.0])
    to_user = (
        _displayed_to_user(page) @ to_points @ page_geometry.prepared_to_source(result, source_size, settings)
    )
    text = ContentStreamBuilder()
    text.push()
    text.begin_text()
    text.set_text_rendering(3)
    drawn = 0
    for line, size, matrix in _placed_lines(result, to_user):
        # The size goes with Tf and the matrix keeps only direction and stretch: PDFium's
        # text extraction drops characters whose font size it reads as 1 on a turned page.
        text.set_text_font(FONT_NAME, size)
        text.set_text_matrix(matrix)
        text.show_text(line.encode("utf-16-be"))
        drawn += 1
    text.end_text()
    text.pop()
    if not drawn:
        return
    page.add_resource(font, pikepdf.Name.Font, FONT_NAME, replace_existing=True)
    # The page's own content may leave the graphics state changed: wrap it, then draw over it.
    page.contents_add(pdf.make_stream(ContentStreamBuilder().push().build()), prepend=True)
    page.contents_add(pdf.make_stream(ContentStreamBuilder().pop().build() + text.build()))


def _placed_lines(result: PageResult, to_user: np.ndarray) -> Iterable[tuple[str, float, pikepdf.Matrix]]:
    """Each line's text, font size (points) and the text matrix that lays it over its box."""
    for line in result.lines:
        text = " ".join(line.text.split())
        x0, y0, x1, y1 = line.bbox
        height = y1 - y0
        if not text or x1 - x0 <= 0 or height <= 0:
            continue
        # Glyph space to prepared pixels: baseline at the descent above the box's bottom,
        # one em as high as the box, stretched so the line ends at the box's right edge.
        stretch = (x1 - x0) / (len(text) * _GLYPH_ADVANCE / _UNITS_PER_EM * height)
        baseline = y1 + _DESCENT / _UNITS_PER_EM * height
        glyph = np.array([[stretch * height, 0.0, x0], [0.0, -height, baseline], [0.0, 0.0, 1.0]])
        m = to_user @ glyph
        size = math.hypot(m[0, 1], m[1, 1])
        if size < _MIN_SIDE_POINTS:
            continue
        a, b, c, d = (float(v) / size for v in (m[0, 0], m[1, 0], m[0, 1], m[1, 1]))
        yield text, round(size, 3), pikepdf.Matrix(a, b, c, d, float(m[0, 2]), float(m[1, 2]))


@lru_cache(maxsize=1)
def glyphless_font_program() -> bytes:
    """A TrueType font with one glyph for every character: the text is there to be found, not seen."""
    builder = FontBuilder(_UNITS_PER_EM, isTTF=True)
    names = [".notdef", "cell"]
    builder.setupGlyphOrder(names)
    builder.setupCharacterMap({})
    # The glyph is never painted (rendering mode 3), but its outline fills the character's
    # cell: PDFium takes a text object's extent from its glyphs' boxes and leaves a turned
    # line with empty glyphs out of the text it extracts, as having no width.
    pen = TTGlyphPen(None)
    pen.moveTo((0, _DESCENT))
    pen.lineTo((0, _ASCENT))
    pen.lineTo((_GLYPH_ADVANCE, _ASCENT))
    pen.lineTo((_GLYPH_ADVANCE, _DESCENT))
    pen.closePath()
    builder.setupGlyf({".notdef": TTGlyphPen(None).glyph(), "cell": pen.glyph()})
    builder.setupHorizontalMetrics({name: (_GLYPH_ADVANCE, 0) for name in names})
    builder.setupHorizontalHeader(ascent=_ASCENT, descent=_DESCENT)
    builder.setupNameTable({"familyName": "DocprocGlyphLess", "styleName": "Regular"})
    builder.setupOS2(
        sTypoAscender=_ASCENT, sTypoDescender=_DESCENT, usWinAscent=_ASCENT, usWinDescent=-_DESCENT
    )
    builder.setupPost()
    out = io.BytesIO()
    builder.save(out)
    return out.getvalue()


_TO_UNICODE = b"""/CIDInit /ProcSet findresource begin
12 dict begin
begincmap
/CIDSystemInfo << /Registry (Adobe) /Ordering (UCS) /Supplement 0 >> def
/CMapName /Adobe-Identity-UCS def
/CMapType 2 def
1 begincodespacerange
<0000> <FFFF>
endcodespacerange
1 beginbfrange
<0000> <FFFF> <0000>
endbfrange
endcmap
CMapName currentdict /CMap defineresource pop
end
end
"""


def _register_font(pdf: pikepdf.Pdf) -> pikepdf.Dictionary:
    """A Type 0 font whose two-byte codes are UTF-16 code units, every one drawn by glyph 1."""
    program = pdf.make_stream(glyphless_font_program())
    descriptor = pikepdf.Dictionary(
        Type=pikepdf.Name.FontDescriptor,
        FontName=pikepdf.Name("/DocprocGlyphLess"),
        Flags=4,  # symbolic: its glyphs are not the standard Latin set
        FontBBox=[0, _DESCENT, _GLYPH_ADVANCE, _ASCENT],
        ItalicAngle=0,
        Ascent=_ASCENT,
        Descent=_DESCENT,
        CapHeight=_ASCENT,
        StemV=80,
        FontFile2=program,
    )
    # Every CID (a UTF-16 code unit) maps to glyph 1: 65536 big-endian glyph ids.
    cid_to_gid = pikepdf.Stream(pdf, zlib.compress(b"\x00\x01" * 65536))
    cid_to_gid.Filter = pikepdf.Name.FlateDecode
    cid_font = pikepdf.Dictionary(
        Type=pikepdf.Name.Font,
        Subtype=pikepdf.Name.CIDFontType2,
        BaseFont=pikepdf.Name("/DocprocGlyphLess"),
        CIDSystemInfo=pikepdf.Dictionary(Registry="Adobe", Ordering="Identity", Supplement=0),
        FontDescriptor=descriptor,
        DW=_GLYPH_ADVANCE,
        CIDToGIDMap=cid_to_gid,
    )
    font = pikepdf.Dictionary(
        Type=pikepdf.Name.Font,
        Subtype=pikepdf.Name.Type0,
        BaseFont=pikepdf.Name("/DocprocGlyphLess"),
        Encoding=pikepdf.Name("/Identity-H"),
        DescendantFonts=[cid_font],
        ToUnicode=pdf.make_stream(_TO_UNICODE),
    )
    return pdf.make_indirect(font)


def _make_pdfa(pdf: pikepdf.Pdf, result: DocumentResult) -> None:
    """Declare PDF/A-2b: XMP identification and an sRGB output intent for device colours."""
    with pdf.open_metadata(set_pikepdf_as_editor=False) as meta:
        meta["pdfaid:part"] = "2"
        meta["pdfaid:conformance"] = "B"
        meta["dc:title"] = Path(result.source).name
        meta["xmp:CreatorTool"] = f"docproc {result.pipeline_version}"
        meta["pdf:Producer"] = f"docproc {result.pipeline_version} (pikepdf {pikepdf.__version__})"
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    icc = pdf.make_stream(profile)
    icc.N = 3
    intent = pikepdf.Dictionary(
        Type=pikepdf.Name.OutputIntent,
        S=pikepdf.Name.GTS_PDFA1,
        OutputConditionIdentifier="sRGB",
        Info="sRGB IEC61966-2.1",
        DestOutputProfile=icc,
    )
    pdf.Root.OutputIntents = pikepdf.Array([pdf.make_indirect(intent)])
    # PDF/A leaves image smoothing to the viewer: scanners' PDFs often ask for it (6.2.8).
    for obj in pdf.objects:
        if (
            isinstance(obj, pikepdf.Stream)
            and obj.get("/Subtype") == pikepdf.Name.Image
            and "/Interpolate" in obj
        ):
            obj.Interpolate = False


__all__ = ["SUPPORTED_TYPES", "SearchablePdfError", "build", "glyphless_font_program", "write"]
