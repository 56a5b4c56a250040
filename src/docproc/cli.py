"""The `docproc` command line.

Exit codes of `docproc run`: 0 the run completed (even with quarantined documents),
1 an infrastructure failure, 2 bad arguments, 3 with --fail-on-quarantine if anything was
quarantined.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from docproc.errors import ConfigurationError, DocprocError
from docproc.models import RunReport
from docproc.settings import EngineName, Settings

EXIT_OK, EXIT_INFRA, EXIT_USAGE, EXIT_QUARANTINE = 0, 1, 2, 3

app = typer.Typer(
    name="docproc",
    help="Turn scans and PDFs into searchable text and validated fields.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)
out = Console()


@app.callback()
def _root() -> None:
    """Turn scans and PDFs into searchable text and validated fields."""


def _fail(message: str, code: int) -> typer.Exit:
    console.print(f"[bold red]error:[/] {message}")
    return typer.Exit(code)


@app.command()
def run(
    source: Annotated[str, typer.Argument(help="Folder or s3://bucket/prefix with the documents.")],
    out_: Annotated[str, typer.Option("--out", "-o", help="Folder or s3://bucket/prefix for results.")],
    engine: Annotated[EngineName | None, typer.Option(help="OCR engine.")] = None,
    languages: Annotated[
        str | None, typer.Option(help="OCR languages, comma-separated (en,de,fr), or auto.")
    ] = None,
    workers: Annotated[int | None, typer.Option(min=1, help="Local Dask worker processes.")] = None,
    batch_size: Annotated[int | None, typer.Option(min=1, help="Pages per batch.")] = None,
    force: Annotated[bool, typer.Option(help="Reprocess documents that already have a result.")] = False,
    retry_quarantined: Annotated[
        bool, typer.Option(help="Process documents again that an earlier run quarantined.")
    ] = False,
    fail_on_quarantine: Annotated[bool, typer.Option(help="Exit 3 if any document was quarantined.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show Prefect's run logs.")] = False,
) -> None:
    """Process every document under SOURCE into --out, on a local Dask cluster, no server needed."""
    flags: dict[str, Any] = {
        "engine": engine,
        "languages": languages,
        "workers": workers,
        "batch_size": batch_size,
        "retry_quarantined": retry_quarantined or None,
    }
    try:
        settings = Settings(**{k: v for k, v in flags.items() if v is not None})
    except ValidationError as exc:
        raise _fail(f"invalid settings: {exc}", EXIT_USAGE) from exc
    if not source.startswith("s3://") and not Path(source).is_dir():
        raise _fail(f"source folder {source!r} does not exist", EXIT_USAGE)

    try:
        report = _run_flow(source, out_, settings, force, verbose)
    except ConfigurationError as exc:
        raise _fail(str(exc), EXIT_USAGE) from exc
    except DocprocError as exc:
        raise _fail(f"run failed: {exc}", EXIT_INFRA) from exc
    except Exception as exc:
        raise _fail(f"run failed: {type(exc).__name__}: {exc}", EXIT_INFRA) from exc

    _print_summary(report)
    if fail_on_quarantine and report.counts["quarantined"]:
        raise typer.Exit(EXIT_QUARANTINE)


def _run_flow(source: str, destination: str, settings: Settings, force: bool, verbose: bool) -> RunReport:
    # This process and the workers it spawns read these before Prefect configures itself.
    if not verbose:
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from flows import process
    from flows.local_api import prefect_api

    _quiet_logs(verbose)
    process.check_locations(source, destination, settings)  # before any work
    with (
        prefect_api(),
        Progress(
            TextColumn("[bold]processing"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
            # Rich's default of 10 redraws a second cost the flow's process 1.9% of a core
            # (measured, on a terminal); the counts and seconds shown change slower than 2.
            refresh_per_second=2,
        ) as bar,
    ):
        task_id = bar.add_task("documents", total=None)

        def listener(done: int, total: int) -> None:
            bar.update(task_id, completed=done, total=total)

        process.progress_listeners.append(listener)
        try:
            flow = process.process_documents.with_options(task_runner=process.build_task_runner(settings))
            report: RunReport = flow(
                source=source,
                destination=destination,
                force=force,
                settings_overrides=settings.overrides(),
            )
        finally:
            process.progress_listeners.remove(listener)
    return report


def _quiet_logs(verbose: bool) -> None:
    if verbose:
        return
    # Prefect configures its loggers on import: quiet them after it, keep warnings and errors.
    for name in ("prefect", "prefect.flow_runs", "prefect.task_runs", "docproc"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # The nanny warns when it kills a worker still loading models at shutdown: nothing is lost.
    logging.getLogger("distributed").setLevel(logging.ERROR)


SUMMARY_ROWS = 20


def _print_summary(report: RunReport) -> None:
    """The problems first, then the first documents: never the whole of a large run."""
    total = sum(report.counts.values())
    quarantined = report.quarantined[:SUMMARY_ROWS]
    shown = {o.source for o in quarantined}
    others = [o for o in report.documents if o.source not in shown][: max(0, SUMMARY_ROWS - len(quarantined))]
    table = Table(title=f"docproc run {report.run_id}", title_justify="left")
    for column in ("document", "status", "quality", "type", "lang", "pages", "reason"):
        table.add_column(column)
    for o in [*quarantined, *others]:
        table.add_row(
            o.source,
            o.status,
            o.quality or "",
            o.document_type or "",
            o.language or "",
            str(o.pages),
            o.reason or "",
        )
    out.print(table)
    hidden = total - len(quarantined) - len(others)
    location = f"{report.destination.rstrip('/')}/{report.outcomes_prefix or ''}"
    if hidden > 0:
        out.print(f"... and {hidden} more documents; every outcome is in {location}")
    c = report.counts
    out.print(
        f"{c['processed']} processed, {c['skipped']} skipped, {c['quarantined']} quarantined; "
        f"{report.pages} pages in {report.wall_seconds:.1f} s ({report.pages_per_second:.2f} pages/s)"
    )
    out.print(f"report: {report.destination.rstrip('/')}/runs/{report.run_id}/report.md")


models_app = typer.Typer(help="Models converted from the installed weights.", no_args_is_help=True)
app.add_typer(models_app, name="models")


@models_app.command("convert")
def models_convert(
    cache_dir: Annotated[
        Path | None, typer.Option(help="Model cache (default: the model_cache_dir setting).")
    ] = None,
) -> None:
    """Convert easyocr's weights for the default OpenVINO engine now (the image does it at build time)."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from docproc.ocr.easyocr_openvino import converted_models

    try:
        target = converted_models(cache_dir or Settings().model_cache_dir)
    except ConfigurationError as exc:
        raise _fail(str(exc), EXIT_USAGE) from exc
    out.print(str(target))


def _register_operations() -> None:
    from flows.ops_cli import register

    register(app)


_register_operations()


def main() -> None:
    app()
