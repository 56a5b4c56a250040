"""The work pool and its priority queues of docproc; its deployments go through `prefect deploy`.

The queues come from ``docproc.queues`` (the one definition); the deployments from
``prefect.yaml``, registered by Prefect's own ``prefect deploy --all`` so that what a user
deploys by hand and what ``docproc pool apply`` deploys are one and the same. Everything here
is idempotent: applying twice leaves one pool, one queue per priority and one deployment per
entry, updated in place.

Queue priority at the pool level: the server hands a polling worker its scheduled runs
ordered by queue priority first and scheduled time second, and only as many as the pool's free
slots (see prefect/server/database/sql/*/get-runs-from-worker-queues.sql.jinja). Prefect
issue 14950 was a worker that re-sorted that answer by scheduled time, so late bulk runs
overtook a critical one; the worker of Prefect 3.8 no longer sorts, and tests/test_queues.py
holds the late-run case on a real server and worker.
"""

from __future__ import annotations

import copy
import logging
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal
from uuid import UUID

import yaml
from prefect.client.orchestration import PrefectClient, get_client
from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterKey,
    FlowFilter,
    FlowFilterName,
    WorkPoolFilter,
    WorkPoolFilterName,
)
from prefect.client.schemas.objects import FlowRun, WorkPool
from prefect.client.schemas.sorting import ArtifactSort, DeploymentSort, FlowRunSort
from prefect.exceptions import ObjectNotFound
from prefect.settings import get_current_settings
from prefect.utilities.asyncutils import run_coro_as_sync
from prefect.utilities.urls import url_for

from docproc.errors import ConfigurationError
from docproc.queues import QUEUES, WORK_POOL_NAME, Priority, QueueSpec, queue_for

logger = logging.getLogger(__name__)

_FLOWS_DIR = Path(__file__).resolve().parent
# The repository's prefect.yaml; an installed wheel (the image) has its copy inside flows/.
PROJECT_FILE = next(
    (p for p in (_FLOWS_DIR / "prefect.yaml", _FLOWS_DIR.parent / "prefect.yaml") if p.is_file()),
    _FLOWS_DIR.parent / "prefect.yaml",
)
PROCESS_FLOW_NAME = "process-documents"
PoolType = Literal["kubernetes", "process"]
# The pool's own default queue is not used by docproc's deployments; it goes last so it can
# never tie with or outrank a docproc queue.
DEFAULT_QUEUE_PRIORITY = 1000
# Importing the flows loads torch and spaCy: generous on a loaded machine.
DEPLOY_TIMEOUT = 600.0


def load_project(path: Path = PROJECT_FILE) -> dict[str, Any]:
    """prefect.yaml as Prefect reads it (``prefect deploy`` validates it)."""
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigurationError(f"cannot read {path}: {exc}") from exc
    if not isinstance(raw, dict) or not isinstance(raw.get("deployments"), list):
        raise ConfigurationError(f"{path}: no deployments list")
    return raw


