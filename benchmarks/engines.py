"""An OCR engine plugin that reads nothing, at once: the benchmarks measure orchestration."""

from __future__ import annotations

import numpy as np

from docproc.ocr.base import OcrEngine, OcrPage


class NoopEngine(OcrEngine):
    name = "noop"

    def __init__(self, languages: tuple[str, ...]) -> None:
        self.languages = languages

    def read(self, image: np.ndarray) -> OcrPage:
        return OcrPage.from_lines(())
