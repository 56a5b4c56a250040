"""Page images before OCR: 8-bit grayscale, a resolution the engine reads well, upright, straight.

Engines only ever see what ``prepare_page`` returns: a uint8 HxW array, dark text on light.
Sideways text and skew are found cheaply from the ink itself (projection profiles over ink
pixels); only the upright-or-upside-down question asks the engine (``upright_turn``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from PIL import Image, ImageOps

from docproc.ocr.base import OcrEngine
from docproc.settings import Settings

log = logging.getLogger(__name__)

_WHITE = 255
# The projection searches run on a copy of the page no longer than this: enough to resolve a
# text line's x-height and 0.05 degrees of skew, cheap enough to run on every page.
_ANALYSIS_SIDE = 1200
# A page's projections are scored on at most this many of its ink points, drawn at random: about
# a hundred scores a page, each costing in proportion. Measured on the bench pages and linn and
# phototest leaned by -2.5 to 7 degrees: 60,000 finds the angles 150,000 does (within 0.05
# degrees) in 40% of the time; 25,000 starts to drift.
_MAX_INK_POINTS = 60_000
_MAX_SKEW = 10.0
_COARSE_STEP = 0.5
_FINE_STEP = 0.05
# Below this, a correction would only blur the page.
_MIN_SKEW = 0.1
# Paper kept around the ink's box when a deskewed page's canvas is cut to it (page pixels).
_KEEP_MARGIN = 32
# Text lines turned sideways: the column profile must beat the row profile by this factor.
_VERTICAL_RATIO = 1.5
# Upside-down: reading the turned crop must be this much more confident than reading it as is.
_FLIP_MARGIN = 0.15

Box = tuple[int, int, int, int]  # x0, y0, x1, y1


@dataclass(frozen=True)
class PreparedPage:
    """A page ready for an engine, and what was done to it."""

    image: np.ndarray  # uint8 HxW, what the engine reads
    rotation: int  # clockwise degrees applied to make text upright: 0, 90, 180, 270
    skew: float  # degrees corrected: the text leaned this much counter-clockwise; turned back
    scale: float  # factor applied to the source image's pixels


# Deep images are converted a strip of rows at a time, so the float temporaries of the
# conversion stay this small (8 MiB per float64 array) whatever the page's size.
_STRIP_PIXELS = 1 << 20
_ORIENTATION_TAG = 0x0112


def _upright(image: Image.Image) -> Image.Image:
    """The image turned per its EXIF orientation; the image itself (not a copy) when it is upright."""
    if image.getexif().get(_ORIENTATION_TAG, 1) in (0, 1):
        return image
    return ImageOps.exif_transpose(image)


def _is_deep(mode: str) -> bool:
    return mode.startswith("I") or mode == "F"


def to_gray8(image: Image.Image) -> Image.Image:
    """The image upright per its EXIF orientation, as 8-bit grayscale ("L").

    Transparent pixels become white (paper), not black; 16-bit and float samples are scaled
    to 0..255 rather than clipped.
    """
    image = _upright(image)
    mode = image.mode
    if mode == "L":
        return image.copy()
    if mode == "1":
        return image.convert("L")
    if _is_deep(mode):
        return Image.fromarray(_deep_to_uint8(image))
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        mode = image.mode
    if mode in ("LA", "La", "PA", "RGBA", "RGBa"):
        rgba = image.convert("RGBA")
        paper = Image.new("RGBA", rgba.size, (_WHITE, _WHITE, _WHITE, 255))
        return Image.alpha_composite(paper, rgba).convert("L")
    if mode != "RGB":
        # CMYK, YCbCr, LAB, HSV: Pillow knows how to get to RGB, and from there to luma.
        image = image.convert("RGB")
    return image.convert("L")


def to_gray8_array(image: Image.Image) -> np.ndarray:
    """:func:`to_gray8` as a uint8 HxW array, without a second copy of a deep page."""
    upright = _upright(image)
    if _is_deep(upright.mode):
        return _deep_to_uint8(upright)
    return np.array(to_gray8(upright), dtype=np.uint8)


def _strips(image: Image.Image | np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """Row strips of an image's samples, as arrays of its own dtype, with their first row."""
    if isinstance(image, np.ndarray):
        height, width = image.shape[:2]
    else:
        width, height = image.size
    rows = max(1, _STRIP_PIXELS // max(width, 1))
    for top in range(0, height, rows):
        bottom = min(height, top + rows)
        if isinstance(image, np.ndarray):
            yield top, image[top:bottom]
        else:
            yield top, np.asarray(image.crop((0, top, width, bottom)))


def _deep_to_uint8(image: Image.Image | np.ndarray) -> np.ndarray:
    """16-bit, 32-bit and float samples to 0..255 (Pillow's own convert clips them at 255).

    Two passes over row strips: the range of the samples, then the conversion of each strip
    into the output. Memory is the output (one byte per pixel) and one strip's temporaries,
    instead of several float64 copies of the whole page (26 to 36 bytes per pixel).
    """
    low, high = np.inf, -np.inf
    dtype: np.dtype[Any] | None = None
    for _, strip in _strips(image):
        dtype = strip.dtype
        if strip.dtype.kind == "f":
            finite = strip[np.isfinite(strip)]
            if finite.size:
                low, high = min(low, float(finite.min())), max(high, float(finite.max()))
        elif strip.size:
            low, high = min(low, float(strip.min())), max(high, float(strip.max()))
    height, width = (image.shape[0], image.shape[1]) if isinstance(image, np.ndarray) else image.size[::-1]
    out = np.empty((height, width), dtype=np.uint8)
    if dtype is None:
        return out
    if low > high:  # no (finite) sample at all
        low, high = (0.0, 1.0) if dtype.kind == "f" else (0.0, 0.0)
    offset, factor = 0.0, 1.0
    nan = 1.0 if high <= 1.0 else high  # unknown samples are paper
    if dtype.kind == "f":
        if low >= 0.0 and high <= 1.0:
            factor = 255.0  # float images conventionally hold 0..1
        elif low < 0.0 or high > 255.0:
            offset, factor = low, 255.0 / max(high - low, 1e-12)
    elif high > 65535.0 or low < 0.0:
        offset, factor = low, 255.0 / max(high - low, 1.0)
    elif high > 255.0 or (dtype.itemsize >= 2 and dtype.kind == "u"):
        factor = 1.0 / 257.0  # 65535 -> 255
    for top, strip in _strips(image):
        values = strip.astype(np.float64)
        if dtype.kind == "f":
            values = np.nan_to_num(values, nan=nan)
        if offset:
            values -= offset
        if factor != 1.0:
            values *= factor
        np.rint(values, out=values)
        np.clip(values, 0, 255, out=values)
        out[top : top + strip.shape[0]] = values
    return out


def scale_factor(width: int, height: int, min_side: int, max_side: int) -> float:
    """Factor that brings the longer side into [min_side, max_side]; 1.0 when it already is."""
    longer = max(width, height)
    if longer <= 0:
        return 1.0
    if longer < min_side:
        return min_side / longer
    if longer > max_side:
        return max_side / longer
    return 1.0


def scaled_gray(image: Image.Image, settings: Settings) -> tuple[np.ndarray, float]:
    """The page as 8-bit grayscale with its longer side in the OCR range, and the factor applied."""
    gray = to_gray8_array(image)
    scale = scale_factor(gray.shape[1], gray.shape[0], settings.ocr_min_side, settings.ocr_max_side)
    return (_resize(gray, scale) if scale != 1.0 else gray), scale


def prepare_page(image: Image.Image, settings: Settings, rotation: int | None = None) -> PreparedPage:
    """8-bit grayscale, scaled, turned and deskewed page (see ``straighten``)."""
    gray, scale = scaled_gray(image, settings)
    return straighten(gray, scale, settings, rotation)


def straighten(
    gray: np.ndarray,
    scale: float,
    settings: Settings,
    rotation: int | None = None,
    leaning_read: float = 0.0,
) -> PreparedPage:
    """``gray`` (a ``scaled_gray`` page) turned clockwise by ``rotation`` degrees, then deskewed
    unless it leans less than ``leaning_read`` degrees (what the engine reads through itself,
    ``OcrEngine.reads_leaning_below``).

    Without ``rotation``, the page gets a quarter turn when its text lines run top to bottom
    (with ``settings.detect_orientation``): cheap, from the ink alone. Upright or upside down
    needs the engine's opinion, which costs a reading: ``upright_turn`` asks it, and only
    ``pipeline`` decides when that is worth it.
    """
    ink: _Ink | None = None
    analysed = False  # whether ``ink`` is of ``gray`` as it now is (None then: too little ink)
    if rotation is None:
        rotation = 0
        if settings.detect_orientation:
            ink, analysed = _Ink.of(gray), True
            if ink is not None and ink.runs_vertically():
                rotation = 90
    rotation %= 360
    if rotation:
        gray = rotate_quadrant(gray, rotation)
        analysed = False
    skew = 0.0
    if settings.deskew:
        if not analysed:
            ink = _Ink.of(gray)
        skew = 0.0 if ink is None else ink.skew()
        if ink is not None and abs(skew) >= max(_MIN_SKEW, leaning_read):
            gray = rotate_small(gray, skew, keep=ink.box)
        else:
            skew = 0.0
    log.debug("page prepared: scale %.3f, rotation %d, skew %.2f", scale, rotation, skew)
    return PreparedPage(image=np.ascontiguousarray(gray), rotation=rotation, skew=skew, scale=scale)


def upright_turn(gray: np.ndarray, engine: OcrEngine) -> int:
    """Clockwise degrees (0, 90, 180 or 270) that turn a prepared page upright, in the engine's
    opinion: its own orientation detector where it has one (tesseract's OSD), else whether it
    reads a crop of the page clearly better turned by 180 degrees."""
    own = engine.detect_rotation(gray)
    if own is not None:
        return own % 360
    return 180 if is_upside_down(gray, engine) else 0


def _resize(gray: np.ndarray, factor: float) -> np.ndarray:
    height, width = gray.shape
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    # Area averaging keeps thin strokes when shrinking; cubic keeps edges sharp when enlarging.
    interpolation = cv2.INTER_AREA if factor < 1 else cv2.INTER_CUBIC
    return np.asarray(cv2.resize(gray, size, interpolation=interpolation), dtype=np.uint8)


def rotate_quadrant(gray: np.ndarray, clockwise: int) -> np.ndarray:
    """``gray`` turned clockwise by 0, 90, 180 or 270 degrees."""
    turns = (clockwise // 90) % 4
    if clockwise % 90:
        raise ValueError(f"quadrant rotation must be a multiple of 90 degrees, got {clockwise}")
    # np.rot90 turns counter-clockwise for positive k.
    return np.ascontiguousarray(np.rot90(gray, k=-turns))


def rotate_small(gray: np.ndarray, skew: float, keep: Box | None = None) -> np.ndarray:
    """Turn a page whose text leans ``skew`` degrees counter-clockwise back, on a white canvas.

    Without ``keep`` the canvas grows so that no corner of the page is cut off. With ``keep``
    (the box of the page's ink, in ``gray``'s pixels) it keeps the page's size and grows only
    as far as that box turned needs: the corners it cuts are paper. Measured on the bench's
    skewed pages (c02-22 at 0.7 degrees, page 4 of multipage.pdf at 1.95): the fully grown
    canvas cost rapidocr 3-15% more CPU than this one, for the same text.
    """
    height, width = gray.shape
    # cv2 angles are counter-clockwise: undoing a counter-clockwise lean is a negative angle.
    matrix = cv2.getRotationMatrix2D((width / 2, height / 2), -skew, 1.0)
    cos, sin = abs(matrix[0, 0]), abs(matrix[0, 1])
    new_w = int(np.ceil(height * sin + width * cos))
    new_h = int(np.ceil(height * cos + width * sin))
    if keep is not None:
        x0, y0, x1, y1 = keep
        corners = np.array([[x0, y0], [x1, y0], [x0, y1], [x1, y1]], dtype=np.float64)
        turned = corners @ matrix[:, :2].T + matrix[:, 2] - (width / 2, height / 2)
        half_w, half_h = np.abs(turned).max(axis=0) + _KEEP_MARGIN
        new_w = min(new_w, max(width, int(np.ceil(2 * half_w))))
        new_h = min(new_h, max(height, int(np.ceil(2 * half_h))))
    matrix[0, 2] += new_w / 2 - width / 2
    matrix[1, 2] += new_h / 2 - height / 2
    out = cv2.warpAffine(
        gray,
        matrix,
        (new_w, new_h),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=_WHITE,
    )
    return np.asarray(out, dtype=np.uint8)


def _ink_mask(gray: np.ndarray) -> tuple[np.ndarray, float]:
    """Binary ink mask of a reduced copy of the page, and the reduction factor."""
    factor = min(1.0, _ANALYSIS_SIDE / max(gray.shape))
    small = _resize(gray, factor) if factor < 1.0 else gray
    _, mask = cv2.threshold(small, 0, 1, cv2.THRESH_BINARY_INV | cv2.THRESH_OTSU)
    ink = np.asarray(mask, dtype=bool)
    if ink.mean() > 0.5:
        ink = ~ink  # light text on a dark ground: the minority class is the ink
    return ink, factor


class _Ink:
    """The ink points of a page's analysis copy, and the projection scores asked of them so far:
    the orientation check and the skew search share half their angles, and a page is analysed once."""

    def __init__(self, xs: np.ndarray, ys: np.ndarray, box: Box) -> None:
        self._xs, self._ys = xs, ys
        self.box = box  # of all the ink, in the page's own pixels
        self._scores: dict[tuple[bool, float], float] = {}

    @classmethod
    def of(cls, gray: np.ndarray) -> _Ink | None:
        """The page's ink, or None for a page with too little of it to judge."""
        ink, factor = _ink_mask(gray)
        ys, xs = np.nonzero(ink)
        if len(xs) < 200:
            return None
        # One pixel of the analysis copy is 1 / factor of the page's: the box takes them whole.
        box = (
            int(xs.min() / factor),
            int(ys.min() / factor),
            int(np.ceil((xs.max() + 1) / factor)),
            int(np.ceil((ys.max() + 1) / factor)),
        )
        if len(xs) > _MAX_INK_POINTS:
            # A fixed seed: the same page always gets the same answer.
            keep = np.random.default_rng(0).choice(len(xs), _MAX_INK_POINTS, replace=False)
            xs, ys = xs[keep], ys[keep]
        # float32 is exact for coordinates below 2**24 and rounds projections by far less than
        # a bin; it halves the search's time against float64.
        return cls(xs.astype(np.float32), ys.astype(np.float32), box)

    def score(self, angle: float, columns: bool = False) -> float:
        """How sharply ink piles into rows (or, with ``columns``, columns) along lines tilted by
        ``angle`` degrees (clockwise, image coordinates).

        Text lines aligned with the projection give tall peaks and empty gaps, so the squared
        differences of neighbouring bins are largest at the text's own angle.
        """
        key = (columns, round(angle, 3))
        if key not in self._scores:
            xs, ys = (self._ys, self._xs) if columns else (self._xs, self._ys)
            theta = np.deg2rad(angle)
            proj = ys * np.float32(np.cos(theta)) - xs * np.float32(np.sin(theta))
            hist = np.bincount(np.rint(proj - proj.min()).astype(np.intp))
            steps = np.diff(hist)
            self._scores[key] = float(np.dot(steps, steps))
        return self._scores[key]

    def best(self, angles: np.ndarray, columns: bool = False) -> tuple[float, float]:
        scores = [self.score(float(a), columns) for a in angles]
        best = int(np.argmax(scores))
        return float(angles[best]), scores[best]

    def runs_vertically(self) -> bool:
        angles = np.arange(-_MAX_SKEW, _MAX_SKEW + 1e-9, 1.0)
        _, rows = self.best(angles)
        _, columns = self.best(angles, columns=True)
        log.debug("orientation profile: rows %.3g, columns %.3g", rows, columns)
        return columns > _VERTICAL_RATIO * rows

    def skew(self) -> float:
        """Degrees the text leans counter-clockwise, within +-_MAX_SKEW."""
        coarse, _ = self.best(np.arange(-_MAX_SKEW, _MAX_SKEW + 1e-9, _COARSE_STEP))
        fine, _ = self.best(np.arange(coarse - _COARSE_STEP, coarse + _COARSE_STEP + 1e-9, _FINE_STEP))
        # The search angle is clockwise in image coordinates; report it counter-clockwise.
        return round(-fine, 2) + 0.0


def lines_run_vertically(gray: np.ndarray) -> bool:
    """Whether the page's text lines run top to bottom (page turned by 90 or 270 degrees)."""
    ink = _Ink.of(gray)
    return ink is not None and ink.runs_vertically()


def detect_skew(gray: np.ndarray) -> float:
    """Degrees the text leans counter-clockwise (within +-10), 0.0 for a page without ink."""
    ink = _Ink.of(gray)
    return 0.0 if ink is None else ink.skew()


def _text_crop(gray: np.ndarray) -> np.ndarray | None:
    """The part of the page with the most text-like detail, a sixth of its longer side high and
    a third wide: a few lines of words to judge orientation by, cheap to read twice."""
    ink, factor = _ink_mask(gray)
    height, width = ink.shape
    longer = max(height, width)
    # Small pages still get a few lines' worth (the analysis copy is at most _ANALYSIS_SIDE).
    crop_h = min(height, max(longer // 6, round(240 * factor)))
    crop_w = min(width, max(longer // 3, round(480 * factor)))
    # Horizontal ink/paper transitions: dense in text, sparse in pictures and blank paper.
    edges = np.zeros(ink.shape, dtype=np.uint8)
    edges[:, 1:] = ink[:, 1:] != ink[:, :-1]
    integral = cv2.integral(edges)
    best, best_at = 0, (0, 0)
    for top in range(0, height - crop_h + 1, max(1, crop_h // 4)):
        for left in range(0, width - crop_w + 1, max(1, crop_w // 4)):
            total = int(
                integral[top + crop_h, left + crop_w]
                - integral[top, left + crop_w]
                - integral[top + crop_h, left]
                + integral[top, left]
            )
            if total > best:
                best, best_at = total, (top, left)
    if best < 100:
        return None
    top, left = (round(v / factor) for v in best_at)
    return gray[top : top + round(crop_h / factor), left : left + round(crop_w / factor)]


def is_upside_down(gray: np.ndarray, engine: OcrEngine) -> bool:
    """Whether the engine reads a crop of the page clearly better turned by 180 degrees."""
    crop = _text_crop(gray)
    if crop is None:
        return False
    votes = engine.flip_confidences(np.ascontiguousarray(crop))
    if votes is None:
        return False
    upright, turned = votes
    log.debug("orientation votes: as is %.3f, turned 180 %.3f", upright, turned)
    return turned > upright + _FLIP_MARGIN
