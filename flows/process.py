"""The main flow: list documents, inspect them, map page batches over Dask, report.

Thin on purpose: every unit of work is a call into ``docproc.jobs``; only keys, ids and
small models travel through Prefect and Dask, never document bytes.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, ParamSpec, TypeVar

from dask import annotate as dask_annotate  # type: ignore[attr-defined]
from prefect import Task, flow, get_run_logger, task, unmapped
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.cache_policies import NO_CACHE
from prefect.futures import PrefectFuture, as_completed
from prefect.runtime import flow_run
from prefect.tasks import exponential_backoff
from prefect_dask import DaskTaskRunner  # type: ignore[attr-defined]

from docproc import jobs, report, runtime
from docproc.errors import TransientError
from docproc.models import DocumentOutcome, DocumentSlice, PlannedDocument, RunReport, SliceOutcome
from docproc.queues import Priority, queue_for
from docproc.settings import Settings
from docproc.storage import ObjectInfo, Storage, open_storage
from flows import alerts

INSPECT_CHUNK = 64  # documents per inspection task: hashing and header checks, cheap next to OCR

P = ParamSpec("P")
ProgressListener = Callable[[int, int], None]
# The CLI registers a listener to draw its progress bar; called with (documents done, total).
progress_listeners: list[ProgressListener] = []


@functools.lru_cache(maxsize=4)
def _settings_from(overrides_json: str) -> Settings:
    settings = Settings(**json.loads(overrides_json))
    runtime.configure_process(settings)
    return settings


def worker_settings(overrides: dict[str, Any]) -> Settings:
    """Settings inside a task: the run's non-secret overrides on top of this worker's environment.

    Cached per process, so the models behind them are built once per worker.
    """
    return _settings_from(json.dumps(overrides, sort_keys=True, default=str))


def _is_transient(task: object, task_run: object, state: Any) -> bool:
    try:
        state.result()
    except TransientError:
        return True
    except Exception:  # noqa: BLE001 - anything else is a bug or bad input: retrying won't help
        return False
    return False


@task(name="inspect-documents", cache_policy=NO_CACHE)
def inspect_documents(
    source: str, destination: str, objects: list[tuple[str, int]], overrides: dict[str, Any]
) -> list[PlannedDocument | DocumentOutcome]:
    settings = worker_settings(overrides)
    src, dst = open_storage(source, settings), open_storage(destination, settings)
    return [jobs.inspect_object(src, dst, ObjectInfo(key, size), settings) for key, size in objects]


@task(name="process-batch", cache_policy=NO_CACHE)
def process_batch(
    source: str, destination: str, batch: list[DocumentSlice], overrides: dict[str, Any]
) -> list[DocumentOutcome | SliceOutcome]:
    settings = worker_settings(overrides)
    src, dst = open_storage(source, settings), open_storage(destination, settings)
    return [jobs.process_slice(src, dst, piece, settings) for piece in batch]


@task(name="finish-document", cache_policy=NO_CACHE)
def finish_document(
    source: str, destination: str, doc: PlannedDocument, overrides: dict[str, Any]
) -> DocumentOutcome:
    settings = worker_settings(overrides)
    src, dst = open_storage(source, settings), open_storage(destination, settings)
    return jobs.finish_document(src, dst, doc, settings)


def _with_core_share(settings: Settings) -> Settings:
    """On the local cluster, split this machine's cores between the worker processes."""
    if settings.compute_threads is not None or settings.dask_address or settings.dask_cluster_class:
        return settings
    share = max(1, runtime.available_cores() // (settings.workers * settings.threads_per_worker))
    return settings.model_copy(update={"compute_threads": share})


T = TypeVar("T")


def _retrying(work: Task[P, T], settings: Settings) -> Task[P, T]:
    """Transient errors (storage, network) retry with exponential backoff and jitter."""
    return work.with_options(
        retries=settings.retries,
        retry_delay_seconds=exponential_backoff(backoff_factor=settings.retry_delay_seconds),
        retry_jitter_factor=0.5,
        retry_condition_fn=_is_transient,
    )


def build_task_runner(settings: Settings) -> Any:  # a DaskTaskRunner; prefect-dask ships no types
    """A local LocalCluster by default; an existing scheduler or a cluster class by settings."""
    if settings.dask_address:
        return DaskTaskRunner(address=settings.dask_address)
    if settings.dask_cluster_class:
        adapt = {"minimum": 1, "maximum": settings.dask_adapt_max} if settings.dask_adapt_max else None
        return DaskTaskRunner(
            cluster_class=settings.dask_cluster_class,
            cluster_kwargs=dict(settings.dask_cluster_kwargs),
            adapt_kwargs=adapt,
        )
    worker_settings = _with_core_share(settings).overrides()
    return DaskTaskRunner(
        cluster_class="distributed.LocalCluster",
        cluster_kwargs={
            "n_workers": settings.workers,
            "threads_per_worker": settings.threads_per_worker,
            "processes": True,
            "dashboard_address": ":0",
            "silence_logs": logging.ERROR,
            "preload": ["docproc.dask_preload"],
            "preload_argv": ["--settings", json.dumps(worker_settings, default=str)],
        },
    )


def _excluded_prefix(src: Storage, dst: Storage) -> str | None:
    """When the destination lies inside the source, its keys are not inputs."""
    if dst.url.startswith(src.url.rstrip("/") + "/"):
        return dst.url[len(src.url.rstrip("/")) + 1 :].rstrip("/") + "/"
    return None


def _list_inputs(src: Storage, dst: Storage, keys: Sequence[str] | None = None) -> list[ObjectInfo]:
    """Every object under the source, or only those under ``keys`` (objects or sub-prefixes)."""
    excluded = _excluded_prefix(src, dst)
    listed = [o for k in keys for o in src.iter_objects(k)] if keys else list(src.iter_objects())
    unique = {o.key: o for o in listed if excluded is None or not o.key.startswith(excluded)}
    return sorted(unique.values(), key=lambda o: o.key)


class _Progress:
    """Progress of a run, for the CLI's listeners and the Prefect progress artifact."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.done = 0
        self.quarantined = 0
        self._lock = threading.Lock()
        self._artifact: Any = create_progress_artifact(0.0, key="docproc-progress", description=self._text())

    def _text(self) -> str:
        return f"{self.done}/{self.total} documents done, {self.quarantined} quarantined"

    def add(self, outcomes: Iterable[DocumentOutcome]) -> None:
        with self._lock:
            for outcome in outcomes:
                self.done += 1
                self.quarantined += outcome.status == "quarantined"
            percent = 100.0 * self.done / self.total if self.total else 100.0
            update_progress_artifact(self._artifact, percent, description=self._text())
            for listener in progress_listeners:
                listener(self.done, self.total)


def _collect(futures: Sequence[PrefectFuture[Any]]) -> Iterable[Any]:
    for future in as_completed(list(futures)):
        yield future.result()


@flow(
    name="process-documents",
    task_runner=build_task_runner(Settings()),
    log_prints=False,
    on_failure=[alerts.alert_on_failure],
    on_crashed=[alerts.alert_on_failure],
)
def process_documents(
    source: str,
    destination: str,
    priority: Priority = Priority.STANDARD,
    force: bool = False,
    settings_overrides: dict[str, Any] | None = None,
    keys: list[str] | None = None,
) -> RunReport:
    """Process every document under ``source`` into ``destination``.

    ``source`` and ``destination`` are local folders or ``s3://bucket/prefix`` URLs; ``keys``
    limits the run to those objects or sub-prefixes of ``source`` (the event receiver's runs).
    Bad documents are quarantined with a reason; the run goes on and reports them.
    """
    logger = get_run_logger()
    started_at = datetime.now(UTC)
    overrides = {**(settings_overrides or {}), "force": force}
    settings = _with_core_share(Settings(**overrides))
    overrides = settings.overrides()
    run_id = str(flow_run.get_id() or uuid.uuid4())
    src, dst = open_storage(source, settings), open_storage(destination, settings)
    objects = _list_inputs(src, dst, keys)
    logger.info("%d documents under %s", len(objects), src.url)

    progress = _Progress(len(objects))
    outcomes: list[DocumentOutcome] = []
    planned: list[PlannedDocument] = []
    # Queue priority reaches Dask: on a shared cluster critical batches overtake bulk ones.
    with dask_annotate(priority=queue_for(priority).dask_priority):
        inspections = _retrying(inspect_documents, settings).map(
            unmapped(source),
            unmapped(destination),
            [[(o.key, o.size) for o in chunk] for chunk in jobs.chunks(objects, INSPECT_CHUNK)],
            unmapped(overrides),
        )
        for items in _collect(inspections):
            decided = [i for i in items if isinstance(i, DocumentOutcome)]
            planned += [i for i in items if isinstance(i, PlannedDocument)]
            outcomes += decided
            progress.add(decided)

        planned, duplicates = jobs.split_duplicates(planned, settings)
        outcomes += duplicates
        progress.add(duplicates)
        batches = jobs.plan_batches(
            planned,
            jobs.batch_pages(sum(d.pages for d in planned), settings.batch_size, settings.workers),
        )
        logger.info(
            "%d to process (%d pages) in %d batches; %d skipped, %d quarantined",
            len(planned),
            sum(d.pages for d in planned),
            len(batches),
            sum(o.status == "skipped" for o in outcomes),
            sum(o.status == "quarantined" for o in outcomes),
        )
        futures = _retrying(process_batch, settings).map(
            unmapped(source), unmapped(destination), batches, unmapped(overrides)
        )
        # A document split across batches is finished as soon as its last slice is read.
        slices_left = Counter(piece.doc.id for batch in batches for piece in batch if not piece.whole)
        split_docs = {piece.doc.id: piece.doc for batch in batches for piece in batch}
        finishing = []
        for batch_outcomes in _collect(futures):
            done = [o for o in batch_outcomes if isinstance(o, DocumentOutcome)]
            outcomes += done
            progress.add(done)
            for piece in (o for o in batch_outcomes if isinstance(o, SliceOutcome)):
                slices_left[piece.id] -= 1
                if slices_left[piece.id] == 0:
                    finishing.append(
                        _retrying(finish_document, settings).submit(
                            source, destination, split_docs[piece.id], overrides
                        )
                    )
        for outcome in _collect(finishing):
            outcomes.append(outcome)
            progress.add([outcome])

    run_report = report.build_report(
        run_id, src.url, dst.url, outcomes, started_at, datetime.now(UTC), settings
    )
    prefix = report.write_report(dst, run_report)
    location = dst.url.rstrip("/") + "/" + prefix
    _publish(run_report, location)
    alerts.check_report(run_report, settings, location + "report.json")
    logger.info(
        "run %s: %s; report at %s",
        run_id,
        ", ".join(f"{v} {k}" for k, v in run_report.counts.items()),
        prefix,
    )
    return run_report


def _publish(run_report: RunReport, location: str) -> None:
    create_table_artifact(
        key="docproc-run-documents",
        table=[
            {
                "document": o.source,
                "status": o.status,
                "reason": o.reason or "",
                "quality": o.quality or "",
                "type": o.document_type or "",
                "result": o.result_key or "",
            }
            for o in run_report.documents
        ],
        description=f"Documents of run {run_report.run_id}",
    )
    create_markdown_artifact(
        key="docproc-run-report",
        markdown=report.render_markdown(run_report) + f"\nReport: `{location}report.json`\n",
        description=f"Run report, stored at {location}",
    )
