"""Which languages a page is read in: the configured ones, or with ``languages=auto`` the page's own.

In auto mode a page is read once in English, the language of that text is detected (the same
fastText model the result's ``language`` comes from), and a page in another language the
engines know is read again with that language first and English second. Text in a Latin
script reads well enough in English for detection; the second reading gets the accents right.
"""

from __future__ import annotations

import logging

import numpy as np

from docproc.errors import ConfigurationError
from docproc.nlp.language import detect_language
from docproc.ocr import OcrEngine, OcrPage, engine_key, get_engine
from docproc.settings import Settings

log = logging.getLogger(__name__)

AUTO = ("auto",)
FIRST_PASS = ("en",)
# Languages auto mode switches to: those whose packs scripts/tools/tesseract.sh installs.
AUTO_CANDIDATES = frozenset({"en", "de", "fr", "es", "it", "pt"})
# A detection less sure than this keeps the first reading.
_MIN_SCORE = 0.5
# Engines auto mode found it cannot build in this process (a language pack or model missing).
_unavailable: set[tuple[str, tuple[str, ...], bool]] = set()


def engine_settings(settings: Settings) -> Settings:
    """Settings for the engine that reads a page first (and prepares it): English in auto mode."""
    if tuple(settings.languages) == AUTO:
        return settings.model_copy(update={"languages": FIRST_PASS})
    return settings


def read(image: np.ndarray, engine: OcrEngine, settings: Settings) -> tuple[OcrPage, tuple[str, ...]]:
    """The page read by ``engine`` (from ``engine_settings``), and the languages of that reading."""
    first = engine.read(image)
    if tuple(settings.languages) != AUTO:
        return first, tuple(settings.languages)
    found = detect_language(first.text)
    if found.code not in AUTO_CANDIDATES or found.code in FIRST_PASS or found.score < _MIN_SCORE:
        return first, FIRST_PASS
    languages = (found.code, *FIRST_PASS)
    second = settings.model_copy(update={"languages": languages})
    key = engine_key(second)
    if key in _unavailable:
        return first, FIRST_PASS
    try:
        second_engine = get_engine(second)
    except ConfigurationError as exc:
        # Auto mode asked for what is not installed: the English reading stands, and says so
        # once per process rather than on every page (nor tries to load it again).
        _unavailable.add(key)
        log.warning("pages look %s (%.2f) but cannot be read in it: %s", found.code, found.score, exc)
        return first, FIRST_PASS
    log.debug("page detected as %s (%.2f): read again with %s", found.code, found.score, languages)
    return second_engine.read(image), languages
