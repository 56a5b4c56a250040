"""OCR engines that fail on purpose, for fault-injection tests, loaded as engine plugins
(``DOCPROC_ENGINE=tests.fault_engines:FaultEngine``).

They recognize a page by its size, which the tests choose: a page of ``KILL_SIZE`` makes the
engine kill its own process with SIGKILL (as a native crash or an OOM kill would end it), a
page of ``HANG_SIZE`` never returns, a page of ``STORAGE_DOWN_SIZE`` raises the error storage
raises when it cannot be reached. Every other page reads as blank, at once.
"""

from __future__ import annotations

import os
import signal
import time

import numpy as np

from docproc.errors import StorageUnavailableError
from docproc.ocr.base import OcrEngine, OcrPage

# (height, width) of the prepared page, which is the image's when it needs no scaling.
KILL_SIZE = (913, 700)
HANG_SIZE = (917, 700)
STORAGE_DOWN_SIZE = (921, 700)


class FaultEngine(OcrEngine):
    name = "fault"

    def __init__(self, languages: tuple[str, ...]) -> None:
        self.languages = languages

    def read(self, image: np.ndarray) -> OcrPage:
        size = tuple(image.shape[:2])
        if size == KILL_SIZE:
            os.kill(os.getpid(), signal.SIGKILL)
        if size == HANG_SIZE:
            while True:
                time.sleep(60)
        if size == STORAGE_DOWN_SIZE:
            raise StorageUnavailableError("storage answered 503 (injected by the test engine)")
        return OcrPage.from_lines(())
