"""A worker process's set-up: glibc's malloc on Dask workers (docproc.runtime).

Dask's nanny starts workers with MALLOC_TRIM_THRESHOLD_=65536, which sends every array over
128 KiB to a fresh mapping whose pages fault in again (measured: rapidocr 52% more CPU per
page). These tests count page faults, not seconds: the count does not depend on the load.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
from distributed import Client, LocalCluster

from docproc.settings import Settings

ARRAYS = 100
ARRAY_BYTES = 4 << 20
PAGE = os.sysconf("SC_PAGE_SIZE")

PROBE = """
import json, resource, sys
import numpy as np
from docproc import runtime

if sys.argv[1] == "tuned":
    runtime.tune_malloc()
def faults(): return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
def rss(): return int(open("/proc/self/statm").read().split()[1]) * %(page)d

before = faults()
for _ in range(%(arrays)d):
    a = np.ones(%(size)d, dtype=np.uint8)  # touched, then freed
    del a
arrays = faults() - before
blocks = [bytes(2048) for _ in range(150_000)]  # malloc'd, not Python's small-object pool
keep = blocks[::16]  # holes the heap cannot give back from its top
del blocks
held = rss()
runtime.release_memory()
print(json.dumps({"faults": arrays, "held": held, "released": held - rss()}))
"""


def _probe(mode: str, tmp_path: Path) -> dict[str, int]:
    script = tmp_path / "probe.py"
    script.write_text(PROBE % {"page": PAGE, "arrays": ARRAYS, "size": ARRAY_BYTES})
    env = {**os.environ, "MALLOC_TRIM_THRESHOLD_": "65536"}  # as Dask's nanny sets it
    done = subprocess.run(
        [sys.executable, str(script), mode], env=env, capture_output=True, text=True, check=True
    )
    return dict(json.loads(done.stdout))


def test_tuned_malloc_reuses_memory_for_big_arrays(tmp_path: Path) -> None:
    plain, tuned = _probe("plain", tmp_path), _probe("tuned", tmp_path)
    pages_per_array = ARRAY_BYTES // PAGE
    # Dask's setting: every array faults its pages in afresh (half of them at least, whatever
    # the kernel's fault-around does); tuned: the heap's pages are reused.
    assert plain["faults"] >= ARRAYS * pages_per_array // 4, plain
    assert tuned["faults"] <= plain["faults"] // 10, (plain, tuned)


def test_release_memory_hands_freed_memory_back(tmp_path: Path) -> None:
    tuned = _probe("tuned", tmp_path)
    # 150,000 blocks of 2 KiB, 15/16 of them freed in holes: most of that goes back.
    assert tuned["released"] >= 0.5 * 150_000 * 2048 * 15 / 16, tuned


def _faults_of_big_arrays() -> tuple[str | None, int]:
    from flows.process import worker_settings

    worker_settings(Settings(engine="tesseract").for_workers())  # what every unit starts with
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(ARRAYS):
        a = np.ones(ARRAY_BYTES, dtype=np.uint8)
        del a
    return os.environ.get("MALLOC_TRIM_THRESHOLD_"), resource.getrusage(
        resource.RUSAGE_SELF
    ).ru_minflt - before


def test_dask_worker_units_run_with_tuned_malloc() -> None:
    """A real worker process of a LocalCluster (nanny, Dask's default environment)."""
    with (
        LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster,
        Client(cluster) as client,
    ):
        trim, faults = client.submit(_faults_of_big_arrays, pure=False).result(timeout=120)
    assert trim == "65536"  # Dask's nanny set it: the condition the tuning answers
    assert faults < ARRAYS * (ARRAY_BYTES // PAGE) // 10, faults


def test_flow_process_does_not_import_the_models_libraries() -> None:
    """The flow process (the CLI, a deployment's flow run) hands pages to workers; spaCy and
    torch, seconds of import, load in the workers only."""
    probe = "import sys, flows.process; print(sorted({'spacy', 'torch', 'thinc'} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", done.stdout


def _timers(dask_worker: Any) -> dict[str, float]:
    return {name: float(callback.callback_time) for name, callback in dask_worker.periodic_callbacks.items()}


def test_local_cluster_servers_run_without_dasks_profiler_and_with_slower_housekeeping() -> None:
    """Dask's profiler samples each worker thread every 10 ms (measured: 1.5% of a core per
    worker); the workers of docproc's local cluster, spawned by their nannies, go without it.
    Their event-loop ticks and memory and system polls, 5% of a core on an idle cluster, run
    at a tenth, a fifth and a quarter of Dask's default rates, in the workers and the nannies."""
    from flows.process import build_task_runner

    build_task_runner(Settings())  # the Dask configuration the flow's local cluster starts with
    with (
        LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster,
        Client(cluster) as client,
    ):
        workers = list(client.run(_timers).values())
        nannies = [_timers(nanny) for nanny in cluster.workers.values()]
    assert len(workers) == len(nannies) == 1
    assert "profile" not in workers[0]
    for timers in (*workers, *nannies):
        assert (timers["tick"], timers["memory_monitor"], timers["monitor"]) == (200, 500, 2000), timers
