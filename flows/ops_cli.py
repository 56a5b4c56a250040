"""Operations commands (pool, submit, status, events): registered on the `docproc` CLI.

They talk to the Prefect API named by PREFECT_API_URL.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any
from uuid import UUID

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from docproc.errors import ConfigurationError
from docproc.queues import QUEUES, Priority
from docproc.settings import Settings

EXIT_INFRA, EXIT_USAGE = 1, 2

console = Console(stderr=True)
out = Console(soft_wrap=True)  # ids and URLs must stay on one line, whatever the width

pool_app = typer.Typer(
    help="The `docproc` work pool, its priority queues and deployments.", no_args_is_help=True
)
events_app = typer.Typer(help="Event-driven processing: the MinIO webhook receiver.", no_args_is_help=True)


def _fail(message: str, code: int) -> typer.Exit:
    console.print(f"[bold red]error:[/] {message}")
    return typer.Exit(code)


def _api_error(exc: Exception) -> typer.Exit:
    from prefect.settings import PREFECT_API_URL

    return _fail(
        f"Prefect API at {PREFECT_API_URL.value() or '(ephemeral)'}: {type(exc).__name__}: {exc}", EXIT_INFRA
    )


@pool_app.command("apply")
def pool_apply(
    type_: Annotated[
        str, typer.Option("--type", help="Worker type of the pool: kubernetes or process.")
    ] = "kubernetes",
    concurrency_limit: Annotated[
        int | None, typer.Option(min=0, help="Runs the whole pool may run at once (default: unchanged).")
    ] = None,
    image: Annotated[str | None, typer.Option(help="Default image of the Kubernetes jobs.")] = None,
    scan_interval: Annotated[
        float | None, typer.Option(min=1, help="Inbox-scan schedule: every this many seconds.")
    ] = None,
    scan_cron: Annotated[str | None, typer.Option(help="Inbox-scan schedule as a cron expression.")] = None,
    inbox: Annotated[
        str | None, typer.Option(help="Inbox scanned by the schedule (s3://bucket/inbox).")
    ] = None,
    out_: Annotated[
        str | None, typer.Option("--out", help="Default destination of every deployment.")
    ] = None,
    project_file: Annotated[Path | None, typer.Option(help="prefect.yaml to register.")] = None,
) -> None:
    """Create or update the pool `docproc` and its queues, then `prefect deploy --all` prefect.yaml."""
    import httpx

    from flows import deployments

    if type_ not in ("kubernetes", "process"):
        raise _fail(f"--type must be kubernetes or process, not {type_!r}", EXIT_USAGE)
    if scan_interval is not None and scan_cron is not None:
        raise _fail("give --scan-interval or --scan-cron, not both", EXIT_USAGE)
    job_defaults: dict[str, Any] = {}
    if image is not None:
        if type_ != "kubernetes":
            raise _fail("--image applies to a kubernetes pool", EXIT_USAGE)
        job_defaults["image"] = image
    parameters: dict[str, Any] = {}
    if out_ is not None:
        parameters["destination"] = out_
    if inbox is not None:
        parameters["inbox"] = inbox
    schedule: dict[str, Any] | None = None
    if scan_interval is not None:
        schedule = {"interval": scan_interval, "active": True}
    elif scan_cron is not None:
        schedule = {"cron": scan_cron, "active": True}
    try:
        result = deployments.apply_all(
            type_,  # type: ignore[arg-type]  # checked above
            concurrency_limit=concurrency_limit,
            job_defaults=job_defaults,
            project_file=project_file or deployments.PROJECT_FILE,
            parameters=parameters,
            schedule=schedule,
        )
    except ConfigurationError as exc:
        raise _fail(str(exc), EXIT_USAGE) from exc
    except (httpx.HTTPError, OSError) as exc:
        raise _api_error(exc) from exc
    verb = "created" if result.created_pool else "updated"
    out.print(f"work pool {result.pool} ({result.pool_type}) {verb}")
    for name, priority in sorted(result.queues.items(), key=lambda kv: kv[1]):
        spec = next((q for q in QUEUES.values() if q.name == name), None)
        limit = "unlimited" if spec is None or spec.concurrency_limit is None else spec.concurrency_limit
        out.print(f"  queue {name}: priority {priority}" + (f", limit {limit}" if spec else ""))
    for name, deployment_id in result.deployments.items():
        out.print(f"  deployment {name} ({deployment_id})")


def submit(
    source: Annotated[str, typer.Argument(help="Folder or s3://bucket/prefix with the documents.")],
    priority: Annotated[Priority, typer.Option(help="Queue of the run.")] = Priority.STANDARD,
    out_: Annotated[
        str | None, typer.Option("--out", "-o", help="Destination (default: the deployment's).")
    ] = None,
    force: Annotated[bool, typer.Option(help="Reprocess documents that already have a result.")] = False,
) -> None:
    """Create a flow run of the deployment of PRIORITY's queue; print its id and UI URL."""
    import httpx

    from flows import deployments

    try:
        run = deployments.submit_run(source, priority=priority, destination=out_, force=force)
    except ConfigurationError as exc:
        raise _fail(str(exc), EXIT_USAGE) from exc
    except (httpx.HTTPError, OSError) as exc:
        raise _api_error(exc) from exc
    out.print(f"flow run {run.id} ({run.name}) on queue {run.work_queue_name}")
    url = deployments.run_url(run)
    out.print(url or "(no UI URL: PREFECT_UI_URL is not set)")


