"""`make bench`: the OCR engines side by side, then `docproc run` against the raw engine.

One run, one machine, the same five pages for everything: phototest.tif, a generated
multilingual page (tests/documents.py), c02-22.pdf, page 4 of multipage.pdf and linn.png (two
columns, small print), each prepared as docproc prepares pages (8-bit, scaled to the
``ocr_*_side`` settings).

1. Engines, one thread each, pages interleaved (engine after engine on each page, so a
   neighbour's load hits all engines alike): CPU seconds per page (process time plus child
   processes for tesseract), pages per CPU second, CER on phototest and the multilingual page,
   the share of linn's reference words found in reading order, and the split of the engine's
   wall time between detection, recognition and the rest (easyocr's and rapidocr's own steps).
   "stock easyocr" is easyocr 1.7.2 as its README uses it: ``Reader(...).readtext(image)``.
2. `docproc run` with the default engine on 1 and 2 workers (cores split between them) against
   the same engine reading the same pages in a process pool of as many processes on the same
   cores: pages per second, and their ratio (docproc's whole cost: loading, orientation and
   skew detection, NLP, storage, orchestration).

The machine may be shared: CPU seconds and ratios measured side by side are the figures to trust.
"""

from __future__ import annotations

import concurrent.futures
import json
import multiprocessing
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from docproc import imaging, loader, runtime
from docproc.detect import sniff_file
from docproc.models import RunReport
from docproc.ocr import get_engine
from docproc.ocr.quality import cer, words_in_order
from docproc.settings import Settings
from tests.documents import MULTILINGUAL_LINES, multilingual_pdf

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "data" / "corpus"
ENGINES = ("stock-easyocr", "easyocr", "rapidocr", "tesseract")
LABELS = {
    "stock-easyocr": "stock easyocr 1.7.2 (torch)",
    "easyocr": "docproc default: easyocr on OpenVINO",
    "rapidocr": "rapidocr (ONNX Runtime)",
    "tesseract": "tesseract (Debian)",
}


