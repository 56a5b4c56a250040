"""Priority queues: defined once, used by the flow, the CLI, prefect.yaml and the Helm chart.

Lower ``priority`` numbers are served first by Prefect work queues. ``dask_priority`` is the
Dask scheduler priority given to a run's batches (higher runs first), so that on a shared
Dask cluster critical batches overtake bulk batches already queued.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

WORK_POOL_NAME = "docproc"


class Priority(enum.StrEnum):
    CRITICAL = "critical"
    STANDARD = "standard"
    BULK = "bulk"


@dataclass(frozen=True)
class QueueSpec:
    name: str
    priority: int
    concurrency_limit: int | None
    dask_priority: int
    description: str


QUEUES: dict[Priority, QueueSpec] = {
    Priority.CRITICAL: QueueSpec(
        name="critical",
        priority=1,
        concurrency_limit=None,
        dask_priority=100,
        description="Time-critical documents (payroll, customer-facing); served first.",
    ),
    Priority.STANDARD: QueueSpec(
        name="standard",
        priority=10,
        concurrency_limit=10,
        dask_priority=10,
        description="Default queue for new documents.",
    ),
    Priority.BULK: QueueSpec(
        name="bulk",
        priority=100,
        concurrency_limit=4,
        dask_priority=0,
        description="Backfills and archive scans; served when nothing else waits.",
    ),
}


def queue_for(priority: Priority | str) -> QueueSpec:
    return QUEUES[Priority(priority)]
