"""Reading order: from the text segments an engine found to lines in the order people read them.

Engines report pieces of text with boxes, row by row across the whole page. On a two-column
page that interleaves the columns, so the order is rebuilt from geometry alone, the same way
for every engine:

1. Find a gutter: a vertical strip, at least half a text height wide, that no segment crosses
   over a stretch of the page where both of its sides carry several lines of text. Margins do
   not qualify (text on one side only), nor do word gaps (the next line crosses them).
2. The stretch where both sides carry text is a column band: its left side is read before its
   right side. Lines on one side only at the band's top or bottom that stand apart from the
   column (more space than between its lines, like a section heading under a column) belong to
   the flow above or below the band. Everything above the band, the left column, the right
   column and everything below it are ordered recursively, so more columns and stacked
   column bands work too, and full-width lines (titles) break the flow where they are.
3. Inside a region without a gutter, segments on the same row join into one line; rows go
   top to bottom.

Tables are read column by column as well: their columns look like text columns to this test.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from docproc.ocr.base import OcrLine, Segment

# Engines' orientation tests read this many of the widest text lines of a crop, both ways up.
FLIP_SAMPLE_BOXES = 5

# A band needs this many segments on each side of the gutter, side by side over this many
# text heights: two lines that happen to be split at the same x are not a column.
_MIN_SIDE_SEGMENTS = 3
_MIN_BAND_HEIGHTS = 2.0
# A gutter is at least this many text heights wide. Engines join the words of a line across
# smaller gaps (easyocr below half a height), so what is left is wider; real gutters can be
# narrow (linn.png: about 0.7 text heights).
_GUTTER_HEIGHTS = 0.5
# A one-sided line at a band's top or bottom stands apart from its column when the space
# between them exceeds the column's usual space between lines by this many text heights.
# Engines' boxes carry margins, so the usual space is often negative (boxes overlap).
_DETACH_EXTRA_HEIGHTS = 0.5
# Segments overlapping vertically by this share of the smaller height are on the same row.
_SAME_ROW_OVERLAP = 0.5


@dataclass(frozen=True)
class _Band:
    gutter_x0: float
    gutter_x1: float
    left: tuple[int, ...]
    right: tuple[int, ...]
    above: tuple[int, ...]
    below: tuple[int, ...]


def reading_order(segments: Sequence[Segment]) -> tuple[OcrLine, ...]:
    """Lines of ``segments`` in reading order (columns left to right, rows top to bottom)."""
    segs = [s for s in segments if s.text.strip()]
    if not segs:
        return ()
    boxes = np.array([s.bbox for s in segs], dtype=np.float64).reshape(-1, 4)
    unit = float(np.median(boxes[:, 3] - boxes[:, 1]))
    unit = max(unit, 1.0)
    lines: list[OcrLine] = []
    for region in _regions(boxes, np.arange(len(segs)), unit):
        lines.extend(_rows([segs[i] for i in region]))
    return tuple(lines)


def _regions(boxes: np.ndarray, idx: np.ndarray, unit: float) -> list[np.ndarray]:
    """Split the segments ``idx`` into regions without gutters, in reading order."""
    band = _find_band(boxes, idx, unit)
    if band is None:
        return [idx]
    regions: list[np.ndarray] = []
    for part in (band.above, band.left, band.right, band.below):
        if part:
            regions.extend(_regions(boxes, np.array(part, dtype=np.int64), unit))
    return regions


def _find_band(boxes: np.ndarray, idx: np.ndarray, unit: float) -> _Band | None:
    if len(idx) < 2 * _MIN_SIDE_SEGMENTS:
        return None
    b = boxes[idx]
    x0, y0, x1, y1 = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    cy = (y0 + y1) / 2
    width = _GUTTER_HEIGHTS * unit
    best: tuple[float, float, float, float, float] | None = None  # score, gx0, gx1, run y0, run y1
    # A gutter starts where some segment ends: try every right edge as the strip's left side.
    for gx0 in np.unique(x1):
        gx1 = gx0 + width
        crossing = (x0 < gx1) & (x1 > gx0)
        for ry0, ry1 in _free_runs(y0[crossing], y1[crossing]):
            inside = (cy >= ry0) & (cy <= ry1)
            left = inside & (x1 <= gx0)
            right = inside & (x0 >= gx1)
            if left.sum() < _MIN_SIDE_SEGMENTS or right.sum() < _MIN_SIDE_SEGMENTS:
                continue
            overlap = min(y1[left].max(), y1[right].max()) - max(y0[left].min(), y0[right].min())
            if overlap < _MIN_BAND_HEIGHTS * unit:
                continue
            if best is None or overlap > best[0]:
                best = (overlap, float(gx0), float(gx1), ry0, ry1)
    if best is None:
        return None
    _, gx0, gx1, ry0, ry1 = best
    inside = (cy >= ry0) & (cy <= ry1)
    left = inside & (x1 <= gx0)
    right = inside & (x0 >= gx1)
    top = max(y0[left].min(), y0[right].min())
    bottom = min(y1[left].max(), y1[right].max())
    detached = np.zeros(len(idx), dtype=bool)
    for side in (left, right):
        limit = _usual_gap(side, y0, y1, unit) + _DETACH_EXTRA_HEIGHTS * unit
        detached |= _detached(side, y0, y1, cy, top, bottom, limit)
    above = (cy < ry0) | (detached & (cy < top))
    below = (cy > ry1) | (detached & (cy > bottom))
    return _Band(
        gutter_x0=gx0,
        gutter_x1=gx1,
        left=tuple(int(i) for i in idx[left & ~detached]),
        right=tuple(int(i) for i in idx[right & ~detached]),
        above=tuple(int(i) for i in idx[above]),
        below=tuple(int(i) for i in idx[below]),
    )


def _free_runs(y0: np.ndarray, y1: np.ndarray) -> list[tuple[float, float]]:
    """The vertical stretches (from -inf to +inf) not covered by any of the intervals."""
    runs: list[tuple[float, float]] = []
    start = -np.inf
    for a, b in sorted(zip(y0.tolist(), y1.tolist(), strict=True)):
        if a > start:
            runs.append((start, a))
        start = max(start, b)
    runs.append((start, np.inf))
    return runs


def _usual_gap(side: np.ndarray, y0: np.ndarray, y1: np.ndarray, unit: float) -> float:
    """Median space between successive lines of one column (segments of one row excluded)."""
    members = np.flatnonzero(side)
    order = members[np.argsort(y0[members])]
    gaps = y0[order[1:]] - y1[order[:-1]]
    gaps = gaps[gaps > -0.5 * unit]
    return float(np.median(gaps)) if gaps.size else 0.0


def _detached(
    side: np.ndarray,
    y0: np.ndarray,
    y1: np.ndarray,
    cy: np.ndarray,
    top: float,
    bottom: float,
    limit: float,
) -> np.ndarray:
    """Segments of one side above ``top`` or below ``bottom`` that stand apart from the column."""
    out = np.zeros(len(side), dtype=bool)
    members = np.flatnonzero(side)
    # Tail: walk down from the band's bottom; the first wide gap detaches the rest.
    tail = sorted(members[cy[members] > bottom], key=lambda i: y0[i])
    reach = y1[members[cy[members] <= bottom]].max(initial=-np.inf)
    cut = False
    for i in tail:
        cut = cut or y0[i] - reach > limit
        out[i] = cut
        reach = max(reach, y1[i])
    # Head: walk up from the band's top the same way.
    head = sorted(members[cy[members] < top], key=lambda i: -y1[i])
    reach = y0[members[cy[members] >= top]].min(initial=np.inf)
    cut = False
    for i in head:
        cut = cut or reach - y1[i] > limit
        out[i] = cut
        reach = min(reach, y0[i])
    return out


def _rows(segs: Sequence[Segment]) -> list[OcrLine]:
    """Join the segments of one column region into lines, top to bottom."""
    rows: list[list[Segment]] = []
    row_y0 = row_y1 = 0.0
    for seg in sorted(segs, key=lambda s: (s.bbox[1] + s.bbox[3]) / 2):
        sy0, sy1 = seg.bbox[1], seg.bbox[3]
        if rows:
            overlap = min(row_y1, sy1) - max(row_y0, sy0)
            smaller = min(row_y1 - row_y0, sy1 - sy0)
            if smaller > 0 and overlap >= _SAME_ROW_OVERLAP * smaller:
                rows[-1].append(seg)
                row_y0, row_y1 = min(row_y0, sy0), max(row_y1, sy1)
                continue
        rows.append([seg])
        row_y0, row_y1 = sy0, sy1
    return [_join(sorted(row, key=lambda s: s.bbox[0])) for row in rows]


def _join(row: Sequence[Segment]) -> OcrLine:
    text = " ".join(s.text.strip() for s in row)
    chars = sum(len(s.text.strip()) for s in row)
    confidence = sum(s.confidence * len(s.text.strip()) for s in row) / chars
    bbox = (
        min(s.bbox[0] for s in row),
        min(s.bbox[1] for s in row),
        max(s.bbox[2] for s in row),
        max(s.bbox[3] for s in row),
    )
    return OcrLine(text=text, bbox=bbox, confidence=min(1.0, max(0.0, confidence)))


def ink_line_boxes(gray: np.ndarray) -> list[list[int]]:
    """Boxes (x0, x1, y0, y1) of text lines found by smearing ink sideways, widest first.

    A horizontal closing joins the letters and words of a line but not the lines above and
    below; blobs much wider than high are lines of text.
    """
    height, width = gray.shape
    _, ink = cv2.threshold(gray, 0, 255, cv2.THRESH_BINARY_INV | cv2.THRESH_OTSU)
    if np.count_nonzero(ink) > ink.size // 2:
        ink = cv2.bitwise_not(ink)
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (max(3, width // 40), 1))
    lines = cv2.morphologyEx(ink, cv2.MORPH_CLOSE, kernel)
    count, _, stats, _ = cv2.connectedComponentsWithStats(lines, connectivity=8)
    boxes = []
    for x, y, w, h, _area in stats[1:count].tolist():
        if h < 8 or w < 3 * h or h > height // 3:
            continue
        margin = max(2, h // 10)
        boxes.append(
            [max(0, x - margin), min(width, x + w + margin), max(0, y - margin), min(height, y + h + margin)]
        )
    boxes.sort(key=lambda b: b[1] - b[0], reverse=True)
    return boxes
