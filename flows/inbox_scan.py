"""The scheduled safety net behind the MinIO events: submit what lies under inbox/ at standard priority.

A scan does not need to know which documents are new: the process run it submits skips every
document whose content-addressed result exists, so nothing is processed twice. What the scan
avoids is submitting the same work again and again: the run's idempotency key is a hash of
the inbox listing (keys and sizes), so an unchanged inbox maps to the run already submitted
and only a changed listing creates a new run.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from prefect import flow, get_run_logger
from prefect.client.orchestration import get_client
from prefect.utilities.asyncutils import run_coro_as_sync

from docproc.queues import Priority
from docproc.settings import Settings
from docproc.storage import ObjectInfo, open_storage
from flows.deployments import submit_run_async

logger = logging.getLogger(__name__)


def listing_fingerprint(objects: list[ObjectInfo]) -> str:
    digest = hashlib.sha256()
    for obj in sorted(objects, key=lambda o: o.key):
        digest.update(f"{obj.key}\0{obj.size}\n".encode())
    return digest.hexdigest()[:32]


@flow(name="inbox-scan", log_prints=False)
def scan_inbox(
    inbox: str,
    destination: str,
    priority: Priority = Priority.STANDARD,
    settings_overrides: dict[str, Any] | None = None,
) -> str | None:
    """Submit one process run over ``inbox`` if it holds documents; returns the run id or None."""
    log = get_run_logger()
    settings = Settings(**(settings_overrides or {}))
    src = open_storage(inbox, settings)
    objects = list(src.iter_objects())
    if not objects:
        log.info("inbox %s is empty", src.url)
        return None
    key = f"inbox-scan:{src.url}:{listing_fingerprint(objects)}"

    async def submit() -> str:
        async with get_client() as client:
            run = await submit_run_async(
                client,
                inbox,
                priority=priority,
                destination=destination,
                settings_overrides=settings.overrides() or None,
                idempotency_key=key,
                tags=["inbox-scan"],
            )
        return str(run.id)

    run_id: str = run_coro_as_sync(submit())
    log.info("%d objects under %s: flow run %s at %s priority", len(objects), src.url, run_id, priority)
    return run_id
