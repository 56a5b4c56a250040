"""The run report: counts, quality, types, languages, quarantine reasons, throughput."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator, Sequence
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
    """A report over outcomes held in memory (small runs, tests); runs use :class:`RunLog`."""
    log = RunLog(None, run_id, settings.report_limit)
    for outcome in outcomes:
        log.add(outcome)
    return log.report(source, destination, started_at, finished_at, settings)


class RunLog:
    """The outcomes of a run as they finish: counted here, and streamed to storage as JSON Lines
    (``runs/<run-id>/outcomes/NNNNNN.jsonl``) in chunks, so the flow never holds them all."""

    def __init__(
        self,
        dst: Storage | None,
        run_id: str,
        limit: int,
        flush_every: int = 1000,
        flush_seconds: float = 10.0,
    ) -> None:
        self.dst, self.run_id, self.limit = dst, run_id, limit
        self.flush_every, self.flush_seconds = flush_every, flush_seconds
        self.total = 0
        self.counts: Counter[str] = Counter({"processed": 0, "skipped": 0, "quarantined": 0})
        self.by_quality: Counter[str] = Counter()
        self.by_type: Counter[str] = Counter()
        self.by_language: Counter[str] = Counter()
        self.pages = 0
        self.ocr_pages = 0
        self.first: list[DocumentOutcome] = []
        self.first_quarantined: list[DocumentOutcome] = []
        self._pending: list[str] = []
        self._chunks = 0
        self._flushed_at = time.monotonic()

    @property
    def prefix(self) -> str:
        return report_prefix(self.run_id) + "outcomes/"

    def add(self, outcome: DocumentOutcome) -> None:
        self.total += 1
        self.counts[outcome.status] += 1
        if outcome.status != "quarantined":
            for counter, value in (
                (self.by_quality, outcome.quality),
                (self.by_type, outcome.document_type),
                (self.by_language, outcome.language),
            ):
                if value:
                    counter[value] += 1
        if outcome.status == "processed":
            self.pages += outcome.pages
        self.ocr_pages += outcome.ocr_pages
        if len(self.first) < self.limit:
            self.first.append(outcome)
        if outcome.status == "quarantined" and len(self.first_quarantined) < self.limit:
            self.first_quarantined.append(outcome)
        if self.dst is not None:
            self._pending.append(outcome.model_dump_json())
            if (
                len(self._pending) >= self.flush_every
                or time.monotonic() - self._flushed_at > self.flush_seconds
            ):
                self.flush()

    def flush(self) -> None:
        self._flushed_at = time.monotonic()
        if self.dst is None or not self._pending:
            return
        self._chunks += 1
        data = ("\n".join(self._pending) + "\n").encode()
        self.dst.write_bytes(f"{self.prefix}{self._chunks:06d}.jsonl", data, "application/x-ndjson")
        self._pending = []

    def report(
        self,
        source: str,
        destination: str,
        started_at: datetime,
        finished_at: datetime,
        settings: Settings,
        error: str | None = None,
    ) -> RunReport:
        self.flush()
        wall = max((finished_at - started_at).total_seconds(), 1e-9)
        return RunReport(
            run_id=self.run_id,
            source=source,
            destination=destination,
            started_at=started_at,
            finished_at=finished_at,
            pipeline_version=__version__,
            settings_fingerprint=settings.fingerprint(),
            counts=dict(self.counts),
            by_quality=dict(self.by_quality),
            by_type=dict(self.by_type),
            by_language=dict(self.by_language),
            quarantined=sorted(self.first_quarantined, key=lambda o: o.source),
            documents=sorted(self.first, key=lambda o: o.source),
            pages=self.pages,
            ocr_pages=self.ocr_pages,
            wall_seconds=round(wall, 3),
            pages_per_second=round(self.pages / wall, 4),
            outcomes_prefix=self.prefix if self.dst is not None else None,
            error=error,
        )


def read_outcomes(dst: Storage, report: RunReport) -> Iterator[DocumentOutcome]:
    """Every outcome of a run, read back from its JSON Lines files."""
    if report.outcomes_prefix is None:
        yield from report.documents
        return
    for obj in dst.iter_objects(report.outcomes_prefix):
        for line in dst.read_bytes(obj.key).decode().splitlines():
            if line.strip():
                yield DocumentOutcome.model_validate_json(line)


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
    if report.error:
        lines[7:7] = [f"- **the run failed**, this report is partial: {report.error}"]
    total = sum(c.values())
    if report.outcomes_prefix and total > len(report.documents):
        lines += [
            f"Listed below: the first {len(report.documents)} of {total} documents and the first "
            f"{len(report.quarantined)} of {c['quarantined']} quarantined; every outcome is in "
            f"`{report.outcomes_prefix}` (JSON Lines).",
            "",
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
