"""Work pool, queues and deployments on a real Prefect server; queue priority with a real worker.

The priority tests queue every run first and only then start a real `prefect worker start
--type process` (``tests/fixtures/prefect_worker.py``) against the session's Prefect server,
with the pool's concurrency at 1: the order in which runs start is the order in which the
server handed them out, whatever the machine's load.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import FlowRun
from prefect.client.schemas.sorting import DeploymentSort
from prefect.states import Scheduled
from prefect_kubernetes.worker import KubernetesWorkerJobConfiguration
from typer.testing import CliRunner

from docproc.cli import app
from docproc.queues import QUEUES, WORK_POOL_NAME, Priority
from flows import deployments
from tests.fixtures.prefect_server import PrefectServer
from tests.fixtures.prefect_worker import ProcessWorker

# -- prefect.yaml against the one definition of the queues -----------------------------------


def test_prefect_yaml_has_one_process_deployment_per_queue() -> None:
    project = deployments.load_project()
    assert project["pull"] == []  # nothing to fetch: docproc is installed where workers run
    process = [d for d in project["deployments"] if d["entrypoint"] == "flows.process.process_documents"]
    assert sorted(d["name"] for d in process) == sorted(q.name for q in QUEUES.values())
    for d in process:
        spec = QUEUES[Priority(d["name"])]
        assert d["work_pool"]["name"] == WORK_POOL_NAME
        assert d["work_pool"]["work_queue_name"] == spec.name
        assert d["parameters"]["priority"] == spec.name
        job_variables = d["work_pool"]["job_variables"]
        assert job_variables["priority_class_name"] == f"docproc-{spec.name}"
        for var in ("cpu_request", "cpu_limit", "memory_request", "memory_limit"):
            assert job_variables[var], (d["name"], var)
    scan = next(d for d in project["deployments"] if d["name"] == "inbox-scan")
    assert scan["entrypoint"] == "flows.inbox_scan.scan_inbox"
    assert scan["work_pool"]["work_queue_name"] == QUEUES[Priority.STANDARD].name
    assert scan["schedules"]
    assert scan["schedules"][0].get("interval") or scan["schedules"][0].get("cron")


def test_overrides_touch_only_deployments_that_have_the_parameter() -> None:
    project = deployments.load_project()
    changed = deployments.with_overrides(
        project,
        parameters={"inbox": "s3://b/in", "destination": "s3://b/out"},
        schedule={"cron": "0 * * * *"},
    )
    by_name = {d["name"]: d for d in changed["deployments"]}
    assert by_name["inbox-scan"]["parameters"] == {"inbox": "s3://b/in", "destination": "s3://b/out"}
    assert by_name["inbox-scan"]["schedules"] == [{"cron": "0 * * * *"}]
    assert by_name["critical"]["parameters"]["destination"] == "s3://b/out"
    assert "inbox" not in by_name["critical"]["parameters"]
    assert "schedules" not in by_name["critical"]
    assert project["deployments"][0]["parameters"]["destination"] == "s3://docproc/results"  # a copy


def test_kubernetes_job_gets_priority_class_and_resources(prefect_api: PrefectServer) -> None:
    """Render the pool's real template with the critical deployment's variables, as the worker does.

    Rendering resolves block and variable references, hence the server.
    """
    template = deployments.base_job_template("kubernetes")
    critical = next(d for d in deployments.load_project()["deployments"] if d["name"] == "critical")
    config = asyncio.run(
        KubernetesWorkerJobConfiguration.from_template_and_values(
            template, critical["work_pool"]["job_variables"]
        )
    )
    pod = config.job_manifest["spec"]["template"]["spec"]
    assert pod["priorityClassName"] == "docproc-critical"
    resources = pod["containers"][0]["resources"]
    assert resources["requests"] == {"cpu": "2", "memory": "6Gi"}
    assert resources["limits"] == {"cpu": "4", "memory": "8Gi"}
    # Without a PriorityClass the field is left out, not rendered empty.
    bare = asyncio.run(KubernetesWorkerJobConfiguration.from_template_and_values(template, {}))
    assert "priorityClassName" not in bare.job_manifest["spec"]["template"]["spec"]


# -- applying against the server -------------------------------------------------------------


def _pool_state() -> tuple[str, int | None, dict[str, tuple[int, int | None]], dict[str, str]]:
    with get_client(sync_client=True) as client:
        pool = client.read_work_pool(WORK_POOL_NAME)
        queues = {
            q.name: (q.priority, q.concurrency_limit)
            for q in client.read_work_queues(work_pool_name=pool.name)
        }
        deps = {
            d.name: str(d.work_queue_name)
            for d in client.read_deployments(sort=DeploymentSort.NAME_ASC)
            if d.work_pool_name == WORK_POOL_NAME
        }
    return pool.type, pool.concurrency_limit, queues, deps


def test_pool_apply_is_idempotent_for_kubernetes(prefect_api: PrefectServer, docproc_pool: str) -> None:
    runner = CliRunner()
    with get_client(sync_client=True) as client:
        client.delete_work_pool(WORK_POOL_NAME)
    try:
        first = runner.invoke(app, ["pool", "apply", "--type", "kubernetes", "--image", "docproc:test"])
        assert first.exit_code == 0, first.output
        assert "created" in first.output
        state1 = _pool_state()
        second = runner.invoke(app, ["pool", "apply", "--type", "kubernetes", "--image", "docproc:test"])
        assert second.exit_code == 0, second.output
        assert "updated" in second.output
        state2 = _pool_state()
        assert state1 == state2
        pool_type, _, queues, deps = state2
        assert pool_type == "kubernetes"
        for spec in QUEUES.values():
            assert queues[spec.name] == (spec.priority, spec.concurrency_limit)
        assert queues["default"][0] > max(q.priority for q in QUEUES.values())
        assert deps == {
            "critical": "critical",
            "standard": "standard",
            "bulk": "bulk",
            "inbox-scan": "standard",
        }
        with get_client(sync_client=True) as client:
            pool = client.read_work_pool(WORK_POOL_NAME)
            assert pool.base_job_template["variables"]["properties"]["image"]["default"] == "docproc:test"
            scan = client.read_deployment_by_name("inbox-scan/inbox-scan")
            assert len(scan.schedules) == 1
            critical = client.read_deployment_by_name(deployments.deployment_name("critical"))
            assert critical.job_variables["priority_class_name"] == "docproc-critical"
            assert critical.parameters["priority"] == "critical"
        # A pool of another type is not silently repurposed.
        clash = runner.invoke(app, ["pool", "apply", "--type", "process"])
        assert clash.exit_code == 2
        assert "exists with type 'kubernetes'" in clash.output
    finally:
        with get_client(sync_client=True) as client:
            client.delete_work_pool(WORK_POOL_NAME)
        deployments.apply_all("process")


def test_scan_schedule_is_configurable(prefect_api: PrefectServer, docproc_pool: str) -> None:
    result = CliRunner().invoke(app, ["pool", "apply", "--type", "process", "--scan-cron", "*/10 * * * *"])
    assert result.exit_code == 0, result.output
    try:
        with get_client(sync_client=True) as client:
            scan = client.read_deployment_by_name("inbox-scan/inbox-scan")
            assert [s.schedule.cron for s in scan.schedules] == ["*/10 * * * *"]  # type: ignore[union-attr]
    finally:
        deployments.apply_all("process")
    with get_client(sync_client=True) as client:
        scan = client.read_deployment_by_name("inbox-scan/inbox-scan")
        assert [s.schedule.interval for s in scan.schedules] == [timedelta(seconds=300)]  # type: ignore[union-attr]


def test_submit_and_status_without_a_worker(
    prefect_api: PrefectServer, docproc_pool: str, tmp_path: Path
) -> None:
    runner = CliRunner()
    result = runner.invoke(
        app, ["submit", str(tmp_path / "in"), "--priority", "bulk", "--out", str(tmp_path / "out")]
    )
    assert result.exit_code == 0, result.output
    first_line = result.output.splitlines()[0]
    run_id = UUID(first_line.split()[2])
    assert "on queue bulk" in first_line
    assert f"{prefect_api.ui_url}/runs/flow-run/{run_id}" in result.output
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(run_id)
        client.delete_flow_run(run_id)  # never to be run: keep the queue clean for the worker tests
    assert run.work_queue_name == "bulk"
    assert run.parameters["priority"] == "bulk"
    assert run.parameters["destination"] == str(tmp_path / "out")

    status = runner.invoke(app, ["status"])
    assert status.exit_code == 0, status.output
    missing = runner.invoke(app, ["status", str(run_id)])
    assert missing.exit_code == 2
    assert runner.invoke(app, ["status", "not-a-uuid"]).exit_code == 2


# -- priority with a real worker -------------------------------------------------------------


@pytest.fixture
def txt_source(tmp_path: Path, corpus: Path) -> Path:
    source = tmp_path / "in"
    source.mkdir()
    (source / "linn.txt").write_bytes((corpus / "linn.txt").read_bytes())
    return source


def _create(priority: str, source: Path, dest: Path, scheduled: datetime | None = None) -> FlowRun:
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name(deployments.deployment_name(priority))
        return client.create_flow_run_from_deployment(
            deployment.id,
            parameters={"source": str(source), "destination": str(dest), "priority": priority},
            state=Scheduled(scheduled_time=scheduled) if scheduled else None,
        )


def _critical_first(worker: ProcessWorker, critical: UUID, bulk: list[UUID]) -> FlowRun:
    """The worker's first run must be the critical one, although every bulk run was queued first.

    The order comes from the runs' start times on the server, not from durations. Each run of
    the real flow costs tens of seconds here, so once the critical run has started the bulk
    queue is paused and its runs deleted instead of being run to the end.
    """
    everything = [critical, *bulk]
    started = worker.wait_runs(everything, lambda r: r.id != critical or r.start_time is not None)
    with get_client(sync_client=True) as client:
        bulk_queue = client.read_work_queue_by_name("bulk", work_pool_name=WORK_POOL_NAME)
        client.update_work_queue(bulk_queue.id, is_paused=True)
        try:
            started = {i: client.read_flow_run(i) for i in everything}
            for i in bulk:
                client.delete_flow_run(i)
        finally:
            client.update_work_queue(bulk_queue.id, is_paused=False)
    critical_start = started[critical].start_time
    assert critical_start is not None
    early = [
        r.name
        for i, r in started.items()
        if i != critical and r.start_time and r.start_time <= critical_start
    ]
    assert early == [], f"bulk runs started before the critical run: {early}"
    final = worker.wait_final([critical])[critical]
    assert final.state is not None
    assert final.state.is_completed(), final.state
    assert final.work_queue_name == "critical"
    return final


def test_critical_run_overtakes_queued_bulk_runs(
    process_worker_factory: Callable[..., ProcessWorker], txt_source: Path, tmp_path: Path
) -> None:
    # Every run is queued before the worker starts: three bulk runs first, then a critical one.
    bulk = [_create("bulk", txt_source, tmp_path / f"out-bulk{i}") for i in range(3)]
    critical = _create("critical", txt_source, tmp_path / "out-critical")
    worker = process_worker_factory(DOCPROC_WORKERS="1")
    _critical_first(worker, critical.id, [r.id for r in bulk])
    report = tmp_path / "out-critical" / "runs" / str(critical.id) / "report.json"
    assert report.is_file()

    # `docproc status` shows the finished run's state and progress from its artifacts.
    result = CliRunner().invoke(app, ["status", str(critical.id)])
    assert result.exit_code == 0, result.output
    assert "state: Completed" in result.output
    assert "documents: 1/1 done" in result.output
    assert "quarantined: 0" in result.output
    assert f"report: {report}" in result.output


def test_critical_run_overtakes_late_bulk_runs(
    process_worker_factory: Callable[..., ProcessWorker], txt_source: Path, tmp_path: Path
) -> None:
    """Prefect issue 14950: bulk runs an hour late must still wait behind an on-time critical run."""
    an_hour_ago = datetime.now(UTC) - timedelta(hours=1)
    bulk = [_create("bulk", txt_source, tmp_path / f"out-bulk{i}", scheduled=an_hour_ago) for i in range(3)]
    critical = _create("critical", txt_source, tmp_path / "out-critical")
    assert all(r.expected_start_time < critical.expected_start_time for r in bulk)  # type: ignore[operator]
    worker = process_worker_factory(DOCPROC_WORKERS="1")
    _critical_first(worker, critical.id, [r.id for r in bulk])


def test_inbox_scan_submits_once_per_inbox_listing(
    prefect_api: PrefectServer, docproc_pool: str, tmp_path: Path
) -> None:
    from flows.inbox_scan import scan_inbox

    inbox, out = tmp_path / "inbox", tmp_path / "results"
    inbox.mkdir()
    assert scan_inbox(str(inbox), str(out)) is None  # nothing there: no run
    (inbox / "a.txt").write_text("first document\n")
    first = scan_inbox(str(inbox), str(out))
    again = scan_inbox(str(inbox), str(out))
    (inbox / "b.txt").write_text("second document\n")
    changed = scan_inbox(str(inbox), str(out))
    assert first is not None
    assert again == first  # an unchanged inbox maps to the run already submitted
    assert changed not in (None, first)
    with get_client(sync_client=True) as client:
        runs = [client.read_flow_run(UUID(i)) for i in (first, changed)]  # type: ignore[arg-type]
        for run in runs:
            client.delete_flow_run(run.id)  # never to be run: keep the queue clean for the worker tests
    for run in runs:
        assert run.work_queue_name == "standard"
        assert run.parameters["source"] == str(inbox)
        assert run.parameters["priority"] == "standard"
