"""The work pool, its priority queues and the deployments of docproc, applied against a Prefect API.

The queues come from ``docproc.queues`` (the one definition); the deployments from
``prefect.yaml``. Everything here is idempotent: applying twice leaves one pool, one queue per
priority and one deployment per entry, updated in place.

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
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal
from uuid import UUID

import yaml
from prefect.client.orchestration import PrefectClient, get_client
from prefect.client.schemas.actions import DeploymentScheduleCreate, WorkPoolCreate, WorkPoolUpdate
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterKey,
    FlowFilter,
    FlowFilterName,
    WorkQueueFilter,
)
from prefect.client.schemas.objects import Artifact, FlowRun, WorkPool
from prefect.client.schemas.schedules import CronSchedule, IntervalSchedule
from prefect.client.schemas.sorting import ArtifactSort, FlowRunSort
from prefect.exceptions import ObjectNotFound
from prefect.flows import Flow, load_flow_from_entrypoint
from prefect.utilities.asyncutils import run_coro_as_sync
from prefect.utilities.callables import parameter_schema
from prefect.utilities.urls import url_for
from pydantic import BaseModel, ConfigDict, Field, model_validator

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
# Prefect 3.8's client sends null for an omitted filter, limit and offset, which the server refuses.
_ALL_QUEUES: dict[str, Any] = {"work_queue_filter": WorkQueueFilter(), "limit": 200, "offset": 0}


# -- prefect.yaml, validated at the boundary ------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ScheduleEntry(_Strict):
    interval: float | None = Field(None, gt=0, description="seconds between runs")
    cron: str | None = None
    timezone: str | None = None
    active: bool = True

    @model_validator(mode="after")
    def _one_kind(self) -> ScheduleEntry:
        if (self.interval is None) == (self.cron is None):
            raise ValueError("a schedule needs exactly one of interval or cron")
        return self


class WorkPoolEntry(_Strict):
    name: str
    work_queue_name: str
    job_variables: dict[str, Any] = Field(default_factory=dict)


class DeploymentEntry(_Strict):
    name: str
    entrypoint: str
    description: str | None = None
    tags: list[str] = Field(default_factory=list)
    parameters: dict[str, Any] = Field(default_factory=dict)
    schedules: list[ScheduleEntry] = Field(default_factory=list)
    work_pool: WorkPoolEntry


class ProjectFile(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    name: str
    prefect_version: str | None = Field(None, alias="prefect-version")
    deployments: list[DeploymentEntry]


def load_project(path: Path = PROJECT_FILE) -> ProjectFile:
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigurationError(f"cannot read {path}: {exc}") from exc
    try:
        return ProjectFile.model_validate(raw)
    except ValueError as exc:
        raise ConfigurationError(f"{path}: {exc}") from exc


# -- pure builders ---------------------------------------------------------------------------


def base_job_template(pool_type: PoolType) -> dict[str, Any]:
    """The worker type's default job template; for Kubernetes with a PriorityClass variable added.

    prefect-kubernetes' template already has cpu/memory request and limit variables; a
    PriorityClass is what lets the cluster scheduler (and preemption) favour critical pods.
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


def job_variables_for_pool(job_variables: dict[str, Any], template: dict[str, Any]) -> dict[str, Any]:
    """Keep the variables the pool's job template declares; the others mean nothing to its worker."""
    known = set(template.get("variables", {}).get("properties", {}))
    return {k: v for k, v in job_variables.items() if k in known}


def schedule_create(entry: ScheduleEntry) -> DeploymentScheduleCreate:
    if entry.interval is not None:
        seconds = timedelta(seconds=entry.interval)
        schedule: IntervalSchedule | CronSchedule = IntervalSchedule(interval=seconds)
    else:
        assert entry.cron is not None
        schedule = CronSchedule(cron=entry.cron, timezone=entry.timezone)
    return DeploymentScheduleCreate(schedule=schedule, active=entry.active)


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
    existing = {
        q.name: q for q in await client.read_work_queues(work_pool_name=WORK_POOL_NAME, **_ALL_QUEUES)
    }
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


