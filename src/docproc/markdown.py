"""Markdown of a document: headings, paragraphs and lists in reading order, from its line boxes.

The lines come in reading order (``docproc.ocr.layout`` orders OCR lines; text-layer runs are
ordered the same way here). What a line is follows from its geometry, compared with the body
text of the document:

- a heading is a short line clearly taller than body text; the tallest heading size found in
  the document is level 1, the next level 2, and the rest level 3;
- a paragraph ends where the space to the next line is larger than the usual space between
  lines, where the next line starts a new column, or where the next line is indented
  (first-line indents) after a line that ends a sentence;
- a list item starts with a bullet or a number; lines indented under it continue it.

Lines of a paragraph are joined with spaces, and a word hyphenated across lines is rejoined.
Plain-text documents (no boxes) are split into paragraphs at blank lines.
"""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass

from docproc.models import DocumentResult, PageResult
from docproc.ocr.base import Segment
from docproc.ocr.layout import reading_order

# A heading is at least this much taller than body text, and at most this many words.
_HEADING_RATIO = 1.3
_HEADING_MAX_WORDS = 12
# Heights within this ratio of each other are one heading size.
_SAME_SIZE = 1.2
# A title-like line standing alone has at most this many words.
_TITLE_MAX_WORDS = 6
# A gap between lines wider than this share of the body height ends a paragraph.
_PARAGRAPH_GAP = 0.8
# A line starting this many body heights right of the one before is indented.
_INDENT = 0.8
# A line this many body heights above the one before starts a new column.
_COLUMN_JUMP = 1.0

# OCR reads round bullets as ©, ¢ or ® as often as •; a lone "o" is a hollow bullet.
_BULLET = re.compile(r"^(?:[•·▪◦●■□➢►\-–—*©¢®«»]|o(?=\s))\s+(?P<rest>.+)$")
_NUMBERED = re.compile(r"^(?P<num>\d{1,3}|[a-zA-Z])[.)]\s+(?P<rest>.+)$")
_SENTENCE_END = re.compile(r"[.!?:;)\"'’”]$")
_TITLE_END = re.compile(r"[.,;:!?]$")
_ESCAPE = re.compile(r"^([#>+=|]|-(?=\s)|\d+[.)](?=\s))")


@dataclass(frozen=True)
class _Line:
    text: str
    x0: float
    y0: float
    x1: float
    y1: float

    @property
    def height(self) -> float:
        """The line's type size, estimated from its box.

        A box's height alone says little: "Methods" has no descenders and stands as tall as
        body text with them. Width per character (about half an em in most fonts) says more
        but grows for capitals; the geometric mean of the two tells heading sizes apart and
        keeps a line of capitals at body size.
        """
        tall = max(self.y1 - self.y0, 1.0)
        em_by_width = 2.0 * max(self.x1 - self.x0, 1.0) / max(len(self.text), 1)
        return float((tall * em_by_width) ** 0.5)


@dataclass
class _Block:
    kind: str  # "heading", "paragraph", "bullet", "number"
    lines: list[_Line]
    height: float = 0.0
    number: str = ""


def render(result: DocumentResult) -> str:
    """The document as Markdown (CommonMark), ending with a newline."""
    pages = [_page_lines(page) for page in result.pages]
    if not any(pages):
        return _plain_text(result.text)
    heights = [line.height for lines in pages for line in lines for _ in line.text]
    body = statistics.median(heights) if heights else 1.0
    blocks = [block for lines in pages for block in _blocks(lines, body)]
    levels = _heading_levels([b.height for b in blocks if b.kind == "heading"])
    out: list[str] = []
    for block in blocks:
        text = _join([line.text for line in block.lines])
        if block.kind == "heading":
            out.append("#" * levels(block.height) + " " + text)
        elif block.kind == "bullet":
            out.append("- " + _escape(text))
        elif block.kind == "number":
            out.append(f"{block.number}. " + _escape(text))
        else:
            out.append(_escape(text))
    # Consecutive list items form one list: no blank line between them.
    parts: list[str] = []
    for index, (block, text) in enumerate(zip(blocks, out, strict=True)):
        if index:
            tight = block.kind in ("bullet", "number") and blocks[index - 1].kind == block.kind
            parts.append("\n" if tight else "\n\n")
        parts.append(text)
    return "".join(parts).strip() + "\n"


def _page_lines(page: PageResult) -> list[_Line]:
    if page.text_source == "text_layer":
        # Text-layer runs: one per font change; join those of a row and order columns.
        segments = [Segment(text=ln.text, bbox=ln.bbox, confidence=ln.confidence) for ln in page.lines]
        ordered = [(line.text, line.bbox) for line in reading_order(segments)]
    else:
        ordered = [(line.text, line.bbox) for line in page.lines]
    # OCR pages are measured in the pixels of the page as scaled for the engine, text-layer
    # pages at the rasterization DPI: in thousandths of the page's width, a document's pages
    # (mostly of one paper size) compare.
    unit = max(page.width, 1) / 1000
    return [
        _Line(" ".join(text.split()), *(float(v) / unit for v in box))
        for text, box in ordered
        if text.strip()
    ]


