"""Apply the chart's work-pool settings after `docproc pool apply` has created the pool.

Run by the chart's post-install/upgrade Job (mounted from a ConfigMap), so the Helm values stay
the source of truth on Kubernetes:

- the pool's base job template becomes the chart's (image, security, secrets, timeouts);
- each queue gets the chart's priority and concurrency limit;
- each deployment on a queue gets that queue's job variables (PriorityClass, resources).

Prefect's worker applies `--base-job-template` only when it creates the pool, so an upgrade
that changes the template needs this step.

Usage: python configure_pool.py POOL CONFIG_DIR   (PREFECT_API_URL from the environment)
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from pathlib import Path
from typing import Any

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import DeploymentUpdate, WorkPoolUpdate
from prefect.client.schemas.filters import WorkPoolFilter, WorkPoolFilterName, WorkQueueFilter
from prefect.client.schemas.sorting import DeploymentSort

logger = logging.getLogger("docproc.configure_pool")


async def configure(pool: str, config_dir: Path) -> None:
    template: dict[str, Any] = json.loads((config_dir / "base-job-template.json").read_text())
    queues: dict[str, dict[str, Any]] = json.loads((config_dir / "queues.json").read_text())
    job_variables: dict[str, dict[str, Any]] = json.loads(
        (config_dir / "queue-job-variables.json").read_text()
    )
    async with get_client() as client:
        await client.update_work_pool(pool, WorkPoolUpdate(base_job_template=template))
        logger.info("work pool %s: base job template applied", pool)

        # Every argument explicit: the client sends nulls for omitted ones, which the server rejects.
        pool_queues = await client.read_work_queues(
            work_pool_name=pool, work_queue_filter=WorkQueueFilter(), limit=200, offset=0
        )
        existing = {q.name: q for q in pool_queues}
        missing = sorted(set(queues) - set(existing))
        if missing:
            raise SystemExit(f"work pool {pool}: queues {missing} missing; did `docproc pool apply` run?")
        for name, spec in queues.items():
            await client.update_work_queue(
                existing[name].id,
                priority=spec["priority"],
                concurrency_limit=spec["concurrency_limit"],
            )
            logger.info("queue %s: priority %s, limit %s", name, spec["priority"], spec["concurrency_limit"])

        deployments = await client.read_deployments(
            work_pool_filter=WorkPoolFilter(name=WorkPoolFilterName(any_=[pool])),
            limit=200,
            sort=DeploymentSort.NAME_ASC,
        )
        for deployment in deployments:
            queue_vars = job_variables.get(deployment.work_queue_name or "")
            if queue_vars is None:
                continue
            merged = {**(deployment.job_variables or {}), **queue_vars}
            await client.update_deployment(deployment.id, DeploymentUpdate(job_variables=merged))
            logger.info(
                "deployment %s: job variables of queue %s", deployment.name, deployment.work_queue_name
            )


def main(argv: list[str]) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    pool, config_dir = argv
    asyncio.run(configure(pool, Path(config_dir)))


if __name__ == "__main__":
    main(sys.argv[1:])
