"""`make bench`: pages/s of a plain easyocr loop against `docproc run` with 1 and 2 workers.

One run, same machine, same pages: phototest.tif, c02-22.pdf and multipage.pdf from the test
corpus (8 pages, 7 of them scans). The plain loop reads the very images docproc reads (8-bit,
same DPI, same scaling) but skips orientation detection, deskew, NLP, storage and orchestration,
so the difference is docproc's whole cost, of which orchestration is one part:

    orchestration per page = (flow wall time - pipeline seconds / workers) / pages

where pipeline seconds are the per-document stage timings the results record.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from docproc import imaging, loader
from docproc.detect import sniff_file
from docproc.models import DocumentResult, RunReport
from docproc.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "data" / "corpus"
DOCUMENTS = ("phototest.tif", "c02-22.pdf", "multipage.pdf")


def page_images(folder: Path, settings: Settings) -> list[np.ndarray]:
    images = []
    for path in sorted(folder.iterdir()):
        for page in loader.iter_pages(path, sniff_file(path), settings):
            if page.image is None:
                continue
            gray = np.array(imaging.to_gray8(page.image))
            factor = imaging.scale_factor(
                gray.shape[1], gray.shape[0], settings.ocr_min_side, settings.ocr_max_side
            )
            images.append(imaging._resize(gray, factor) if factor != 1.0 else gray)
    return images


def plain_easyocr(images: list[np.ndarray]) -> tuple[float, float]:
    import easyocr
    import easyocr_en_models

    started = time.perf_counter()
    reader = easyocr.Reader(
        ["en"],
        gpu=False,
        model_storage_directory=easyocr_en_models.model_dir(),
        download_enabled=False,
        verbose=False,
    )
    loaded = time.perf_counter()
    for image in images:
        reader.readtext(image, paragraph=False)
    return loaded - started, time.perf_counter() - loaded


def docproc_run(inbox: Path, workers: int) -> tuple[float, RunReport, list[DocumentResult]]:
    out = Path(tempfile.mkdtemp(prefix=f"bench-w{workers}-"))
    started = time.perf_counter()
    subprocess.run(
        [
            str(ROOT / ".venv" / "bin" / "docproc"),
            "run",
            str(inbox),
            "--out",
            str(out),
            "--workers",
            str(workers),
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    wall = time.perf_counter() - started
    [report_path] = out.glob("runs/*/report.json")
    report = RunReport.model_validate_json(report_path.read_text())
    results = [DocumentResult.model_validate_json(p.read_text()) for p in out.glob("results/*.json")]
    shutil.rmtree(out)
    return wall, report, results


def per_task_overhead(tasks: int = 16) -> float:
    """Seconds Prefect + Dask add per mapped task on a warm 2-worker LocalCluster: the cost a batch
    pays on top of its pages, which sets how many pages a batch needs to keep it under 5%."""
    from prefect import flow, task
    from prefect.cache_policies import NO_CACHE

    from flows.local_api import prefect_api
    from flows.process import build_task_runner

    @task(cache_policy=NO_CACHE)
    def nothing(i: int) -> int:
        return i

    @flow(task_runner=build_task_runner(Settings(workers=2)))
    def overhead() -> float:
        [f.result() for f in nothing.map(range(4))]  # warm: workers started, modules imported
        started = time.perf_counter()
        [f.result() for f in nothing.map(range(tasks))]
        return (time.perf_counter() - started) / tasks

    with prefect_api():
        return float(overhead())


def main() -> None:
    task_s = per_task_overhead()
    print(f"orchestration per batch task (Prefect + Dask, warm 2-worker cluster): {task_s:.3f} s")
    if "--orchestration-only" in sys.argv:
        return
    settings = Settings()
    inbox = Path(tempfile.mkdtemp(prefix="bench-inbox-"))
    for name in DOCUMENTS:
        shutil.copy(CORPUS / name, inbox / name)
    images = page_images(inbox, settings)
    load_s, loop_s = plain_easyocr(images)
    figures: dict[str, object] = {
        "per_task_orchestration_s": round(task_s, 3),
        "ocr_pages": len(images),
        "plain_easyocr": {
            "model_load_s": round(load_s, 2),
            "ocr_s": round(loop_s, 2),
            "pages_per_s": round(len(images) / loop_s, 3),
        },
    }
    print(f"pages: {len(images)} scanned pages (+ text-layer pages) from {', '.join(DOCUMENTS)}")
    print(
        f"plain easyocr loop, 1 process: {len(images) / loop_s:.3f} pages/s ({loop_s:.1f} s OCR, model load {load_s:.1f} s)"
    )
    for workers in (1, 2):
        wall, report, results = docproc_run(inbox, workers)
        pipeline_s = sum(r.timings.get("total", 0.0) for r in results)
        ocr_s = sum(r.timings.get("ocr", 0.0) for r in results)
        orchestration = max(report.wall_seconds - pipeline_s / workers, 0.0)
        per_page = orchestration / max(report.pages, 1)
        figures[f"docproc_{workers}_workers"] = {
            "command_wall_s": round(wall, 2),
            "flow_wall_s": report.wall_seconds,
            "pages": report.pages,
            "pages_per_s_flow": report.pages_per_second,
            "pages_per_s_command": round(report.pages / wall, 3),
            "pipeline_s": round(pipeline_s, 2),
            "ocr_s": round(ocr_s, 2),
            "orchestration_per_page_s": round(per_page, 3),
            "orchestration_share_of_ocr": round(orchestration / ocr_s, 3) if ocr_s else None,
        }
        print(
            f"docproc run, {workers} worker(s): {report.pages_per_second:.3f} pages/s in the flow "
            f"({report.wall_seconds:.1f} s), {report.pages / wall:.3f} pages/s for the whole command "
            f"({wall:.1f} s incl. API and cluster start); pipeline {pipeline_s:.1f} s (OCR {ocr_s:.1f} s); "
            f"orchestration {per_page:.3f} s/page"
        )
    shutil.rmtree(inbox)
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    sys.exit(main())
