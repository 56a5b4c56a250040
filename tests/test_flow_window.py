"""The flow keeps a bounded window of units submitted to Dask, so its memory (and the in-process
scheduler's) does not grow with the document count.

The real ``process_documents`` flow runs on a real ``LocalCluster`` (one worker, one thread)
through ``dask_address``; a scheduler plugin counts the run's units that have reached the
scheduler and not finished yet. A gate page (``tests.fault_engines``) holds the only thread
while the window fills, so the count reaching the window does not depend on timing.
"""

from __future__ import annotations

import contextvars
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from distributed import LocalCluster
from distributed.diagnostics.plugin import SchedulerPlugin
from distributed.scheduler import Scheduler
from PIL import Image

from docproc.models import RunReport
from docproc.report import report_prefix
from docproc.settings import Settings
from flows.process import (
    MIN_UNITS_IN_FLIGHT,
    UNITS_PER_THREAD,
    build_task_runner,
    process_documents,
    units_in_flight,
)
from tests.fault_engines import GATE_SIZE, Gate, one_page_batches
from tests.fixtures.prefect_server import PrefectServer

WINDOW = 3
PAGES = 24  # one page per document and per batch: 24 batch units, 8 times the window
WAIT_SECONDS = 300.0
UNFINISHED = {"waiting", "queued", "processing", "no-worker"}


class InFlight(SchedulerPlugin):
    """How many docproc units are at the scheduler and not computed yet, now and at most."""

    def __init__(self) -> None:
        self.unfinished: set[str] = set()
        self.arrived: set[str] = set()
        self.most = 0

    def transition(self, key: Any, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
        name = str(key)
        if not name.startswith("docproc-"):
            return
        self.arrived.add(name)
        if finish in UNFINISHED:
            self.unfinished.add(name)
        else:
            self.unfinished.discard(name)
        self.most = max(self.most, len(self.unfinished))


class Handed(SchedulerPlugin):
    """For each batch unit handed to a worker, how many units that worker then held."""

    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler
        self.held: list[int] = []

    def transition(self, key: Any, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
        if finish == "processing" and str(key).startswith("docproc-batch-"):
            worker = self.scheduler.tasks[key].processing_on
            assert worker is not None
            self.held.append(len(worker.processing))


def test_the_default_window_follows_the_cluster_threads() -> None:
    assert units_in_flight(Settings(), 0) == MIN_UNITS_IN_FLIGHT  # an adaptive cluster, no worker yet
    assert units_in_flight(Settings(), 64) == UNITS_PER_THREAD * 64
    assert units_in_flight(Settings(units_in_flight=5), 64) == 5
    # Dask queues a unit at its scheduler only when its group is larger than twice the threads.
    for threads in (1, 2, 3, 4, 16, 64, 500):
        assert units_in_flight(Settings(), threads) > 2 * threads


def test_units_wait_at_the_scheduler_not_behind_a_busy_workers_unit(
    prefect_api: PrefectServer, tmp_path: Path
) -> None:
    """Each worker thread is handed one unit at a time, so that no unit waits on a worker busy
    with another while a second worker runs out of work (measured: one of two workers idle for
    the last tenth of a run of 90 tesseract pages with Dask's default of two a thread). Only
    the run's first units, submitted before their group is large enough for Dask to queue it
    (more than twice the cluster's threads), go to the workers directly."""
    threads = 2
    settings = Settings(workers=threads)
    build_task_runner(settings)  # the Dask configuration the flow's local cluster starts with
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for i in range(PAGES):
        Image.new("L", (700, 800 + i), 255).save(inbox / f"page-{i:02d}.png")
    with LocalCluster(
        n_workers=threads, threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=40
    ) as cluster:
        handed = Handed(cluster.scheduler)
        cluster.scheduler.add_plugin(handed, name="docproc-handed")
        remote = one_page_batches(cluster.scheduler_address)
        flow = process_documents.with_options(task_runner=build_task_runner(remote))
        report: RunReport = flow(
            source=str(inbox), destination=str(tmp_path / "out"), settings_overrides=remote.overrides()
        )
    assert report.counts["processed"] == PAGES, report.counts
    assert len(handed.held) == PAGES
    assert all(held == 1 for held in handed.held[2 * threads :]), handed.held


def test_a_run_longer_than_the_window_keeps_the_window_and_reports_every_document(
    gated_cluster: LocalCluster, gate: Gate, prefect_api: PrefectServer, tmp_path: Path
) -> None:
    counter = InFlight()
    gated_cluster.scheduler.add_plugin(counter, name="docproc-in-flight")
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    # The gate page sorts first, so its batch is the first unit of the run: it holds the thread.
    height, width = GATE_SIZE
    Image.new("L", (width, height), 255).save(inbox / "a-gate.png")
    for i in range(PAGES - 1):
        Image.new("L", (700, 800 + i), 255).save(inbox / f"page-{i:02d}.png")
    settings = one_page_batches(gated_cluster.scheduler_address, units_in_flight=WINDOW)
    out = tmp_path / "out"

    def run() -> RunReport:
        flow = process_documents.with_options(task_runner=build_task_runner(settings))
        report: RunReport = flow(
            source=str(inbox), destination=str(out), settings_overrides=settings.overrides()
        )
        return report

    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(contextvars.copy_context().run, run)
        gate.wait_entered(WAIT_SECONDS, alive=lambda: not running.done())
        deadline = time.monotonic() + WAIT_SECONDS
        while len(counter.unfinished) < WINDOW:  # the gate's batch and those queued behind it
            assert not running.done(), "the run ended while the gate was closed"
            assert time.monotonic() < deadline, f"{len(counter.unfinished)} units in flight, never {WINDOW}"
            time.sleep(0.1)
        gate.open()
        report = running.result(WAIT_SECONDS)

    batches = [k for k in counter.arrived if k.startswith("docproc-batch-")]
    assert len(batches) == PAGES  # far more units than the window went through it
    assert counter.most == WINDOW, counter.most
    assert report.counts["processed"] == PAGES, report.counts
    outcomes = [
        json.loads(line)
        for part in sorted((out / report_prefix(report.run_id) / "outcomes").iterdir())
        for line in _lines(part)
    ]
    assert sorted(o["source"] for o in outcomes) == sorted(p.name for p in inbox.iterdir())
    assert {o["status"] for o in outcomes} == {"processed"}


def _lines(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if line.strip()]