def status(
    run_id: Annotated[str | None, typer.Argument(help="Flow run id (default: the latest runs).")] = None,
    limit: Annotated[int, typer.Option(min=1, help="Runs listed without RUN_ID.")] = 20,
) -> None:
    """State and progress of a run (documents done / total, quarantined), or of the latest runs."""
    import httpx
    from prefect.exceptions import ObjectNotFound

    from flows import deployments

    try:
        wanted = UUID(run_id) if run_id else None
    except ValueError as exc:
        raise _fail(f"not a flow run id: {run_id!r}", EXIT_USAGE) from exc
    try:
        rows = deployments.read_status(wanted, limit)
    except ObjectNotFound as exc:
        raise _fail(f"no flow run {run_id}", EXIT_USAGE) from exc
    except (httpx.HTTPError, OSError) as exc:
        raise _api_error(exc) from exc
    if wanted is not None:
        row = rows[0]
        out.print(f"flow run {row.id} ({row.name})")
        out.print(f"state: {row.state}")
        out.print(f"queue: {row.queue or '-'}  deployment: {row.deployment or '-'}")
        out.print(f"documents: {_progress(row)}")
        out.print(f"quarantined: {'-' if row.quarantined is None else row.quarantined}")
        if row.report:
            out.print(f"report: {row.report}")
        if row.url:
            out.print(f"url: {row.url}")
        return
    table = Table(title="docproc runs", title_justify="left")
    for column in ("run", "name", "state", "queue", "documents", "quarantined"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            str(row.id),
            row.name,
            row.state,
            row.queue or "-",
            _progress(row),
            "-" if row.quarantined is None else str(row.quarantined),
        )
    out.print(table)


def _progress(row: Any) -> str:
    return "-" if row.total is None else f"{row.done}/{row.total} done"


@events_app.command("serve")
def events_serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8787,
    out_: Annotated[
        str | None, typer.Option("--out", "-o", help="Destination (default: s3://<bucket>/results).")
    ] = None,
) -> None:
    """Receive MinIO bucket notifications and start a run for each new inbox object."""
    from flows import events

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = Settings()
        events.serve(settings, host, port, destination=out_)
    except ValidationError as exc:
        raise _fail(f"invalid settings: {exc}", EXIT_USAGE) from exc
    except ConfigurationError as exc:
        raise _fail(str(exc), EXIT_USAGE) from exc


def register(app: typer.Typer) -> None:
    """Add the operations sub-commands to ``app``."""
    app.add_typer(pool_app, name="pool")
    app.add_typer(events_app, name="events")
    app.command("submit")(submit)
    app.command("status")(status)