def pages(settings: Settings) -> dict[str, np.ndarray]:
    """The five benchmark pages, prepared like docproc's (without orientation and skew work)."""
    work = Path(tempfile.mkdtemp(prefix="bench-pages-"))
    multilingual = multilingual_pdf(work / "multilingual.pdf")
    import pypdfium2

    document = pypdfium2.PdfDocument(str(multilingual))
    rendered = document[0].render(scale=300 / 72).to_pil().convert("L")
    document.close()
    sources: dict[str, Image.Image] = {
        "phototest": Image.open(CORPUS / "phototest.tif"),
        "multilingual": rendered.crop((0, 0, rendered.width, rendered.height // 3)),
    }
    for name, path, index in (
        ("c02-22", CORPUS / "c02-22.pdf", 0),
        ("multipage-p4", CORPUS / "multipage.pdf", 3),
    ):
        loaded = [p for p in loader.iter_pages(path, sniff_file(path), settings) if p.image is not None]
        sources[name] = loaded[index].image
    sources["linn"] = Image.open(CORPUS / "linn.png")
    out = {}
    for name, image in sources.items():
        gray = np.array(imaging.to_gray8(image))
        factor = imaging.scale_factor(
            gray.shape[1], gray.shape[0], settings.ocr_min_side, settings.ocr_max_side
        )
        out[name] = imaging._resize(gray, factor) if factor != 1.0 else gray
    shutil.rmtree(work)
    return out


def cpu_seconds() -> float:
    me, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime


Reader = Callable[[np.ndarray], tuple[str, dict[str, float]]]


def build_readers(threads: int) -> dict[str, Reader]:
    import easyocr
    import easyocr_en_models
    import torch

    torch.set_num_threads(threads)
    stock = easyocr.Reader(
        ["en"],
        gpu=False,
        model_storage_directory=easyocr_en_models.model_dir(),
        download_enabled=False,
        verbose=False,
    )

    def read_stock(image: np.ndarray) -> tuple[str, dict[str, float]]:
        results = stock.readtext(image)
        return "\n".join(str(r[1]) for r in results), {}

    readers: dict[str, Reader] = {"stock-easyocr": read_stock}
    for name in ENGINES[1:]:
        engine = get_engine(Settings(engine=name, compute_threads=threads))

        def read(image: np.ndarray, engine: Any = engine) -> tuple[str, dict[str, float]]:
            page = engine.read(image)
            return page.text, dict(page.timings)

        readers[name] = read
    return readers


def engines_table(images: dict[str, np.ndarray], threads: int) -> dict[str, Any]:
    readers = build_readers(threads)
    truth = {
        "phototest": (CORPUS / "phototest.txt").read_text(encoding="utf-8"),
        "multilingual": "\n".join(MULTILINGUAL_LINES),
        "linn": (CORPUS / "linn.txt").read_text(encoding="utf-8"),
    }
    cpu = {name: 0.0 for name in readers}
    wall = {name: 0.0 for name in readers}
    split = {name: {"detection": 0.0, "recognition": 0.0, "other": 0.0} for name in readers}
    texts: dict[str, dict[str, str]] = {name: {} for name in readers}
    for page, image in images.items():
        for name, read in readers.items():
            started_cpu, started = cpu_seconds(), time.perf_counter()
            text, timings = read(image)
            cpu[name] += cpu_seconds() - started_cpu
            wall[name] += time.perf_counter() - started
            for key, value in timings.items():
                split[name][key] += value
            texts[name][page] = text
            print(f"  {name:14s} {page:13s} {cpu_seconds() - started_cpu:6.1f} CPU-s", flush=True)
    table: dict[str, Any] = {}
    for name in readers:
        timed = sum(split[name].values())
        table[name] = {
            "cpu_s_per_page": round(cpu[name] / len(images), 2),
            "pages_per_cpu_s": round(len(images) / cpu[name], 3),
            "pages_per_s_wall": round(len(images) / wall[name], 3),
            "phototest_cer": round(cer(texts[name]["phototest"], truth["phototest"]), 4),
            "multilingual_cer": round(cer(texts[name]["multilingual"], truth["multilingual"]), 4),
            "linn_words_in_order": round(words_in_order(texts[name]["linn"], truth["linn"]), 4),
            "split": {k: round(v / timed, 3) for k, v in split[name].items()} if timed else None,
        }
    return table


_pool_engine: Any = None


def _pool_init(engine: str, threads: int) -> None:
    global _pool_engine
    settings = Settings(engine=engine, compute_threads=threads)  # type: ignore[arg-type]
    runtime.configure_process(settings)
    _pool_engine = get_engine(settings)


def _pool_read(image: np.ndarray) -> int:
    return len(_pool_engine.read(image).lines)


def raw_pool(images: dict[str, np.ndarray], engine: str, workers: int) -> tuple[float, float]:
    """Pages per second of the bare engine in ``workers`` processes sharing the cores (engines
    built first), and the CPU seconds of the whole pool, engine loading included."""
    threads = max(1, runtime.available_cores() // workers)
    started_cpu = cpu_seconds()
    # spawn, not fork: a forked child can inherit a lock some library thread of this process
    # held (one 2-process pool hung this way), and docproc's Dask workers are spawned too.
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(
        workers, mp_context=context, initializer=_pool_init, initargs=(engine, threads)
    ) as pool:
        list(pool.map(_pool_read, [next(iter(images.values()))] * workers))  # warm: engines built
        started = time.perf_counter()
        list(pool.map(_pool_read, list(images.values()), chunksize=1))
        pages_per_s = len(images) / (time.perf_counter() - started)
    return pages_per_s, cpu_seconds() - started_cpu


def docproc_run(images: dict[str, np.ndarray], engine: str, workers: int) -> tuple[RunReport, float]:
    """The run's report and the CPU seconds of the whole command (API, cluster, workers)."""
    started_cpu = cpu_seconds()
    inbox = Path(tempfile.mkdtemp(prefix="bench-inbox-"))
    out = Path(tempfile.mkdtemp(prefix=f"bench-w{workers}-"))
    for name, image in images.items():
        Image.fromarray(image).save(inbox / f"{name}.png")
    subprocess.run(
        [
            *(str(ROOT / ".venv" / "bin" / "docproc"), "run", str(inbox), "--out", str(out)),
            *("--workers", str(workers), "--engine", engine),
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    [report_path] = out.glob("runs/*/report.json")
    report = RunReport.model_validate_json(report_path.read_text())
    shutil.rmtree(out)
    shutil.rmtree(inbox)
    return report, cpu_seconds() - started_cpu


def per_task_overhead(tasks: int = 16) -> float:
    """Seconds Prefect + Dask add per mapped task on a warm 2-worker LocalCluster (--orchestration)."""
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
    if "--orchestration" in sys.argv:
        print(
            f"orchestration per batch task (Prefect + Dask, warm 2-worker cluster): {per_task_overhead():.3f} s"
        )
        return
    settings = Settings()
    images = pages(settings)
    print(f"pages: {', '.join(f'{k} {v.shape[1]}x{v.shape[0]}' for k, v in images.items())}")
    figures: dict[str, Any] = {"cores": runtime.available_cores()}
    if "--no-engines" not in sys.argv:
        print("engines, 1 thread each, CPU seconds per page:")
        table = engines_table(images, threads=1)
        figures["engines"] = table
        stock, default, tess = table["stock-easyocr"], table["easyocr"], table["tesseract"]
        figures["default_vs_stock_cpu"] = round(stock["cpu_s_per_page"] / default["cpu_s_per_page"], 2)
        figures["default_vs_tesseract_cpu"] = round(default["cpu_s_per_page"] / tess["cpu_s_per_page"], 2)
        print()
        print(
            "| engine | CPU s/page | pages/CPU-s | phototest CER | multilingual CER | linn words in order | detection / recognition / rest |"
        )
        print("|---|---|---|---|---|---|---|")
        for name, row in table.items():
            shares = row["split"]
            split = (
                " / ".join(f"{shares[k]:.0%}" for k in ("detection", "recognition", "other"))
                if shares
                else "-"
            )
            print(
                f"| {LABELS[name]} | {row['cpu_s_per_page']:.2f} | {row['pages_per_cpu_s']:.3f} | "
                f"{row['phototest_cer']:.3f} | {row['multilingual_cer']:.3f} | {row['linn_words_in_order']:.1%} | {split} |"
            )
        print(
            f"\ndefault engine: {figures['default_vs_stock_cpu']}x less CPU per page than stock easyocr, "
            f"{figures['default_vs_tesseract_cpu']}x the CPU of tesseract"
        )
    if "--no-runs" not in sys.argv:
        print(
            "\n| workers | docproc run pages/s (flow) | raw pool pages/s | ratio "
            "| docproc run CPU s (whole command) | raw pool CPU s (incl. engine load) | CPU ratio |"
        )
        print("|---|---|---|---|---|---|---|")
        for workers in (1, 2):
            raw, raw_cpu = raw_pool(images, "easyocr", workers)
            report, run_cpu = docproc_run(images, "easyocr", workers)
            ratio = report.pages_per_second / raw
            figures[f"run_{workers}_workers"] = {
                "docproc_pages_per_s": report.pages_per_second,
                "raw_pool_pages_per_s": round(raw, 3),
                "ratio": round(ratio, 3),
                "flow_wall_s": report.wall_seconds,
                "docproc_cpu_s": round(run_cpu, 1),
                "raw_pool_cpu_s": round(raw_cpu, 1),
                "cpu_ratio": round(raw_cpu / run_cpu, 3),
            }
            print(
                f"| {workers} | {report.pages_per_second:.3f} | {raw:.3f} | {ratio:.2f} "
                f"| {run_cpu:.1f} | {raw_cpu:.1f} | {raw_cpu / run_cpu:.2f} |",
                flush=True,
            )
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    sys.exit(main())
