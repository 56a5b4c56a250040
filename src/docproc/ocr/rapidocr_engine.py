"""RapidOCR: PaddleOCR's detection and recognition models, shipped inside the ``rapidocr``
wheel, on ONNX Runtime.

The models are named by path inside the installed package, so RapidOCR never reaches for its
download fallback: a missing model is an installation error. RapidOCR's own line classifier
(0/180 degrees per line) stays off: ``prepare_page`` already turns the whole page upright.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from docproc.errors import ConfigurationError, OcrEngineError
from docproc.ocr.base import OcrEngine, OcrPage, Segment, check_gray8
from docproc.ocr.layout import FLIP_SAMPLE_BOXES, ink_line_boxes, reading_order

log = logging.getLogger(__name__)

# The wheel's models: PP-OCR detection and a recognizer whose dictionary covers Latin script
# (with accents) and Chinese. Other scripts need other model files, which the wheel lacks.
_DET_MODEL = "PP-OCRv6_det_small.onnx"
_REC_MODEL = "PP-OCRv6_rec_small.onnx"
_LANGUAGES = frozenset({"en", "de", "fr", "es", "it", "pt", "nl", "da", "sv", "no", "fi", "ch_sim"})
# RapidOCR shrinks pages to this longer side before detection and recognition. Prepared pages
# are at most ``ocr_max_side`` (2600 px); keeping them whole keeps small print readable.
_MAX_SIDE = 4000


class RapidOcrEngine(OcrEngine):
    name = "rapidocr"
    one_model_for_languages = True
    # Mean confidence on the corpus pages (tests/test_ocr.py): upright 0.98-1.00, upside down 0.61-0.72.
    upright_confidence = 0.85

    def __init__(self, languages: Sequence[str], *, gpu: bool, threads: int | None) -> None:
        unknown = [code for code in languages if code not in _LANGUAGES]
        if unknown:
            raise ConfigurationError(
                f"the rapidocr engine's shipped models do not read languages {unknown} "
                f"(they read {', '.join(sorted(_LANGUAGES))})"
            )
        try:
            import onnxruntime
            import rapidocr
        except ImportError as exc:
            raise ConfigurationError(f"rapidocr is not installed: {exc}") from exc
        models = Path(rapidocr.__file__).parent / "models"
        missing = [m for m in (_DET_MODEL, _REC_MODEL) if not (models / m).is_file()]
        if missing:
            raise ConfigurationError(f"the rapidocr wheel lacks its models {missing} in {models}")
        cuda = gpu and "CUDAExecutionProvider" in onnxruntime.get_available_providers()
        if gpu and not cuda:
            log.info("gpu requested but ONNX Runtime has no CUDA provider here: rapidocr runs on the CPU")
        started = time.perf_counter()
        params: dict[str, Any] = {
            "Global.log_level": "warning",
            "Global.use_cls": False,
            "Global.max_side_len": _MAX_SIDE,
            "Det.model_path": str(models / _DET_MODEL),
            "Rec.model_path": str(models / _REC_MODEL),
            # -1 is ONNX Runtime's "every core"; a worker given its share uses that many.
            "EngineConfig.onnxruntime.intra_op_num_threads": threads or -1,
            "EngineConfig.onnxruntime.inter_op_num_threads": 1,
            "EngineConfig.onnxruntime.use_cuda": cuda,
        }
        try:
            self._ocr: Any = rapidocr.RapidOCR(params=params)
        except (OSError, ValueError, RuntimeError) as exc:
            raise ConfigurationError(f"cannot load the rapidocr models from {models}: {exc}") from exc
        self.threads = threads
        # One session set per process; ONNX Runtime already spreads one call over its threads.
        self._lock = threading.Lock()
        log.info(
            "rapidocr loaded (threads %s, cuda %s) in %.1f s", threads, cuda, time.perf_counter() - started
        )

    def read(self, image: np.ndarray) -> OcrPage:
        check_gray8(image)
        started = time.perf_counter()
        with self._lock:
            try:
                # The steps are named on every call: RapidOCR keeps the last call's as its state.
                result = self._ocr(image, use_det=True, use_cls=False, use_rec=True)
            except (RuntimeError, ValueError, MemoryError) as exc:
                size = f"{image.shape[1]}x{image.shape[0]}"
                raise OcrEngineError(f"rapidocr failed on a {size} page: {exc}") from exc
        segments = _segments(result)
        lines = reading_order(segments)
        total = time.perf_counter() - started
        detection, _, recognition = (list(getattr(result, "elapse_list", None) or []) + [0.0] * 3)[:3]
        timings = {
            "detection": float(detection or 0.0),
            "recognition": float(recognition or 0.0),
        }
        timings["other"] = max(0.0, total - timings["detection"] - timings["recognition"])
        return OcrPage.from_lines(lines, timings=timings)

    def flip_confidences(self, crop: np.ndarray) -> tuple[float, float] | None:
        # Only the recognizer, on line boxes found from the ink (as the easyocr engine does):
        # reading the crop twice with detection added a third to rapidocr's time per page.
        check_gray8(crop)
        height, width = crop.shape
        boxes = ink_line_boxes(crop)[:FLIP_SAMPLE_BOXES]
        if len(boxes) < 2:
            # Lines too close for the ink to tell apart (c02-22 upside down): read the crop both
            # ways, detection included.
            return super().flip_confidences(crop)
        turned = np.ascontiguousarray(crop[::-1, ::-1])
        upright, flipped = [], []
        with self._lock:
            for x0, x1, y0, y1 in boxes:
                upright.append(self._recognize(crop[y0:y1, x0:x1]))
                flipped.append(self._recognize(turned[height - y1 : height - y0, width - x1 : width - x0]))
        return _weighted_confidence(upright), _weighted_confidence(flipped)

    def _recognize(self, line: np.ndarray) -> tuple[str, float]:
        try:
            result = self._ocr(np.ascontiguousarray(line), use_det=False, use_cls=False, use_rec=True)
        except (RuntimeError, ValueError, MemoryError) as exc:
            raise OcrEngineError(f"rapidocr failed on an orientation sample: {exc}") from exc
        texts, scores = getattr(result, "txts", None) or (), getattr(result, "scores", None) or ()
        if not texts or not scores:
            return "", 0.0
        return str(texts[0]), min(1.0, max(0.0, float(scores[0])))


def _weighted_confidence(read: list[tuple[str, float]]) -> float:
    """Character-weighted: a long line read well outweighs a stray mark read by chance."""
    weights = [max(1, len(text.strip())) for text, _ in read]
    return sum(w * score for w, (_, score) in zip(weights, read, strict=True)) / sum(weights)


def _segments(result: Any) -> list[Segment]:
    boxes, texts = getattr(result, "boxes", None), getattr(result, "txts", None)
    scores = getattr(result, "scores", None)
    if boxes is None or texts is None:
        return []
    segments = []
    for points, text, score in zip(boxes, texts, scores or (), strict=True):
        pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        bbox = (
            round(pts[:, 0].min()),
            round(pts[:, 1].min()),
            round(pts[:, 0].max()),
            round(pts[:, 1].max()),
        )
        segments.append(Segment(text=str(text), bbox=bbox, confidence=min(1.0, max(0.0, float(score)))))
    return segments
