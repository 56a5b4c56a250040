"""The main flow: list documents, inspect them, run page batches on Dask, report.

Thin on purpose: every unit of work is a call into ``docproc.jobs``; only keys, ids and
small models travel through Prefect and Dask, never document bytes.

Units of work go to Dask directly (a few Prefect task runs per 100,000 documents would be
thousands of API round trips); each document attempt inside one runs under the time and
memory bounds of ``docproc.isolation``. A unit whose worker dies (a native crash, an OOM
kill, a breached bound) comes back as ``KilledWorker``: its documents are tried again alone,
and a document that ends a worker twice is quarantined as ``worker_crashed`` or ``timeout``.
"""

from __future__ import annotations

import functools
import itertools
import json
import logging
import math
import os
import random
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import dask
import distributed
from distributed import KilledWorker
from prefect import flow, get_run_logger
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.context import FlowRunContext
from prefect.runtime import flow_run
from prefect_dask import DaskTaskRunner  # type: ignore[attr-defined]

from docproc import isolation, jobs, report, runtime
from docproc.errors import (
    AttemptTimeoutError,
    ConfigurationError,
    DocprocError,
    ObjectNotFoundError,
    TransientError,
    WorkerCrashedError,
)
from docproc.index import SourceIndex
from docproc.models import (
    AttemptEvidence,
    DocumentOutcome,
    DocumentSlice,
    PlannedDocument,
    RunReport,
    SliceOutcome,
)
from docproc.queues import Priority, queue_for
from docproc.settings import Settings
from docproc.storage import ObjectInfo, Storage, open_storage
from flows import alerts

log = logging.getLogger(__name__)

INSPECT_CHUNK = 64  # documents per inspection unit: hashing and header checks, cheap next to OCR
# Units a run keeps submitted to Dask, per thread of the cluster (settings.units_in_flight
# overrides): one running and the others waiting at the scheduler keeps every thread busy, and
# the scheduler and the flow hold only these units' arguments, not the whole run's. More than
# two per thread: Dask queues only "root-ish" tasks at its scheduler, those of a group larger
# than twice the cluster's threads; others go to a worker at once, to wait behind its unit.
UNITS_PER_THREAD = 3
MIN_UNITS_IN_FLIGHT = 8  # also while an adaptive cluster has no workers yet
THREADS_REFRESH_SECONDS = 10.0  # an adaptive cluster's threads are re-read this often
PROGRESS_SECONDS = 2.0  # the progress artifact is updated at most this often
# A document whose attempts end their worker this many times is quarantined.
MAX_WORKER_DEATHS = 2
LOST_WORKER_TIMEOUT = "15 minutes"
# Dask's profiler samples every worker thread each 10 ms: measured, 1.5% of a core per worker
# (a worker process's own CPU with a task waiting in a C call: 3.0% with it, 1.6% without),
# for stacks that all end in an engine's native call. The local cluster and the chart's Dask
# pods (helm/docproc/values.yaml dask.config, the same settings) run without it.
#
# Every Dask server (the scheduler, each nanny and worker) also ticks its event loop 50 times
# a second, polls its process's memory 10 times (nannies and workers) and its system figures
# twice: on an idle 2-worker cluster 7.7% of a core in all (3.5% in the flow's process, 2.1%
# in each worker), against 2.7% at 200 ms, 500 ms and 2 s. A unit of work takes seconds; a
# stalled loop is still reported after the same 3 s, and each document attempt has its own
# memory watchdog (docproc.isolation) besides the nanny's.
#
# The scheduler hands a worker thread one queued unit at a time; the others wait at the
# scheduler (Dask's default 1.1 rounds up to two per single-threaded worker). A unit held
# behind a long one on a busy worker waits there while another worker runs out of work:
# measured with 90 tesseract pages on 2 workers, one worker idle for the last 6 s of a 61 s
# run (10% of its time), none with this. At the scheduler the next free thread also takes the
# most urgent run's unit (their Dask priority) instead of one a worker already holds.
DASK_SERVER_CONFIG: dict[str, Any] = {
    "distributed.scheduler.worker-saturation": 1.0,
    "distributed.worker.profile.enabled": False,
    "distributed.admin.tick.interval": "200ms",
    "distributed.worker.memory.monitor-interval": "500ms",
    "distributed.admin.system-monitor.interval": "2s",
}
OUTPUT_PREFIXES = (
    "results/",
    "text/",
    "pdf/",
    "markdown/",
    "quarantine/",
    "parts/",
    "runs/",
    "attempts/",
    "index/",
)

