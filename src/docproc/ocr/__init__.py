"""OCR engines behind one interface, one instance per worker process and settings.

``get_engine(settings)`` is the only way in: engines load models (easyocr) or probe programs
(tesseract) once, and every later page reuses them.
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Callable
from pathlib import Path

from docproc.errors import ConfigurationError
from docproc.ocr.base import OcrEngine, OcrLine, OcrPage, Segment
from docproc.runtime import compute_threads
from docproc.settings import Settings

__all__ = ["OcrEngine", "OcrLine", "OcrPage", "Segment", "clear_engines", "get_engine"]

log = logging.getLogger(__name__)

EngineKey = tuple[str, tuple[str, ...], bool, int, Path]
# The languages the default engine has OpenVINO models for (converted from english_g2.pth).
OPENVINO_LANGUAGES = ("en",)

_engines: dict[EngineKey, OcrEngine] = {}
# Built under the lock: two threads of one worker asking at once must not load two Readers.
_engines_lock = threading.Lock()


def engine_key(settings: Settings) -> EngineKey:
    """What makes two engines different: the engine, its languages, the GPU switch and the
    compute threads (inference sessions fix their thread pools when they are built) and where
    converted models are cached."""
    return (
        settings.engine,
        tuple(settings.languages),
        settings.gpu,
        compute_threads(settings),
        settings.model_cache_dir,
    )


def get_engine(settings: Settings) -> OcrEngine:
    """The process's engine for these settings, built on first use."""
    key = engine_key(settings)
    with _engines_lock:
        engine = _engines.get(key)
        if engine is None:
            engine = _build(key)
            _engines[key] = engine
        return engine


def clear_engines() -> None:
    """Forget every built engine (their memory goes once nothing else holds them)."""
    with _engines_lock:
        _engines.clear()


def _build(key: EngineKey) -> OcrEngine:
    name, languages, gpu, threads, cache_dir = key
    log.info("building OCR engine %s for languages %s", name, ",".join(languages))
    if name == "easyocr" and languages == OPENVINO_LANGUAGES and not (gpu and _cuda_available()):
        from docproc.ocr.easyocr_openvino import EasyOcrOpenVinoEngine, converted_models

        return EasyOcrOpenVinoEngine(languages, models=converted_models(cache_dir), threads=threads)
    if name in ("easyocr", "easyocr-torch"):
        # The default engine on a GPU is easyocr's torch models on the device; for languages
        # beyond the converted English models it is easyocr on torch with their weights (which
        # it names when they are not installed).
        from docproc.ocr.easyocr_engine import EasyOcrEngine

        return EasyOcrEngine(languages, gpu=gpu)
    if name == "tesseract":
        from docproc.ocr.tesseract_engine import TesseractEngine

        return TesseractEngine(languages)
    if name == "rapidocr":
        from docproc.ocr.rapidocr_engine import RapidOcrEngine

        return RapidOcrEngine(languages, gpu=gpu, threads=threads)
    if ":" in name:
        return _plugin(name, languages)
    raise ConfigurationError(f"unknown OCR engine {name!r}")


def _cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def _plugin(path: str, languages: tuple[str, ...]) -> OcrEngine:
    """An engine named by import path, ``package.module:EngineClass``."""
    module_name, _, attr = path.partition(":")
    try:
        engine_cls = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigurationError(f"OCR engine {path!r} cannot be imported: {exc}") from exc
    if not (isinstance(engine_cls, type) and issubclass(engine_cls, OcrEngine)):
        raise ConfigurationError(f"OCR engine {path!r} is not an OcrEngine subclass")
    factory: Callable[[tuple[str, ...]], OcrEngine] = engine_cls
    return factory(languages)
