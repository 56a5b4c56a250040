"""Faults injected with real means: a Dask worker killed with SIGKILL in the middle of a document.

The kill is aimed, not timed: one page is held at a gate (``tests.fault_engines``) in the
worker that reads it, and the test kills exactly that worker, so the kill always lands on a
document in flight, on any machine, however loaded. The gate opens after the kill: the
document's retry on the restarted or other worker then goes through.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from PIL import Image

from docproc.storage import LocalStorage
from tests.e2e_checks import check_results
from tests.fault_engines import GATE_SIZE, Gate

DOCS = 6
FAULT_ENGINE = "tests.fault_engines:FaultEngine"


@pytest.mark.slow
def test_killed_worker_does_not_lose_or_duplicate_documents(tmp_path: Path) -> None:
    inbox, out = tmp_path / "inbox", tmp_path / "out"
    inbox.mkdir()
    sources = [f"page-{i}.png" for i in range(DOCS)]
    for i, name in enumerate(sources):  # distinct sizes, so distinct documents; one at the gate
        height, width = GATE_SIZE if i == DOCS // 2 else (800 + 8 * i, 700)
        Image.new("L", (width, height), 255).save(inbox / name)
    gate = Gate(tmp_path / "gate")

    docproc = Path(sys.executable).parent / "docproc"
    run = subprocess.Popen(
        [str(docproc), "run", str(inbox), "--out", str(out), "--workers", "2", "--batch-size", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={
            **os.environ,
            **gate.env(),
            "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
            "DOCPROC_ENGINE": FAULT_ENGINE,
            "DOCPROC_DETECT_ORIENTATION": "false",
            "DOCPROC_DESKEW": "false",
            "DOCPROC_RETRIES": "2",
        },
    )
    try:
        pid = gate.wait_entered(timeout=600, alive=lambda: run.poll() is None)
        victim = psutil.Process(pid)
        assert victim in psutil.Process(run.pid).children(recursive=True)  # a worker of this run
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=60)
        gate.open()
        output, _ = run.communicate(timeout=900)
    finally:
        gate.open()
        if run.poll() is None:
            run.kill()
            run.wait()
    text = output.decode(errors="replace")
    assert run.returncode == 0, text[-3000:]
    assert f"{DOCS} processed, 0 skipped, 0 quarantined" in text, text[-3000:]
    # The gated page was read again, by another process than the one killed.
    assert len(gate.entered()) == 2, gate.entered()
    assert pid in gate.entered()
    check_results(LocalStorage(out), sources)
