"""Per-process set-up of a worker: compute threads, warm models."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import math
import os
import sys
import warnings
from pathlib import Path
from typing import Any

from docproc import logcontext
from docproc.settings import Settings

log = logging.getLogger(__name__)


# glibc's malloc, set for a process that allocates page-sized arrays over and over. Dask's
# nanny starts its workers with MALLOC_TRIM_THRESHOLD_=65536 (distributed.nanny.pre-spawn-environ)
# to hand freed memory back at once; a fixed trim threshold also pins glibc's mmap threshold at
# 128 KiB, so every larger array is a fresh mapping whose pages fault in again. Measured on the
# bench pages, one thread: rapidocr 52% and easyocr 14% more CPU per page, page preparation 4-5x
# the time. Here arrays up to 32 MiB (glibc's own ceiling for its dynamic threshold) come from
# the heap again, freed memory is kept up to twice that (glibc's dynamic ratio), and
# ``release_memory`` hands the rest back once per unit of work instead of at every free.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20
TRIM_THRESHOLD = 2 * MMAP_THRESHOLD

# torch warns on every CPU-only Reader: easyocr quantizes its model and asks for pinned memory.
_TORCH_NOISE = (r".*quantize_per_tensor.*", r".*pin_memory.*")


def configure_process(settings: Settings) -> None:
    """Give each worker process its share of the cores, so that workers don't oversubscribe them."""
    logcontext.install()
    for message in _TORCH_NOISE:
        warnings.filterwarnings("ignore", message=message, category=UserWarning)
    tune_malloc()
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


@functools.cache
def _glibc() -> Any:
    """The C library when it is glibc (it has ``mallopt`` and ``malloc_trim``), else None."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


def tune_malloc() -> None:
    """Big arrays from the heap, not a fresh mapping each (see MMAP_THRESHOLD); not on musl or macOS."""
    libc = _glibc()
    if libc is not None:
        libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
        libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)


def release_memory() -> None:
    """Hand the memory freed by a finished unit of work back to the system."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


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
