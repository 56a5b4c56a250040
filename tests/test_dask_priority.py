"""Dask level: a run's queue priority reaches the Dask scheduler, so critical work overtakes bulk work.

Two runs of the real `process_documents` flow share one real ``LocalCluster`` (one worker, one
thread), the way runs share a cluster through ``dask_address``: a bulk run with a queue of
page batches waiting, then a critical run. The order is read from the scheduler itself (when
each unit of work arrived, and when its worker started it), not from durations.

The worker thread is held by a gate page (``tests.fault_engines``) while the bulk batches
queue up and the critical run's first unit arrives; the test opens it only then, so the queue
the critical run must overtake is there on any machine, however loaded. Each run keeps only
its window of units at the scheduler (the default for one thread), so the bulk run's later
batches arrive while the critical run is under way, and must wait for it too.
"""

from __future__ import annotations

import contextvars
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from distributed import LocalCluster
from distributed.diagnostics.plugin import SchedulerPlugin
from PIL import Image

from docproc.models import RunReport
from docproc.queues import Priority, queue_for
from flows.process import build_task_runner, process_documents, units_in_flight
from tests.fault_engines import GATE_SIZE, Gate, one_page_batches
from tests.fixtures.prefect_server import PrefectServer

BULK_PAGES = 10
CRITICAL_PAGES = 3
# Units already handed to the worker when a critical unit arrives (worker-saturation 1.1 on one
# thread: the one running and one in the worker's own queue) run before it; nothing else may.
HANDED_TO_WORKER = 2
WAIT_SECONDS = 300.0


class Timeline(SchedulerPlugin):
    """When each docproc unit reached the scheduler, and when its worker started computing it."""

    def __init__(self) -> None:
        self.arrived: dict[str, float] = {}
        self.started: dict[str, float] = {}

    def transition(
        self, key: Any, start: str, finish: str, *args: Any, stimulus_id: str, **kwargs: Any
    ) -> None:
        name = str(key)
        if not name.startswith("docproc-"):
            return
        self.arrived.setdefault(name, time.time())
        if start == "processing" and finish == "memory":
            for startstop in kwargs.get("startstops", ()):
                if startstop["action"] == "compute":
                    self.started[name] = startstop["start"]

    def runs(self) -> set[str]:
        """Run-id prefixes seen so far (unit keys are ``docproc-<kind>-<run id[:8]>-<n>``)."""
        return {key.split("-")[2] for key in self.arrived}

    def units(self, run_id: str, kind: str | None = None) -> list[str]:
        return [
            k
            for k in self.arrived
            if k.split("-")[2] == run_id[:8] and (kind is None or k.split("-")[1] == kind)
        ]


def _pages(folder: Path, sizes: list[tuple[int, int]]) -> Path:
    folder.mkdir()
    for i, (height, width) in enumerate(sizes):
        Image.new("L", (width, height), 255).save(folder / f"page-{i:02d}.png")
    return folder


def _wait(condition: Any, what: str, *running: Future[RunReport]) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        for run in running:
            if run.done():
                run.result()  # raises the run's error
                pytest.fail(f"a run ended before {what}")
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} after {WAIT_SECONDS:.0f} s")
        time.sleep(0.1)


def test_critical_run_overtakes_the_queued_batches_of_a_bulk_run(
    gated_cluster: LocalCluster, gate: Gate, prefect_api: PrefectServer, tmp_path: Path
) -> None:
    timeline = Timeline()
    gated_cluster.scheduler.add_plugin(timeline, name="docproc-timeline")
    settings = one_page_batches(gated_cluster.scheduler_address)
    window = units_in_flight(settings, 1)
    assert window < BULK_PAGES + 1  # the bulk run has more batches than it submits at once
    # The gate page sorts first, so its batch is the bulk run's first: it holds the only thread.
    bulk_in = _pages(tmp_path / "bulk", [GATE_SIZE] + [(800 + i, 700) for i in range(BULK_PAGES)])
    critical_in = _pages(tmp_path / "critical", [(850 + i, 700) for i in range(CRITICAL_PAGES)])

    def run(source: Path, priority: Priority) -> RunReport:
        flow = process_documents.with_options(task_runner=build_task_runner(settings))
        report: RunReport = flow(
            source=str(source),
            destination=str(tmp_path / f"out-{priority}"),
            priority=priority,
            settings_overrides=settings.overrides(),
        )
        return report

    with ThreadPoolExecutor(2) as pool:
        # Each run in its own thread, with this test's Prefect settings (a context variable).
        bulk = pool.submit(contextvars.copy_context().run, run, bulk_in, Priority.BULK)
        gate.wait_entered(WAIT_SECONDS, alive=lambda: not bulk.done())
        _wait(
            lambda: len([k for k in timeline.arrived if k.startswith("docproc-batch-")]) == window,
            "queue of bulk batches",
            bulk,
        )
        critical = pool.submit(contextvars.copy_context().run, run, critical_in, Priority.CRITICAL)
        _wait(lambda: len(timeline.runs()) == 2, "unit of the critical run", bulk, critical)
        gate.open()
        bulk_report, critical_report = bulk.result(WAIT_SECONDS), critical.result(WAIT_SECONDS)

    assert bulk_report.counts["processed"] == BULK_PAGES + 1, bulk_report.counts
    assert critical_report.counts["processed"] == CRITICAL_PAGES, critical_report.counts
    bulk_batches = timeline.units(bulk_report.run_id, "batch")
    critical_units = timeline.units(critical_report.run_id)
    assert len(bulk_batches) == BULK_PAGES + 1
    assert critical_units
    started, arrived = timeline.started, timeline.arrived
    assert set(started) >= set(bulk_batches) | set(critical_units)
    order = sorted([*bulk_batches, *critical_units], key=started.__getitem__)
    print("start order:", " ".join(("C" if u in critical_units else "b") + u.split("-")[1][0] for u in order))
    for unit in critical_units:
        waiting = [b for b in bulk_batches if started[b] > arrived[unit]]
        overtaking = [b for b in waiting if started[b] < started[unit]]
        assert len(overtaking) <= HANDED_TO_WORKER, (unit, overtaking, order)
    # Not vacuous: the critical run's first unit arrived behind a queue of bulk batches, and
    # the bulk run submitted more of them while the critical run was under way.
    first = min(critical_units, key=arrived.__getitem__)
    queued = [b for b in bulk_batches if arrived[b] < arrived[first] < started[b]]
    assert len(queued) >= window - HANDED_TO_WORKER, order
    assert len([b for b in bulk_batches if started[b] > arrived[first]]) >= BULK_PAGES - 1, order
    assert [b for b in bulk_batches if arrived[b] > arrived[first]], order
    assert queue_for(Priority.CRITICAL).dask_priority > queue_for(Priority.BULK).dask_priority
