"""The run report: counts, quality, types, languages, quarantine reasons, throughput."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import datetime

from docproc import __version__
from docproc.models import DocumentOutcome, RunReport
from docproc.settings import Settings
from docproc.storage import Storage


def build_report(
    run_id: str,
    source: str,
    destination: str,
    outcomes: Sequence[DocumentOutcome],
    started_at: datetime,
    finished_at: datetime,
    settings: Settings,
) -> RunReport:
    ordered = sorted(outcomes, key=lambda o: o.source)
    done = [o for o in ordered if o.status != "quarantined"]
    wall = max((finished_at - started_at).total_seconds(), 1e-9)
    processed_pages = sum(o.pages for o in ordered if o.status == "processed")
    return RunReport(
        run_id=run_id,
        source=source,
        destination=destination,
        started_at=started_at,
        finished_at=finished_at,
        pipeline_version=__version__,
        settings_fingerprint=settings.fingerprint(),
        counts={
            status: sum(o.status == status for o in ordered)
            for status in ("processed", "skipped", "quarantined")
        },
        by_quality=dict(Counter(o.quality for o in done if o.quality)),
        by_type=dict(Counter(o.document_type for o in done if o.document_type)),
        by_language=dict(Counter(o.language for o in done if o.language)),
        quarantined=[o for o in ordered if o.status == "quarantined"],
        documents=ordered,
        pages=processed_pages,
        ocr_pages=sum(o.ocr_pages for o in ordered),
        wall_seconds=round(wall, 3),
        pages_per_second=round(processed_pages / wall, 4),
    )


def report_prefix(run_id: str) -> str:
    return f"runs/{run_id}/"


def write_report(dst: Storage, report: RunReport) -> str:
    """Write report.json and report.md under runs/<run-id>/; returns the prefix."""
    prefix = report_prefix(report.run_id)
    dst.write_bytes(prefix + "report.md", render_markdown(report).encode(), "text/markdown; charset=utf-8")
    dst.write_bytes(prefix + "report.json", report.model_dump_json(indent=2).encode(), "application/json")
    return prefix


def _table(title: str, counts: dict[str, int]) -> list[str]:
    if not counts:
        return []
    rows = [f"| {key} | {value} |" for key, value in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]
    return [f"### {title}", "", f"| {title.lower()} | documents |", "|---|---:|", *rows, ""]


def render_markdown(report: RunReport) -> str:
    c = report.counts
    lines = [
        f"# docproc run {report.run_id}",
        "",
        f"- source: `{report.source}`",
        f"- destination: `{report.destination}`",
        f"- pipeline {report.pipeline_version}, settings `{report.settings_fingerprint}`",
        f"- {c['processed']} processed, {c['skipped']} skipped, {c['quarantined']} quarantined",
        f"- {report.pages} pages ({report.ocr_pages} OCR) in {report.wall_seconds:.1f} s: "
        f"{report.pages_per_second:.2f} pages/s",
        "",
        *_table("Quality", report.by_quality),
        *_table("Type", report.by_type),
        *_table("Language", report.by_language),
    ]
    if report.quarantined:
        lines += ["### Quarantined", "", "| document | reason | message |", "|---|---|---|"]
        lines += [
            f"| `{o.source}` | {o.reason} | {(o.message or '').replace('|', '/')} |"
            for o in report.quarantined
        ]
        lines.append("")
    lines += ["### Documents", "", "| document | status | quality | type | result |", "|---|---|---|---|---|"]
    lines += [
        f"| `{o.source}` | {o.status} | {o.quality or '-'} | {o.document_type or '-'} | `{o.result_key or '-'}` |"
        for o in report.documents
    ]
    return "\n".join(lines) + "\n"
