"""Bounds on one document attempt: a time limit and a memory limit, enforced from outside it.

A hung native call (PDFium, an OCR engine) cannot be interrupted from Python, and a page that
blows memory is past saving once it has. So a watchdog thread of the worker process checks the
running attempts; when one outlives its deadline or the process's memory passes the bound, it
records the evidence (``on_breach``) and kills its own process with SIGKILL. The worker's
supervisor (Dask's nanny, Kubernetes) starts a new one; the orchestrator sees the attempt's
worker die, retries the document once elsewhere, and quarantines it on the second breach.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime

log = logging.getLogger(__name__)

POLL_SECONDS = 0.25
_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class Breach:
    """What the watchdog saw when it ended an attempt: ``timeout`` or ``memory``."""

    kind: str
    label: str
    detail: str
    pid: int
    at: str


@dataclass
class _Attempt:
    label: str
    deadline: float
    seconds: float
    memory_bytes: int | None
    on_breach: Callable[[Breach], None]
    started: float = field(default_factory=time.monotonic)


def rss_bytes() -> int:
    """This process's resident memory."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * _PAGE_BYTES


class _Watchdog:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._attempts: dict[int, _Attempt] = {}
        self._next = 0
        self._thread: threading.Thread | None = None

    def add(self, attempt: _Attempt) -> int:
        with self._lock:
            self._next += 1
            self._attempts[self._next] = attempt
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._watch, name="docproc-watchdog", daemon=True)
                self._thread.start()
            return self._next

    def remove(self, token: int) -> None:
        with self._lock:
            self._attempts.pop(token, None)

    def _watch(self) -> None:
        while True:
            time.sleep(POLL_SECONDS)
            with self._lock:
                attempts = list(self._attempts.values())
            if not attempts:
                continue
            now = time.monotonic()
            rss = rss_bytes()
            for attempt in attempts:
                if now > attempt.deadline:
                    self._breach(
                        attempt,
                        "timeout",
                        f"still running after {now - attempt.started:.1f} s (limit {attempt.seconds:.1f} s)",
                    )
                if attempt.memory_bytes is not None and rss > attempt.memory_bytes:
                    self._breach(
                        attempt,
                        "memory",
                        f"worker memory {rss} bytes passed the bound of {attempt.memory_bytes} bytes",
                    )

    @staticmethod
    def _breach(attempt: _Attempt, kind: str, detail: str) -> None:
        breach = Breach(kind, attempt.label, detail, os.getpid(), datetime.now(UTC).isoformat())
        log.error("ending worker process %d: %s on %s: %s", breach.pid, kind, attempt.label, detail)
        try:
            attempt.on_breach(breach)
        except Exception:  # the kill matters more than the evidence
            log.exception("could not record the evidence of %s on %s", kind, attempt.label)
        os.kill(os.getpid(), signal.SIGKILL)


_watchdog = _Watchdog()


@contextmanager
def bounded(
    label: str, seconds: float, memory_bytes: int | None, on_breach: Callable[[Breach], None]
) -> Iterator[None]:
    """Run the body as one attempt on ``label``: past ``seconds``, or with this process's memory
    past ``memory_bytes``, the process is killed after ``on_breach`` recorded why."""
    token = _watchdog.add(_Attempt(label, time.monotonic() + seconds, seconds, memory_bytes, on_breach))
    try:
        yield
    finally:
        _watchdog.remove(token)
