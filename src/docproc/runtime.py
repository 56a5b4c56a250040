"""Per-process set-up of a worker: compute threads, warm models."""

from __future__ import annotations

import logging
import math
import os
import sys
import warnings
from pathlib import Path

from docproc import logcontext
from docproc.settings import Settings

log = logging.getLogger(__name__)


# torch warns on every CPU-only Reader: easyocr quantizes its model and asks for pinned memory.
_TORCH_NOISE = (r".*quantize_per_tensor.*", r".*pin_memory.*")


def configure_process(settings: Settings) -> None:
    """Give each worker process its share of the cores, so that workers don't oversubscribe them."""
    logcontext.install()
    for message in _TORCH_NOISE:
        warnings.filterwarnings("ignore", message=message, category=UserWarning)
    threads = compute_threads(settings)
    import cv2

    # OpenCV (easyocr's pre- and post-processing) keeps its own thread pool; one worker's
    # share of the cores is all it gets, like torch. OpenVINO and ONNX Runtime get the same
    # count when the engine is built (docproc.ocr.get_engine); tesseract runs on one thread.
    cv2.setNumThreads(threads)
    # Only the easyocr engines run on torch: other engines must not pay for importing it
    # (seconds, and hundreds of MB, in every worker process, also each time one restarts).
    if not settings.engine.startswith("easyocr") and "torch" not in sys.modules:
        return
    import torch

    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
        log.debug("torch threads set to %d", threads)


def warm_up(settings: Settings) -> None:
    """Load the OCR engine and NLP models now rather than on the first document."""
    from docproc import nlp, ocr_languages
    from docproc.ocr import get_engine

    configure_process(settings)
    get_engine(ocr_languages.engine_settings(settings))
    nlp.load_models()


def available_cores() -> int:
    """Cores this process may use: its CPU affinity, capped by a cgroup v2 CPU quota (a pod's
    CPU limit), rounded up."""
    cores = len(os.sched_getaffinity(0))
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        return cores
    if quota == "max":
        return cores
    return max(1, min(cores, math.ceil(int(quota) / int(period))))


def compute_threads(settings: Settings) -> int:
    """Threads for the OCR runtimes of this process: the setting, else every core it owns."""
    return settings.compute_threads or available_cores()