async def register_deployments(
    client: PrefectClient,
    project: ProjectFile,
    pool: WorkPool,
    *,
    parameter_overrides: dict[str, dict[str, Any]] | None = None,
    schedule_overrides: dict[str, list[ScheduleEntry]] | None = None,
) -> dict[str, UUID]:
    """Create or update every deployment of ``project`` on ``pool``; returns ``flow/name -> id``."""
    ids: dict[str, UUID] = {}
    for entry in project.deployments:
        if entry.work_pool.name != pool.name:
            raise ConfigurationError(f"deployment {entry.name!r} targets pool {entry.work_pool.name!r}")
        flow: Flow[..., Any] = load_flow_from_entrypoint(entry.entrypoint)
        flow_id = await client.create_flow_from_name(flow.name)
        parameters = {**entry.parameters, **(parameter_overrides or {}).get(entry.name, {})}
        schedules = (schedule_overrides or {}).get(entry.name, entry.schedules)
        job_variables = job_variables_for_pool(entry.work_pool.job_variables, pool.base_job_template)
        dropped = sorted(set(entry.work_pool.job_variables) - set(job_variables))
        if dropped:
            logger.info("%s: job variables %s do not apply to a %s pool", entry.name, dropped, pool.type)
        deployment_id = await client.create_deployment(
            flow_id=flow_id,
            name=entry.name,
            description=entry.description,
            tags=entry.tags,
            entrypoint=entry.entrypoint,
            parameters=parameters,
            parameter_openapi_schema=parameter_schema(flow).model_dump_for_openapi(),
            enforce_parameter_schema=True,
            work_pool_name=pool.name,
            work_queue_name=entry.work_pool.work_queue_name,
            job_variables=job_variables,
            schedules=[schedule_create(s) for s in schedules],
            pull_steps=[],
        )
        ids[f"{flow.name}/{entry.name}"] = deployment_id
        logger.info("registered deployment %s/%s", flow.name, entry.name)
    return ids


async def apply_all_async(
    pool_type: PoolType,
    *,
    concurrency_limit: int | None = None,
    job_defaults: dict[str, Any] | None = None,
    project_file: Path = PROJECT_FILE,
    parameter_overrides: dict[str, dict[str, Any]] | None = None,
    schedule_overrides: dict[str, list[ScheduleEntry]] | None = None,
) -> ApplyResult:
    project = load_project(project_file)
    async with get_client() as client:
        pool, created = await apply_pool(
            client, pool_type, concurrency_limit=concurrency_limit, job_defaults=job_defaults
        )
        ids = await register_deployments(
            client,
            project,
            pool,
            parameter_overrides=parameter_overrides,
            schedule_overrides=schedule_overrides,
        )
        queues = {
            q.name: q.priority for q in await client.read_work_queues(work_pool_name=pool.name, **_ALL_QUEUES)
        }
    return ApplyResult(pool.name, pool.type, created, queues, ids)


def apply_all(pool_type: PoolType, **kwargs: Any) -> ApplyResult:
    result: ApplyResult = run_coro_as_sync(apply_all_async(pool_type, **kwargs))
    return result


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
    # Through the REST API directly: the 3.8 client sends null for omitted flow-run and
    # task-run filters (refused with 422), and an empty task-run filter drops the run-level
    # artifacts, whose task_run_id is null.
    artifact_filter = ArtifactFilter(
        flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]),
        key=ArtifactFilterKey(any_=[PROGRESS_ARTIFACT_KEY, REPORT_ARTIFACT_KEY]),
    )
    response = await client._client.post(
        "/artifacts/filter",
        json={
            "artifacts": artifact_filter.model_dump(mode="json", exclude_unset=True),
            "sort": ArtifactSort.CREATED_DESC.value,
            "limit": 50,
            "offset": 0,
        },
    )
    response.raise_for_status()
    artifacts = [Artifact.model_validate(a) for a in response.json()]
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
        offset=0,
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
    "read_status",
    "submit_run",
]
