"""Faults injected with real means: a Dask worker killed with SIGKILL in the middle of a run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from PIL import Image

from docproc.storage import LocalStorage
from tests.e2e_checks import check_results

DOCS = 6


def _worker_processes(root: psutil.Process) -> list[psutil.Process]:
    """The Dask worker processes a `docproc run` started (spawned by multiprocessing)."""
    found = []
    for child in root.children(recursive=True):
        try:
            if child.status() != psutil.STATUS_ZOMBIE and "spawn_main" in " ".join(child.cmdline()):
                found.append(child)
        except psutil.Error:  # ended while we looked
            continue
    return found


@pytest.mark.slow
def test_killed_worker_does_not_lose_or_duplicate_documents(corpus: Path, tmp_path: Path) -> None:
    inbox, out = tmp_path / "inbox", tmp_path / "out"
    inbox.mkdir()
    with Image.open(corpus / "phototest.tif") as page:
        gray = page.convert("L")
        for i in range(DOCS):  # distinct content, so distinct documents
            gray.crop((0, 0, gray.width, gray.height - 8 * i)).save(inbox / f"page-{i}.png")

    docproc = Path(sys.executable).parent / "docproc"
    run = subprocess.Popen(
        [str(docproc), "run", str(inbox), "--out", str(out), "--workers", "2", "--batch-size", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "DOCPROC_RETRIES": "2"},
    )
    killed = None
    try:
        deadline = time.monotonic() + 600
        while killed is None and time.monotonic() < deadline and run.poll() is None:
            done = len(list(out.glob("results/*.json")))
            workers = _worker_processes(psutil.Process(run.pid))
            if done >= 1 and len(workers) == 2:
                killed = workers[0]
                killed.send_signal(signal.SIGKILL)
            time.sleep(0.2)
        output, _ = run.communicate(timeout=900)
    finally:
        if run.poll() is None:
            run.kill()
    text = output.decode(errors="replace")
    assert killed is not None, "the run ended before a worker could be killed:\n" + text[-3000:]
    assert run.returncode == 0, text[-3000:]
    assert f"{DOCS} processed, 0 skipped, 0 quarantined" in text, text[-3000:]
    check_results(LocalStorage(out), [f"page-{i}.png" for i in range(DOCS)])
