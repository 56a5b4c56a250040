"""Dask level: a run's queue priority reaches the Dask scheduler, so critical batches overtake bulk ones.

A real shared ``LocalCluster`` with one worker thread: bulk batches are queued first, critical
ones are submitted while the bulk ones wait; the critical ones finish first. Submission goes
through prefect-dask's ``DaskTaskRunner`` pointed at the cluster's address, under the same
``dask.annotate(priority=queue_for(...).dask_priority)`` that ``process_documents`` wraps its
batches in.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import dask
import pytest
from distributed import LocalCluster
from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect_dask import DaskTaskRunner

from docproc.queues import Priority, queue_for
from tests.fixtures.prefect_server import PrefectServer

BATCH_SECONDS = 0.3


@pytest.fixture
def shared_cluster() -> Iterator[LocalCluster]:
    cluster = LocalCluster(
        n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=40
    )
    try:
        yield cluster
    finally:
        cluster.close()


@task(cache_policy=NO_CACHE)
def batch(name: str) -> tuple[str, float]:
    time.sleep(BATCH_SECONDS)  # stands in for a batch's OCR: only the order of completion matters
    return name, time.time()


def test_critical_batches_overtake_queued_bulk_batches(
    shared_cluster: LocalCluster, prefect_api: PrefectServer
) -> None:
    @flow(task_runner=DaskTaskRunner(address=shared_cluster.scheduler_address))
    def two_runs() -> list[tuple[str, float]]:
        with dask.annotate(priority=queue_for(Priority.BULK).dask_priority):
            bulk = batch.map([f"bulk-{i}" for i in range(8)])
        # Let the scheduler queue the bulk batches and start the first before critical ones arrive.
        time.sleep(BATCH_SECONDS * 1.5)
        with dask.annotate(priority=queue_for(Priority.CRITICAL).dask_priority):
            critical = batch.map([f"critical-{i}" for i in range(3)])
        return [f.result() for f in [*bulk, *critical]]

    finished = [name for name, _ in sorted(two_runs(), key=lambda r: r[1])]
    critical_last = max(i for i, name in enumerate(finished) if name.startswith("critical"))
    bulk_after = [n for n in finished[critical_last + 1 :] if n.startswith("bulk")]
    # At most two bulk batches (running or already handed to the worker) may finish before
    # the critical ones; every other bulk batch waits behind them.
    assert len(bulk_after) >= 5, finished
    assert queue_for(Priority.CRITICAL).dask_priority > queue_for(Priority.BULK).dask_priority
