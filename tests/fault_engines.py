"""OCR engines that fail on purpose, for fault-injection tests, loaded as engine plugins
(``DOCPROC_ENGINE=tests.fault_engines:FaultEngine``).

They recognize a page by its size, which the tests choose: a page of ``KILL_SIZE`` makes the
engine kill its own process with SIGKILL (as a native crash or an OOM kill would end it), a
page of ``HANG_SIZE`` never returns, a page of ``STORAGE_DOWN_SIZE`` raises the error storage
raises when it cannot be reached. A page of ``GATE_SIZE`` is held at a gate the test opens
(see :class:`Gate`): the test then knows a document is being read, and by which process, without
guessing from timing. Every other page reads as blank, at once.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from docproc.errors import StorageUnavailableError
from docproc.ocr.base import OcrEngine, OcrPage
from docproc.settings import Settings

# (height, width) of the prepared page, which is the image's when it needs no scaling.
KILL_SIZE = (913, 700)
HANG_SIZE = (917, 700)
STORAGE_DOWN_SIZE = (921, 700)
GATE_SIZE = (925, 700)

# The gate's folder, inherited by the Dask workers from the test process's environment.
GATE_ENV = "FAULT_ENGINE_GATE_DIR"
GATE_WAIT_SECONDS = 900.0  # a gate the test forgot to open ends in an error, not a hung session


def one_page_batches(dask_address: str, **more: Any) -> Settings:
    """Settings for a run on the scheduler at ``dask_address`` with this module's engine: one
    page per batch unit, and no page analysis to make a page's prepared size differ from its own."""
    return Settings(
        engine="tests.fault_engines:FaultEngine",
        dask_address=dask_address,
        detect_orientation=False,
        deskew=False,
        batch_size=1,
        **more,
    )


class Gate:
    """A gate in a folder: the engine marks ``entered-<pid>`` and waits for ``open``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def env(self) -> dict[str, str]:
        return {GATE_ENV: str(self.folder)}

    def entered(self) -> list[int]:
        """Pids of the processes that reached the gate (a retried page reaches it again)."""
        return sorted(int(p.name.split("-", 1)[1]) for p in self.folder.glob("entered-*"))

    def wait_entered(self, timeout: float, alive: Callable[[], bool] | None = None) -> int:
        """The pid of the first process at the gate; fails after ``timeout`` seconds, or at once
        when ``alive`` says the run ended first."""
        deadline = time.monotonic() + timeout
        while not self.entered():
            if alive is not None and not alive():
                raise AssertionError("the run ended before a page reached the gate")
            if time.monotonic() > deadline:
                raise AssertionError(f"no page reached the gate in {timeout:.0f} s")
            time.sleep(0.1)
        return self.entered()[0]

    def open(self) -> None:
        (self.folder / "open").touch()


def _wait_at_gate() -> None:
    folder = Path(os.environ[GATE_ENV])
    (folder / f"entered-{os.getpid()}").touch()
    deadline = time.monotonic() + GATE_WAIT_SECONDS
    while not (folder / "open").exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"the test never opened the gate in {folder}")
        time.sleep(0.05)


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
        if size == GATE_SIZE:
            _wait_at_gate()
        return OcrPage.from_lines(())
