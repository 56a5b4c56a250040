"""`make bench-scale`: what orchestration costs per document at 10,000 and 100,000 documents.

Small documents (half text files, half one-page text-layer PDFs) go through `process_documents`
with the no-op OCR engine (``benchmarks.engines:NoopEngine``) and without the searchable PDF and
Markdown outputs (this measures orchestration, not processing) on the local cluster, against an
embedded Prefect server, then again (an immediate re-run over unchanged objects, which the
source index spares their reading and hashing). Printed per size, in one run on one machine:

- per-document overhead: (flow wall time - processing seconds / workers) / documents, where
  processing seconds are what the documents' own outcomes record;
- flow peak RSS (this process: the flow and the in-process Dask scheduler);
- Prefect task runs of the run;
- Prefect API latency during the run (a `GET /health` every second: median, p95, max);
- the wall time of the re-run.

Sizes: ``BENCH_SIZES=1000,10000 make bench-scale`` (default 10000,100000). Each size runs in
its own process, so peak RSS is per size.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENGINE = "benchmarks.engines:NoopEngine"


def _pdf(text: str) -> bytes:
    """A minimal one-page PDF with a text layer (valid xref), cheap to make by the thousand."""
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 4 0 R >> >> "
        b"/Contents 5 0 R >>",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        b"<< /Length " + str(len(stream)).encode() + b" >>\nstream\n" + stream + b"\nendstream",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{o:010d} 00000 n \n".encode() for o in offsets)
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


def make_inbox(folder: Path, count: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        sub = folder / f"{i // 1000:03d}"
        sub.mkdir(exist_ok=True)
        text = f"Invoice INV-{i:06d} of 2024-03-{1 + i % 28:02d}: amount due 1{i % 1000:03d}.00 EUR."
        if i % 2:
            (sub / f"doc-{i:06d}.pdf").write_bytes(_pdf(text))
        else:
            (sub / f"doc-{i:06d}.txt").write_text(text + "\n", encoding="utf-8")


class _Latency:
    """Prefect API latency, sampled every second while a run goes on."""

    def __init__(self, api_url: str) -> None:
        import httpx

        self.client = httpx.Client(base_url=api_url, timeout=30)
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(1.0):
            start = time.perf_counter()
            with contextlib.suppress(Exception):  # a failed probe is a latency too
                self.client.get("/health")
            self.samples.append(time.perf_counter() - start)

    def __enter__(self) -> _Latency:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self) -> str:
        if not self.samples:
            return "no samples"
        ordered = sorted(self.samples)
        p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
        return (
            f"median {statistics.median(ordered) * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms, "
            f"max {ordered[-1] * 1000:.0f} ms ({len(ordered)} samples)"
        )


def _task_runs(api_url: str, flow_run_id: str) -> int:
    import httpx

    response = httpx.post(
        f"{api_url}/task_runs/count", json={"flow_runs": {"id": {"any_": [flow_run_id]}}}, timeout=60
    )
    response.raise_for_status()
    return int(response.json())


def one_size(count: int, workers: int) -> dict[str, object]:
    """Run in its own process: make the inbox, run, re-run, measure."""
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ["DOCPROC_ENGINE"] = ENGINE
    from docproc import report
    from docproc.settings import Settings
    from docproc.storage import LocalStorage
    from flows import process
    from flows.local_api import prefect_api

    work = Path(tempfile.mkdtemp(prefix=f"docproc-bench-{count}-"))
    try:
        inbox, out = work / "inbox", work / "out"
        started = time.perf_counter()
        make_inbox(inbox, count)
        made = time.perf_counter() - started
        settings = Settings(engine=ENGINE, workers=workers, searchable_pdf=False, markdown=False)
        flow = process.process_documents.with_options(task_runner=process.build_task_runner(settings))
        with prefect_api() as api_url:
            with _Latency(api_url) as latency:
                started = time.perf_counter()
                first = flow(source=str(inbox), destination=str(out), settings_overrides=settings.overrides())
                wall = time.perf_counter() - started
            started = time.perf_counter()
            again = flow(source=str(inbox), destination=str(out), settings_overrides=settings.overrides())
            rerun = time.perf_counter() - started
            tasks = _task_runs(api_url, first.run_id)
        seconds = sum(o.seconds for o in report.read_outcomes(LocalStorage(out), first))
        return {
            "documents": count,
            "inbox_seconds": round(made, 1),
            "counts": first.counts,
            "wall_seconds": round(wall, 1),
            "processing_seconds": round(seconds, 1),
            "overhead_ms_per_document": round(1000 * (wall - seconds / workers) / count, 2),
            "flow_peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "task_runs": tasks,
            "api_latency": latency.summary(),
            "rerun_seconds": round(rerun, 1),
            "rerun_ms_per_document": round(1000 * rerun / count, 2),
            "rerun_counts": again.counts,
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--one":
        print("RESULT " + json.dumps(one_size(int(sys.argv[2]), int(os.environ.get("BENCH_WORKERS", "2")))))
        return
    sizes = [int(s) for s in os.environ.get("BENCH_SIZES", "10000,100000").split(",") if s]
    for count in sizes:
        proc = subprocess.run(
            [sys.executable, "-m", "benchmarks.scale", "--one", str(count)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
        lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
        if proc.returncode != 0 or not lines:
            print(f"{count} documents: failed (exit {proc.returncode})\n{proc.stderr[-3000:]}")
            continue
        figures = json.loads(lines[-1].removeprefix("RESULT "))
        print(f"== {count} documents ==")
        for name, value in figures.items():
            print(f"  {name}: {value}")


if __name__ == "__main__":
    main()
