"""Per-process set-up of a worker: compute threads, warm models."""

from __future__ import annotations

import logging
import os
import sys
import warnings

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
    threads = settings.compute_threads
    # Only easyocr runs on torch: other engines must not pay for importing it (seconds, and
    # hundreds of MB, in every worker process, also each time a worker is restarted).
    if threads is None or (settings.engine != "easyocr" and "torch" not in sys.modules):
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
    return len(os.sched_getaffinity(0))