def with_overrides(
    project: dict[str, Any],
    *,
    parameters: dict[str, Any] | None = None,
    schedule: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A copy of ``project`` with ``parameters`` set where a deployment already has that parameter,
    and ``schedule`` (a prefect.yaml schedule entry) replacing every deployment's schedules."""
    changed = copy.deepcopy(project)
    for entry in changed["deployments"]:
        params = entry.setdefault("parameters", {})
        for name, value in (parameters or {}).items():
            if name in params:
                params[name] = value
        if schedule is not None and entry.get("schedules"):
            entry["schedules"] = [schedule]
    return changed


# -- pure builders ---------------------------------------------------------------------------


def base_job_template(pool_type: PoolType) -> dict[str, Any]:
    """The worker type's default job template; for Kubernetes with a PriorityClass variable added.

    prefect-kubernetes' template already has cpu/memory request and limit variables; a
    PriorityClass is what lets the cluster scheduler (and preemption) favour critical pods.
    On a process pool the deployments' Kubernetes variables are carried but unused.
    """
    if pool_type == "process":
        from prefect.workers.process import ProcessWorker

        process_template: dict[str, Any] = ProcessWorker.get_default_base_job_template()
        return process_template
    from prefect_kubernetes.worker import KubernetesWorker

    template: dict[str, Any] = copy.deepcopy(KubernetesWorker.get_default_base_job_template())
    template["variables"]["properties"]["priority_class_name"] = {
        "title": "Priority class name",
        "description": "Kubernetes PriorityClass of the job's pod (docproc-critical, -standard, -bulk).",
        "type": "string",
    }
    pod_spec = template["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]
    # A lone placeholder with no value is dropped from the manifest, so this stays optional.
    pod_spec["priorityClassName"] = "{{ priority_class_name }}"
    return template


def deployment_name(priority: Priority | str) -> str:
    """``flow/deployment`` of the process deployment serving a priority."""
    return f"{PROCESS_FLOW_NAME}/{queue_for(priority).name}"


# -- applying against the API ----------------------------------------------------------------


@dataclass(frozen=True)
class ApplyResult:
    pool: str
    pool_type: str
    created_pool: bool
    queues: dict[str, int]
    deployments: dict[str, UUID] = field(default_factory=dict)


async def apply_pool(
    client: PrefectClient,
    pool_type: PoolType,
    *,
    concurrency_limit: int | None = None,
    job_defaults: dict[str, Any] | None = None,
) -> tuple[WorkPool, bool]:
    """Create or update the pool and its queues. ``concurrency_limit=None`` keeps the pool's limit."""
    template = base_job_template(pool_type)
    for name, value in (job_defaults or {}).items():
        props = template["variables"]["properties"]
        if name not in props:
            raise ConfigurationError(f"the {pool_type} pool has no job variable {name!r}")
        props[name]["default"] = value
    created = False
    try:
        pool = await client.read_work_pool(WORK_POOL_NAME)
    except ObjectNotFound:
        pool = await client.create_work_pool(
            WorkPoolCreate(
                name=WORK_POOL_NAME,
                type=pool_type,
                description="docproc document processing, one queue per priority",
                base_job_template=template,
                concurrency_limit=concurrency_limit,
            )
        )
        created = True
        logger.info("created work pool %s (%s)", WORK_POOL_NAME, pool_type)
    else:
        if pool.type != pool_type:
            raise ConfigurationError(
                f"work pool {WORK_POOL_NAME!r} exists with type {pool.type!r}, not {pool_type!r}; "
                "delete it first (`prefect work-pool delete docproc`) to change its type"
            )
        update: dict[str, Any] = {"base_job_template": template}
        if concurrency_limit is not None:
            update["concurrency_limit"] = concurrency_limit
        await client.update_work_pool(WORK_POOL_NAME, WorkPoolUpdate(**update))
        logger.info("updated work pool %s", WORK_POOL_NAME)

    await _apply_queues(client)
    return await client.read_work_pool(WORK_POOL_NAME), created


async def _apply_queues(client: PrefectClient) -> None:
    existing = {q.name: q for q in await client.read_work_queues(work_pool_name=WORK_POOL_NAME)}
    # Queue priorities are unique in a pool and the server shifts others to keep them so:
    # apply in priority order so each queue lands on its number.
    for spec in sorted(QUEUES.values(), key=lambda s: s.priority):
        await _apply_queue(client, spec, existing.get(spec.name))
    default = existing.get("default")
    if default is not None and default.priority != DEFAULT_QUEUE_PRIORITY:
        await client.update_work_queue(default.id, priority=DEFAULT_QUEUE_PRIORITY)


async def _apply_queue(client: PrefectClient, spec: QueueSpec, current: Any) -> None:
    if current is None:
        await client.create_work_queue(
            name=spec.name,
            work_pool_name=WORK_POOL_NAME,
            priority=spec.priority,
            concurrency_limit=spec.concurrency_limit,
            description=spec.description,
        )
        logger.info("created queue %s (priority %d)", spec.name, spec.priority)
        return
    wanted = (spec.priority, spec.concurrency_limit, spec.description)
    if (current.priority, current.concurrency_limit, current.description) != wanted:
        await client.update_work_queue(
            current.id,
            priority=spec.priority,
            concurrency_limit=spec.concurrency_limit,
            description=spec.description,
        )
        logger.info("updated queue %s (priority %d)", spec.name, spec.priority)


def prefect_deploy(project_file: Path) -> str:
    """``prefect --no-prompt deploy --all --prefect-file PROJECT_FILE`` against this process's API.

    Prefect's own command, so a deployment made here is exactly what a user's ``prefect
    deploy`` makes. Returns its output; a failure raises ConfigurationError with the output.
    """
    env = dict(os.environ)
    # The API this process talks to, also when it was set by a profile or temporary_settings.
    api = get_current_settings().api
    if api.url:
        env["PREFECT_API_URL"] = api.url
    if api.key is not None:
        env["PREFECT_API_KEY"] = api.key.get_secret_value()
    command = [sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all"]
    command += ["--prefect-file", str(project_file)]
    try:
        done = subprocess.run(
            command,
            env=env,
            cwd=project_file.parent,
            capture_output=True,
            text=True,
            timeout=DEPLOY_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise ConfigurationError(f"`prefect deploy` did not finish in {DEPLOY_TIMEOUT:.0f} s") from exc
    output = done.stdout + done.stderr
    if done.returncode != 0:
        raise ConfigurationError(f"`prefect deploy --all` failed ({done.returncode}):\n{output[-4000:]}")
    return output


async def read_pool_deployments(client: PrefectClient, pool: str = WORK_POOL_NAME) -> dict[str, UUID]:
    """``flow/deployment -> id`` of every deployment on ``pool``."""
    found = await client.read_deployments(
        work_pool_filter=WorkPoolFilter(name=WorkPoolFilterName(any_=[pool])),
        sort=DeploymentSort.NAME_ASC,
    )
    flows = {d.flow_id: (await client.read_flow(d.flow_id)).name for d in found}
    return {f"{flows[d.flow_id]}/{d.name}": d.id for d in found}


def apply_all(
    pool_type: PoolType,
    *,
    concurrency_limit: int | None = None,
    job_defaults: dict[str, Any] | None = None,
    project_file: Path = PROJECT_FILE,
    parameters: dict[str, Any] | None = None,
    schedule: dict[str, Any] | None = None,
) -> ApplyResult:
    """The pool and its queues, then ``prefect deploy --all`` of ``project_file``.

    ``parameters`` and ``schedule`` override prefect.yaml (see ``with_overrides``); the
    overridden copy is written to a temporary file for ``prefect deploy``.
    """
    project = load_project(project_file)
    for entry in project["deployments"]:
        target = (entry.get("work_pool") or {}).get("name")
        if target != WORK_POOL_NAME:
            raise ConfigurationError(f"deployment {entry.get('name')!r} targets pool {target!r}")

    async def pool_and_queues() -> tuple[WorkPool, bool]:
        async with get_client() as client:
            return await apply_pool(
                client, pool_type, concurrency_limit=concurrency_limit, job_defaults=job_defaults
            )

    applied: tuple[WorkPool, bool] = run_coro_as_sync(pool_and_queues())
    pool, created = applied
    if parameters or schedule:
        with tempfile.TemporaryDirectory(prefix="docproc-deploy-") as tmp:
            changed = Path(tmp) / "prefect.yaml"
            changed.write_text(
                yaml.safe_dump(with_overrides(project, parameters=parameters, schedule=schedule))
            )
            prefect_deploy(changed)
    else:
        prefect_deploy(project_file)

    async def read_back() -> tuple[dict[str, int], dict[str, UUID]]:
        async with get_client() as client:
            queues = {q.name: q.priority for q in await client.read_work_queues(work_pool_name=pool.name)}
            return queues, await read_pool_deployments(client, pool.name)

    read: tuple[dict[str, int], dict[str, UUID]] = run_coro_as_sync(read_back())
    queues, ids = read
    return ApplyResult(pool.name, pool.type, created, queues, ids)


# -- submitting and watching runs ------------------------------------------------------------


async def submit_run_async(
    client: PrefectClient,
    source: str,
    *,
    priority: Priority | str = Priority.STANDARD,
    destination: str | None = None,
    force: bool = False,
    keys: list[str] | None = None,
    settings_overrides: dict[str, Any] | None = None,
    idempotency_key: str | None = None,
    tags: list[str] | None = None,
) -> FlowRun:
    """Create a run of the process deployment of ``priority``, scheduled now, on its queue.

    ``destination=None`` keeps the deployment's default; ``keys`` restricts the run to those
    keys (objects or sub-prefixes) under ``source``. The run is scheduled for *now*: a
    run in a higher-priority queue is handed out first even when lower-priority runs are late.
    """
    queue = queue_for(priority)
    try:
        deployment = await client.read_deployment_by_name(deployment_name(priority))
    except ObjectNotFound as exc:
        raise ConfigurationError(
            f"deployment {deployment_name(priority)!r} not found; run `docproc pool apply` first"
        ) from exc
    parameters: dict[str, Any] = {"source": source, "priority": queue.name, "force": force}
    if destination is not None:
        parameters["destination"] = destination
    if keys is not None:
        parameters["keys"] = keys
    if settings_overrides:
        parameters["settings_overrides"] = settings_overrides
    run = await client.create_flow_run_from_deployment(
        deployment.id,
        parameters=parameters,
        work_queue_name=queue.name,
        idempotency_key=idempotency_key,
        tags=tags,
    )
    logger.info("submitted flow run %s (%s) on queue %s", run.id, run.name, queue.name)
    return run


def submit_run(source: str, **kwargs: Any) -> FlowRun:
    async def go() -> FlowRun:
        async with get_client() as client:
            return await submit_run_async(client, source, **kwargs)

    run: FlowRun = run_coro_as_sync(go())
    return run


def run_url(run: FlowRun) -> str | None:
    return url_for(run)


_PROGRESS = re.compile(r"(\d+)/(\d+) documents done, (\d+) quarantined")
PROGRESS_ARTIFACT_KEY = "docproc-progress"
REPORT_ARTIFACT_KEY = "docproc-run-report"


@dataclass(frozen=True)
class RunStatus:
    id: UUID
    name: str
    state: str
    queue: str | None
    deployment: str | None
    created: datetime | None
    start_time: datetime | None
    done: int | None
    total: int | None
    quarantined: int | None
    report: str | None
    url: str | None


async def read_status_async(client: PrefectClient, run_id: UUID) -> RunStatus:
    """State and progress of a run: documents done/total and quarantined, from its artifacts."""
    run = await client.read_flow_run(run_id)
    artifacts = await client.read_artifacts(
        artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]),
            key=ArtifactFilterKey(any_=[PROGRESS_ARTIFACT_KEY, REPORT_ARTIFACT_KEY]),
        ),
        sort=ArtifactSort.CREATED_DESC,
    )
    done = total = quarantined = None
    report = None
    for artifact in artifacts:
        if artifact.key == PROGRESS_ARTIFACT_KEY and artifact.description:
            match = _PROGRESS.search(artifact.description)
            if match:
                done, total, quarantined = (int(g) for g in match.groups())
        elif artifact.key == REPORT_ARTIFACT_KEY and artifact.description:
            report = artifact.description.removeprefix("Run report, stored at ").strip() + "report.json"
    deployment = None
    if run.deployment_id:
        try:
            d = await client.read_deployment(run.deployment_id)
            deployment = d.name
        except ObjectNotFound:
            deployment = None
    return RunStatus(
        id=run.id,
        name=run.name,
        state=(run.state.name if run.state else None) or "unknown",
        queue=run.work_queue_name,
        deployment=deployment,
        created=run.created,
        start_time=run.start_time,
        done=done,
        total=total,
        quarantined=quarantined,
        report=report,
        url=url_for(run),
    )


async def recent_runs_async(client: PrefectClient, limit: int = 20) -> list[RunStatus]:
    runs = await client.read_flow_runs(
        flow_filter=FlowFilter(name=FlowFilterName(any_=[PROCESS_FLOW_NAME])),
        sort=FlowRunSort.EXPECTED_START_TIME_DESC,
        limit=limit,
    )
    return [await read_status_async(client, run.id) for run in runs]


def read_status(run_id: UUID | None, limit: int = 20) -> list[RunStatus]:
    async def go() -> list[RunStatus]:
        async with get_client() as client:
            if run_id is not None:
                return [await read_status_async(client, run_id)]
            return await recent_runs_async(client, limit)

    result: list[RunStatus] = run_coro_as_sync(go())
    return result


__all__ = [
    "PROCESS_FLOW_NAME",
    "PROJECT_FILE",
    "ApplyResult",
    "RunStatus",
    "apply_all",
    "base_job_template",
    "deployment_name",
    "load_project",
    "prefect_deploy",
    "read_status",
    "submit_run",
    "with_overrides",
]