ProgressListener = Callable[[int, int], None]
# The CLI registers a listener to draw its progress bar; called with (documents done, total).
progress_listeners: list[ProgressListener] = []


@functools.lru_cache(maxsize=4)
def _settings_from(settings_json: str) -> Settings:
    settings = Settings.from_flow(json.loads(settings_json))
    runtime.configure_process(settings)
    return settings


def worker_settings(values: dict[str, Any]) -> Settings:
    """Settings inside a unit of work: the flow's (``Settings.for_workers``), with only
    credentials and connections from this worker's environment.

    Cached per process, so the models behind them are built once per worker.
    """
    return _settings_from(json.dumps(values, sort_keys=True, default=str))


def _with_core_share(settings: Settings) -> Settings:
    """On the local cluster, split this machine's cores between the worker processes."""
    if settings.compute_threads is not None or settings.dask_address or settings.dask_cluster_class:
        return settings
    share = max(1, runtime.available_cores() // (settings.workers * settings.threads_per_worker))
    return settings.model_copy(update={"compute_threads": share})


def build_task_runner(settings: Settings) -> Any:  # a DaskTaskRunner; prefect-dask ships no types
    """A local LocalCluster by default; an existing scheduler or a cluster class by settings.

    On the local cluster a task whose worker dies is failed at once (``allowed_failures=0``):
    the flow, not the scheduler, decides what to retry, one document at a time. On a cluster
    of its own the scheduler's ``distributed.scheduler.allowed-failures`` applies first.
    """
    if settings.dask_address:
        return DaskTaskRunner(address=settings.dask_address)
    if settings.dask_cluster_class:
        adapt = {"minimum": 1, "maximum": settings.dask_adapt_max} if settings.dask_adapt_max else None
        return DaskTaskRunner(
            cluster_class=settings.dask_cluster_class,
            cluster_kwargs=dict(settings.dask_cluster_kwargs),
            adapt_kwargs=adapt,
        )
    worker_values = _with_core_share(settings).for_workers()
    # A worker that dies is restarted by its nanny, but the cluster gives up on (and closes)
    # a nanny whose new worker has not joined within this timeout: 15 s by default, less than
    # a worker takes to start (and load its models) on a busy machine. Measured: after two
    # crashes both workers were gone for good and the run hung. DASK_SERVER_CONFIG: Dask's
    # profiler off and slower housekeeping.
    dask.config.set(
        {
            "distributed.deploy.lost-worker-timeout": LOST_WORKER_TIMEOUT,
            **DASK_SERVER_CONFIG,
        }
    )
    return DaskTaskRunner(
        cluster_class="distributed.LocalCluster",
        cluster_kwargs={
            "n_workers": settings.workers,
            "threads_per_worker": settings.threads_per_worker,
            "processes": True,
            "memory_limit": settings.worker_memory_limit or "auto",
            "dashboard_address": ":0",
            "silence_logs": logging.ERROR,
            "scheduler_kwargs": {"allowed_failures": 0},
            "preload": ["docproc.dask_preload"],
            "preload_argv": ["--settings", json.dumps(worker_values, default=str)],
        },
    )


# -- where inputs and outputs are


def _output_overlap(src: Storage, dst: Storage) -> str | None:
    """The key prefix under the source that holds the destination, or None when they are apart.

    Raises ConfigurationError when they cannot be told apart: the destination is the source,
    or the source lies inside the destination's own output folders.
    """
    src_url, dst_url = src.url.rstrip("/"), dst.url.rstrip("/")
    if src_url == dst_url:
        raise ConfigurationError(
            f"--out {dst.url} is the source folder itself: results, quarantine copies and reports "
            "would be read as documents by the next run. Choose a folder outside the source "
            "(or a sub-folder of it, which is then left out of the inputs)."
        )
    if src_url.startswith(dst_url + "/"):
        inner = src_url[len(dst_url) + 1 :] + "/"
        if inner.startswith(OUTPUT_PREFIXES):
            raise ConfigurationError(
                f"the source {src.url} lies inside the output folders of --out {dst.url}; "
                "choose a source outside them"
            )
        return None
    if dst_url.startswith(src_url + "/"):
        return dst_url[len(src_url) + 1 :] + "/"
    return None


def check_locations(source: str, destination: str, settings: Settings) -> None:
    """Refuse a source and destination that overlap in a way that would re-ingest outputs."""
    _output_overlap(open_storage(source, settings), open_storage(destination, settings))


def _list_inputs(src: Storage, keys: Sequence[str] | None, excluded: str | None) -> list[ObjectInfo]:
    """Every object under the source, or only those under ``keys`` (objects or sub-prefixes);
    never those under ``excluded``, the destination when it lies inside the source."""
    listed = [o for k in keys for o in src.iter_objects(k)] if keys else list(src.iter_objects())
    unique = {o.key: o for o in listed if excluded is None or not o.key.startswith(excluded)}
    return sorted(unique.values(), key=lambda o: o.key)


# -- units of work, run on the Dask workers


Item = ObjectInfo | DocumentSlice | PlannedDocument
Step = Callable[[Storage, Storage, Any, Settings], Any]
STEPS: dict[str, Step] = {
    "inspect": jobs.inspect_object,
    "batch": jobs.process_slice,
    "finish": jobs.finish_document,
}


def breach_key(unit: str) -> str:
    return f"attempts/{unit}.json"


def started_key(unit: str) -> str:
    return f"attempts/{unit}.started"


def _item_label(item: Item) -> str:
    if isinstance(item, ObjectInfo):
        return item.key
    if isinstance(item, DocumentSlice):
        return item.doc.source if item.whole else f"{item.doc.source} pages {item.first}-{item.last}"
    return item.source


def _item_pages(item: Item) -> int:
    if isinstance(item, DocumentSlice):
        return item.last - item.first + 1
    if isinstance(item, PlannedDocument):
        return item.pages
    return 1


def _record_breach(dst: Storage, unit: str, breach: isolation.Breach) -> None:
    body = {
        "kind": breach.kind,
        "label": breach.label,
        "detail": breach.detail,
        "pid": breach.pid,
        "at": breach.at,
    }
    dst.write_bytes(breach_key(unit), json.dumps(body).encode(), "application/json")


def _memory_bound(settings: Settings) -> int | None:
    if settings.attempt_memory_bytes is not None:
        return settings.attempt_memory_bytes
    try:
        limit = distributed.get_worker().memory_manager.memory_limit
    except ValueError:  # not on a Dask worker
        return None
    return int(limit * 0.9) if limit else None


def _with_retries(call: Callable[[], Any], settings: Settings, label: str) -> Any:
    """Transient errors (storage, network) retry with exponential backoff and jitter."""
    for attempt in range(settings.retries + 1):
        try:
            return call()
        except TransientError as exc:
            if attempt == settings.retries:
                raise
            delay = settings.retry_delay_seconds * 2**attempt * random.uniform(0.5, 1.5)
            log.warning("%s: %s; retrying in %.1f s", label, exc, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


def run_unit(
    kind: str,
    unit: str,
    source: str,
    destination: str,
    items: list[Item],
    values: dict[str, Any],
    suspect: bool = False,
) -> list[Any]:
    """One unit of work on a Dask worker: each item is one bounded document attempt.

    A ``suspect`` unit (a document retried after its worker died) marks its start in storage:
    if this worker dies too, the flow then knows the document was running, not just queued
    here behind the one that ended it.
    """
    settings = worker_settings(values)
    src, dst = open_storage(source, settings), open_storage(destination, settings)
    if suspect:
        dst.write_bytes(started_key(unit), str(os.getpid()).encode(), "text/plain")
    step = STEPS[kind]
    memory = _memory_bound(settings)
    on_breach = functools.partial(_record_breach, dst, unit)
    results = []
    try:
        for item in items:
            label = _item_label(item)
            seconds = settings.document_timeout_seconds + settings.page_timeout_seconds * _item_pages(item)
            with isolation.bounded(label, seconds, memory, on_breach):
                results.append(_with_retries(lambda: step(src, dst, item, settings), settings, label))  # noqa: B023
    finally:
        runtime.release_memory()  # once per unit: pages' arrays are freed, the next unit starts lean
    return results


# -- the flow side: submitting units, and what to do when a worker dies under one


def _item_id(item: Item) -> str:
    if isinstance(item, ObjectInfo):
        return "key:" + item.key
    if isinstance(item, DocumentSlice):
        return f"slice:{item.doc.id}:{item.first}-{item.last}"
    return "doc:" + item.id


Unit = tuple[str, list[Item]]  # (kind, items)


def units_in_flight(settings: Settings, threads: int) -> int:
    """How many units a run keeps submitted to a cluster with ``threads`` threads in all."""
    if settings.units_in_flight is not None:
        return settings.units_in_flight
    return max(MIN_UNITS_IN_FLIGHT, UNITS_PER_THREAD * threads)


@dataclass
class _Dispatcher:
    """Submits units to Dask and yields ``(kind, item, result)`` as they finish.

    At most ``units_in_flight`` units are submitted at once: the rest wait in the flow (the
    lazy ``feed`` of a stage, and a backlog of retries and finishing units, which go first),
    and one more is submitted each time one comes back. Each carries the run's Dask priority,
    so at the scheduler a critical run's units still go before a bulk run's waiting ones.

    A unit whose worker died is split: every item goes again alone, so the rest of a batch
    is processed. An item whose attempts ended a worker ``MAX_WORKER_DEATHS`` times is
    quarantined with the evidence of each attempt.
    """

    client: Any
    run_id: str
    source: str
    destination: str
    values: dict[str, Any]
    priority: int
    src: Storage
    dst: Storage
    settings: Settings
    units: distributed.as_completed = field(init=False)
    pending: dict[str, tuple[str, list[Item], bool]] = field(default_factory=dict)
    deaths: dict[str, list[AttemptEvidence]] = field(default_factory=dict)
    backlog: deque[Unit] = field(default_factory=deque)
    source_units: Iterator[Unit] = field(default_factory=lambda: iter(()))
    submitted: int = 0
    window: int = field(init=False)
    threads: int = field(init=False, default=0)  # the cluster's, when last read
    _window_read: float = field(init=False, default=-math.inf)

    def __post_init__(self) -> None:
        self.units = distributed.as_completed(loop=self.client.loop)  # type: ignore[no-untyped-call]
        self.window = MIN_UNITS_IN_FLIGHT
        self._read_window()

    def _read_window(self) -> None:
        now = time.monotonic()
        if now - self._window_read < THREADS_REFRESH_SECONDS:
            return
        self._window_read = now
        self.threads = sum(self.client.nthreads().values())
        self.window = units_in_flight(self.settings, self.threads)

    def feed(self, units: Iterable[Unit]) -> None:
        """The units of a stage, taken lazily as room opens up (after any in the backlog)."""
        self.source_units = itertools.chain(self.source_units, units)
        self._fill()

    def submit(self, kind: str, items: list[Item]) -> None:
        """One unit, submitted before any of the feed once there is room."""
        self.backlog.append((kind, items))
        self._fill()

    def _fill(self) -> None:
        self._read_window()
        while len(self.pending) < self.window:
            if self.backlog:
                kind, items = self.backlog.popleft()
            else:
                unit = next(self.source_units, None)
                if unit is None:
                    return
                kind, items = unit
            self._submit_now(kind, items)

    def _submit_now(self, kind: str, items: list[Item]) -> None:
        self.submitted += 1
        unit = f"{kind}-{self.run_id[:8]}-{self.submitted}"
        suspect = len(items) == 1 and _item_id(items[0]) in self.deaths
        future = self.client.submit(
            run_unit,
            kind,
            unit,
            self.source,
            self.destination,
            items,
            self.values,
            suspect,
            key=f"docproc-{unit}",
            priority=self.priority,
            pure=False,
        )
        self.pending[future.key] = (unit, items, suspect)
        self.units.add(future)  # type: ignore[no-untyped-call]

    def __iter__(self) -> Iterator[tuple[str, Item, Any]]:
        for future in self.units:
            unit, items, suspect = self.pending.pop(future.key)
            kind = unit.split("-", 1)[0]
            if future.status == "finished":
                results = future.result()
                future.release()
                self._fill()  # the next unit runs while these results are recorded
                for item, result in zip(items, results, strict=True):
                    yield kind, item, result
                if suspect:
                    self.dst.delete(started_key(unit))
                continue
            exc = future.exception()
            future.release()
            self._fill()
            if not isinstance(exc, KilledWorker):
                if len(items) > 1:  # find the one it was about; the others go on
                    log.warning(
                        "unit %s failed (%s: %s); trying its items one by one", unit, type(exc).__name__, exc
                    )
                    for item in items:
                        self.submit(kind, [item])
                    continue
                raise exc
            yield from self._worker_died(kind, unit, items, suspect, exc)

    def _worker_died(
        self, kind: str, unit: str, items: list[Item], suspect: bool, exc: KilledWorker
    ) -> Iterator[tuple[str, Item, Any]]:
        breach = self._read_breach(unit)
        started = suspect and self._pop(started_key(unit)) is not None
        worker = getattr(exc.last_worker, "address", None)
        for item in items:
            label = _item_label(item)
            # A death counts against a document only when it is known to be its doing: the
            # watchdog named it, or it was running alone on the worker. Otherwise (a batch, or
            # a unit still queued on the worker) it is tried again alone, its start marked.
            counted = breach["label"] == label if breach is not None else suspect and started
            if not counted:
                self.deaths.setdefault(_item_id(item), [])
                self.submit(kind, [item])
                continue
            seen = self.deaths.setdefault(_item_id(item), [])
            kind_seen = (
                "worker_crashed"
                if breach is None
                else ("timeout" if breach["kind"] == "timeout" else "memory")
            )
            detail = (
                f"the worker process died while it ran ({exc.task})" if breach is None else breach["detail"]
            )
            seen.append(
                AttemptEvidence(
                    attempt=len(seen) + 1, kind=kind_seen, detail=detail, worker=worker, at=datetime.now(UTC)
                )
            )
            if len(seen) < MAX_WORKER_DEATHS:
                log.warning("worker %s died on %s (%s); trying it again alone", worker, label, kind_seen)
                self.submit(kind, [item])
                continue
            yield kind, item, self._quarantine(item, seen)

    def _pop(self, key: str) -> bytes | None:
        try:
            data = self.dst.read_bytes(key)
        except ObjectNotFoundError:
            return None
        self.dst.delete(key)
        return data

    def _read_breach(self, unit: str) -> dict[str, Any] | None:
        data = self._pop(breach_key(unit))
        breach: dict[str, Any] | None = None if data is None else json.loads(data)
        return breach

    def _quarantine(self, item: Item, evidence: list[AttemptEvidence]) -> DocumentOutcome:
        timed_out = all(e.kind == "timeout" for e in evidence)
        error_cls = AttemptTimeoutError if timed_out else WorkerCrashedError
        what = "outlived its time limit" if timed_out else "ended its worker process"
        error = error_cls(f"every attempt ({len(evidence)}) {what}: {evidence[-1].detail}")
        if isinstance(item, ObjectInfo):
            source, doc_id = item.key, item.sha256
        else:
            doc = item.doc if isinstance(item, DocumentSlice) else item
            source, doc_id = doc.source, doc.id
        return jobs.quarantine(self.src, self.dst, source, doc_id, error, evidence=evidence)


class _Progress:
    """Progress of a run, for the CLI's listeners and the Prefect progress artifact (throttled)."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.done = 0
        self.quarantined = 0
        self._lock = threading.Lock()
        self._updated = time.monotonic()
        self._artifact: Any = create_progress_artifact(0.0, key="docproc-progress", description=self._text())

    def _text(self) -> str:
        return f"{self.done}/{self.total} documents done, {self.quarantined} quarantined"

    def add(self, outcome: DocumentOutcome) -> None:
        with self._lock:
            self.done += 1
            self.quarantined += outcome.status == "quarantined"
            for listener in progress_listeners:
                listener(self.done, self.total)
            if time.monotonic() - self._updated >= PROGRESS_SECONDS or self.done == self.total:
                self.publish()

    def publish(self) -> None:
        self._updated = time.monotonic()
        percent = 100.0 * self.done / self.total if self.total else 100.0
        update_progress_artifact(self._artifact, percent, description=self._text())


def _leftover_parts(dst: Storage) -> set[str]:
    """Folders under parts/ when the run starts: left by an interrupted or concurrent run."""
    return {o.key.split("/", 2)[1] for o in dst.iter_objects("parts/") if o.key.count("/") >= 2}


def _clean_leftover_parts(dst: Storage, folders: set[str], settings: Settings) -> None:
    """Drop the parts of documents that are finished (a result or a quarantine record): a
    document still without either may be in the hands of a concurrent run."""
    for folder in folders:
        doc_id, _, fingerprint = folder.rpartition("-")
        done = dst.exists(f"results/{doc_id}-{fingerprint}.json") or dst.exists(
            jobs.quarantine_prefix(doc_id) + "error.json"
        )
        if done:
            jobs.clean_parts(dst, f"parts/{folder}/")


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
    Bad documents are quarantined with a reason; the run goes on and reports them. The report
    is written also when the run fails.
    """
    logger = get_run_logger()
    started_at = datetime.now(UTC)
    overrides = {**(settings_overrides or {}), "force": force}
    settings = _with_core_share(Settings(**overrides))
    run_id = str(flow_run.get_id() or uuid.uuid4())
    src, dst = open_storage(source, settings), open_storage(destination, settings)
    excluded = _output_overlap(src, dst)  # refuses an overlapping --out before any work

    run_log = report.RunLog(dst, run_id, settings.report_limit)
    progress: _Progress | None = None
    index = SourceIndex(dst, src.url)
    fingerprint = settings.fingerprint()
    listed: list[str] | None = None  # the keys of a complete listing, for the index
    error: str | None = None

    def report_outcome(outcome: DocumentOutcome) -> None:
        run_log.add(outcome)
        assert progress is not None
        progress.add(outcome)

    def record(outcome: DocumentOutcome) -> None:
        index.finished(outcome, fingerprint)
        report_outcome(outcome)

    try:
        # Listed inside: a listing that fails (storage down) still leaves a report saying so.
        objects = _list_inputs(src, keys, excluded)
        logger.info("%d documents under %s", len(objects), src.url)
        progress = _Progress(len(objects))
        listed = None if keys else [o.key for o in objects]
        todo = _unchanged_first(objects, index, dst, settings, report_outcome, logger)
        del objects  # ``todo`` is drained as it is submitted
        leftovers = _leftover_parts(dst)
        context = FlowRunContext.get()
        if context is None or not isinstance(context.task_runner, DaskTaskRunner):
            raise ConfigurationError("process_documents runs on a DaskTaskRunner")
        dispatcher = _Dispatcher(
            client=context.task_runner.client,
            run_id=run_id,
            source=source,
            destination=destination,
            values=settings.for_workers(),
            priority=queue_for(priority).dask_priority,
            src=src,
            dst=dst,
            settings=settings,
        )
        _process(dispatcher, todo, settings, record, index, logger)
        _clean_leftover_parts(dst, leftovers, settings)
    except BaseException as exc:
        error = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        _save_index(index, listed if error is None else None, dst, logger)
        run_report = run_log.report(src.url, dst.url, started_at, datetime.now(UTC), settings, error)
        prefix = report.write_report(dst, run_report)
        location = dst.url.rstrip("/") + "/" + prefix
        if progress is not None:
            progress.publish()
        _publish(run_report, location)
        if error is None:
            alerts.check_report(run_report, settings, location + "report.json")
        logger.info(
            "run %s: %s; report at %s",
            run_id,
            ", ".join(f"{v} {k}" for k, v in run_report.counts.items()),
            prefix,
        )
    return run_report


def _result_sizes(dst: Storage) -> dict[str, int]:
    return {o.key: o.size for o in dst.iter_objects("results/")}


def _unchanged_first(
    objects: list[ObjectInfo],
    index: SourceIndex,
    dst: Storage,
    settings: Settings,
    record: Callable[[DocumentOutcome], None],
    logger: Any,
) -> list[ObjectInfo]:
    """Report the documents unchanged since an earlier run whose results are there as written,
    from the index and one listing of results/, with no call per document; returns the rest,
    each with its sha256 when the index knows it (a worker then looks without downloading)."""
    if not index.load():
        return objects
    results = {} if settings.force else _result_sizes(dst)
    fingerprint = settings.fingerprint()
    todo, known = [], 0
    for obj in objects:
        obj = index.known(obj)
        known += obj.sha256 is not None
        outcome = index.unchanged_outcome(obj, fingerprint, results) if results else None
        if outcome is None:
            todo.append(obj)
        else:
            record(outcome)
    logger.info(
        "%d unchanged since an earlier run, %d of them with their results as written",
        known,
        len(objects) - len(todo),
    )
    return todo


def _save_index(index: SourceIndex, listed: list[str] | None, dst: Storage, logger: Any) -> None:
    """Store what the run learned; ``listed`` (a complete listing) also drops gone objects.
    A failure here costs the next run some downloads, not this run its report."""
    try:
        index.save(
            listed,
            _result_sizes(dst) if index.learned else None,
        )
    except DocprocError as exc:
        logger.warning("the source index was not saved (the next run hashes again): %s", exc)


def _process(
    dispatcher: _Dispatcher,
    objects: list[ObjectInfo],
    settings: Settings,
    record: Callable[[DocumentOutcome], None],
    index: SourceIndex,
    logger: Any,
) -> None:
    """Inspect every object, then read the planned documents in page batches.

    Units go to the dispatcher lazily, and ``objects`` (emptied here) and the planned documents
    are dropped as they are submitted. Besides the index and the listed keys, the flow holds
    one small model per document to process between the two stages (duplicates and the batch
    size need them all), and state only for the documents in flight.
    """
    waiting = deque(objects)
    objects.clear()

    def inspections() -> Iterator[Unit]:
        while waiting:
            yield "inspect", [waiting.popleft() for _ in range(min(INSPECT_CHUNK, len(waiting)))]

    dispatcher.feed(inspections())
    planned: list[PlannedDocument] = []
    decided = Counter[str]()
    for _, item, result in dispatcher:
        assert isinstance(item, ObjectInfo)
        if isinstance(result, DocumentOutcome):
            record(result)
            decided[result.status] += 1
            if result.id is not None and result.reason not in ("worker_crashed", "timeout"):
                index.learn(item, result.id)
        else:
            planned.append(result)
            if result.size_bytes == item.size:  # else it changed since the listing
                index.learn(item, result.id)

    planned, duplicates = jobs.split_duplicates(planned, settings)
    for outcome in duplicates:
        record(outcome)
    pages = sum(max(d.pages, 1) for d in planned)
    logger.info(
        "%d to process (%d pages) in batches of up to %d pages; %d skipped, %d quarantined",
        len(planned),
        pages,
        settings.batch_size,
        decided["skipped"],
        decided["quarantined"],
    )
    # A document split across batches is finished as soon as its slices are all back: once
    # its last slice is planned, ``slices_of`` says how many it has.
    slices_of: dict[str, int] = {}
    counting = Counter[str]()

    def batches() -> Iterator[Unit]:
        waiting = deque(planned)
        planned.clear()
        docs = (waiting.popleft() for _ in range(len(waiting)))
        # Read when the first batch is wanted: the workers that joined during inspection.
        threads = dispatcher.threads or settings.workers * settings.threads_per_worker
        for batch in jobs.iter_batches(docs, settings.batch_size, total_pages=pages, threads=threads):
            for piece in batch:
                if not piece.whole:
                    counting[piece.doc.id] += 1
                    if piece.last >= piece.doc.pages:
                        slices_of[piece.doc.id] = counting.pop(piece.doc.id)
            yield "batch", list[Item](batch)

    dispatcher.feed(batches())
    returned = Counter[str]()
    ended: set[str] = set()  # split documents whose outcome came early, from one of their slices
    for _, item, result in dispatcher:
        if isinstance(item, PlannedDocument) or (isinstance(item, DocumentSlice) and item.whole):
            record(result)  # a finished or a whole document
            continue
        assert isinstance(item, DocumentSlice)
        doc = item.doc
        if not isinstance(result, SliceOutcome) and doc.id not in ended:
            # Ended early by one of its slices (vanished, quarantined, finished by a concurrent
            # run); its other slices are moot.
            ended.add(doc.id)
            record(result)
        returned[doc.id] += 1
        if returned[doc.id] == slices_of.get(doc.id):
            del returned[doc.id], slices_of[doc.id]
            if doc.id in ended:
                ended.discard(doc.id)
            else:
                dispatcher.submit("finish", [doc])


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
        description=f"First {len(run_report.documents)} documents of run {run_report.run_id}; "
        f"all in {location}outcomes/",
    )
    create_markdown_artifact(
        key="docproc-run-report",
        markdown=report.render_markdown(run_report) + f"\nReport: `{location}report.json`\n",
        description=f"Run report, stored at {location}",
    )