def _blocks(lines: list[_Line], body: float) -> list[_Block]:
    blocks: list[_Block] = []
    previous: _Line | None = None
    for line in lines:
        kind, number, text = _classify(line, body)
        if kind == "paragraph" and _stands_alone(line, previous, body):
            kind = "heading"
        line = _Line(text, line.x0, line.y0, line.x1, line.y1)
        current = blocks[-1] if blocks else None
        if current is not None and previous is not None and kind == "paragraph":
            if _continues(current, previous, line, body):
                current.lines.append(line)
                previous = line
                continue
        elif current is not None and kind == "heading" and current.kind == "heading" and previous is not None:
            # A heading on two lines: same size, right below.
            close = line.y0 - previous.y1 < _PARAGRAPH_GAP * body
            if close and max(line.height, current.height) / min(line.height, current.height) < _SAME_SIZE:
                current.lines.append(line)
                previous = line
                continue
        blocks.append(_Block(kind=kind, lines=[line], height=line.height, number=number))
        previous = line
    return blocks


def _classify(line: _Line, body: float) -> tuple[str, str, str]:
    """The kind of block ``line`` starts, its list number, and its text without the marker."""
    bullet = _BULLET.match(line.text)
    if bullet:
        return "bullet", "", bullet.group("rest")
    numbered = _NUMBERED.match(line.text)
    if numbered and numbered.group("num").isdigit():
        return "number", numbered.group("num"), numbered.group("rest")
    words = len(line.text.split())
    if line.height >= _HEADING_RATIO * body and words <= _HEADING_MAX_WORDS and not line.text.endswith("."):
        return "heading", "", line.text
    return "paragraph", "", line.text


def _stands_alone(line: _Line, previous: _Line | None, body: float) -> bool:
    """A short title-like line set apart from the text above: a heading in body-sized bold type.

    Size alone misses those; a few words starting with a capital, no closing punctuation, and
    more space above than between the lines of a paragraph make one.
    """
    words = line.text.split()
    if not words or len(words) > _TITLE_MAX_WORDS or not line.text[0].isupper():
        return False
    if _TITLE_END.search(line.text) or line.height < 0.95 * body:
        return False
    if previous is None:
        return True
    new_column = line.y0 < previous.y0 - _COLUMN_JUMP * body
    return new_column or line.y0 - previous.y1 > _PARAGRAPH_GAP * body


def _continues(block: _Block, previous: _Line, line: _Line, body: float) -> bool:
    """Whether ``line`` (plain text) goes on the block that ``previous`` ended."""
    if block.kind == "heading":
        return False
    gap = line.y0 - previous.y1
    if gap > _PARAGRAPH_GAP * body:
        return False
    if line.y0 < previous.y0 - _COLUMN_JUMP * body:
        # Next column: the paragraph goes on only if the last line stopped mid-sentence.
        return not _SENTENCE_END.search(previous.text)
    if block.kind in ("bullet", "number"):
        # A list item goes on with lines indented under its text, not back at its marker.
        return line.x0 > block.lines[0].x0 + 0.5 * body
    indented = line.x0 > previous.x0 + _INDENT * body
    return not (indented and _SENTENCE_END.search(previous.text))


def _heading_levels(heights: list[float]) -> _LevelOf:
    sizes: list[float] = []
    for height in sorted(heights, reverse=True):
        if not sizes or sizes[-1] / height >= _SAME_SIZE:
            sizes.append(height)
    return _LevelOf(sizes)


@dataclass(frozen=True)
class _LevelOf:
    sizes: list[float]

    def __call__(self, height: float) -> int:
        for level, size in enumerate(self.sizes, start=1):
            if height >= size / _SAME_SIZE:
                return min(level, 3)
        return 3


def _join(texts: list[str]) -> str:
    out = ""
    for text in texts:
        if out.endswith("-") and len(out) > 1 and out[-2].isalpha() and text[:1].islower():
            out = out[:-1] + text  # a word hyphenated across lines
        else:
            out = f"{out} {text}" if out else text
    return out


def _escape(text: str) -> str:
    """A paragraph that would read as Markdown syntax (a heading, a list) is escaped."""
    return _ESCAPE.sub(r"\\\1", text)


def _plain_text(text: str) -> str:
    paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n|\f", text)]
    return "\n\n".join(_escape(p) for p in paragraphs if p) + "\n"
