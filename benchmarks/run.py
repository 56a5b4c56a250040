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
2. Platform efficiency: `docproc run` (the whole pipeline: loading, orientation and skew
   detection, OCR, NLP, searchable PDF and Markdown, storage, Prefect and Dask) against the
   same engine in a process pool of as many processes on the same cores, each with its share
   of the threads, each opening the same PNG files and reading them: the default engine on 1
   and 2 workers, rapidocr and tesseract (one OpenMP thread per process) on as many workers
   as cores. Each engine gets enough copies of the five pages (files differing only in a
   metadata chunk, so docproc does not skip them as duplicates) for about ``--seconds`` of
   its work. The ratio is of paces once going: the run's pages finished between its first
   and last result against the warm pool (every process has its engine), run just before and
   just after `docproc run` and averaged, so that a drift in the machine's pace falls on both
   sides. Also printed: the flow's pages/s against the warm pool (the cluster's start inside
   the flow counts), the whole command's against the pool's from nothing (process start and
   engine load counted on both sides), CPU seconds of each side, and where a run's worker
   time went. Deskewing is docproc's work too, and it changes the engine's: the pool also
   reads the pages as docproc prepares them (turned and deskewed), right after its second
   run, and the run is printed against that pace as well (the platform's own overhead, with
   the engine reading the same images on both sides).

The machine may be shared: CPU seconds and ratios measured side by side are the figures to trust.
"""

from __future__ import annotations

import concurrent.futures
import json
import multiprocessing
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from docproc import imaging, loader, runtime
from docproc.detect import sniff_file
from docproc.models import DocumentResult, RunReport
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


def _pool_read(path: Path) -> int:
    with Image.open(path) as image:
        gray = np.asarray(image.convert("L"))
    return len(_pool_engine.read(gray).lines)


def raw_pool(paths: list[Path], engine: str, workers: int) -> dict[str, float]:
    """The bare engine in ``workers`` spawned processes sharing the cores, each opening the
    page files itself (as a script of its own would): pages per second once every process has
    its engine (warm), pages per second from nothing (process start and engine load included,
    like a run), and the CPU seconds of the whole pool."""
    threads = max(1, runtime.available_cores() // workers)
    started_cpu, started_cold = cpu_seconds(), time.perf_counter()
    # spawn, not fork: a forked child can inherit a lock some library thread of this process
    # held (one 2-process pool hung this way), and docproc's Dask workers are spawned too.
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(
        workers, mp_context=context, initializer=_pool_init, initargs=(engine, threads)
    ) as pool:
        warm = min(paths, key=lambda path: path.stat().st_size)
        list(pool.map(_pool_read, [warm] * workers))  # engines built in every process
        started = time.perf_counter()
        list(pool.map(_pool_read, paths, chunksize=1))
        finished = time.perf_counter()
    return {
        "pages_per_s": len(paths) / (finished - started),
        "pages_per_s_cold": len(paths) / (finished - started_cold),
        "cpu_s": cpu_seconds() - started_cpu,
    }


def prepared(images: dict[str, np.ndarray], engine: str) -> dict[str, np.ndarray]:
    """The pages as docproc hands them to ``engine``: turned and deskewed (``imaging.straighten``),
    except where the engine reads through the lean (``reads_leaning_below``)."""
    settings = Settings(engine=engine)  # type: ignore[arg-type]
    leaning = get_engine(settings).reads_leaning_below
    return {
        name: imaging.straighten(image, 1.0, settings, leaning_read=leaning).image
        for name, image in images.items()
    }


def inbox_with_copies(images: dict[str, np.ndarray], copies: int) -> tuple[Path, list[Path]]:
    """A folder of ``copies`` x the pages as PNG files that differ only in a text chunk (so
    docproc's content addressing does not skip them), and the files in the order written."""
    from PIL.PngImagePlugin import PngInfo

    inbox = Path(tempfile.mkdtemp(prefix="bench-inbox-"))
    order = []
    for copy in range(copies):
        info = PngInfo()
        info.add_text("benchmark-copy", str(copy))
        for name, image in images.items():
            path = inbox / f"{name}-{copy:03d}.png"
            Image.fromarray(image).save(path, pnginfo=info)
            order.append(path)
    return inbox, order


@dataclass(frozen=True)
class Run:
    """One `docproc run` as the benchmark sees it."""

    report: RunReport
    command_seconds: float  # the whole command: imports, Prefect API, cluster, flow, exit
    cpu_seconds: float  # of the whole command (API, cluster, workers)
    steady_pages_per_s: float  # pages finished between the first and the last result
    stages: dict[str, float]  # worker seconds per stage, summed over the results


def docproc_run(inbox: Path, engine: str, workers: int) -> Run:
    started_cpu, started = cpu_seconds(), time.perf_counter()
    out = Path(tempfile.mkdtemp(prefix=f"bench-w{workers}-"))
    subprocess.run(
        [
            *(str(ROOT / ".venv" / "bin" / "docproc"), "run", str(inbox), "--out", str(out)),
            *("--workers", str(workers), "--engine", engine),
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    command = time.perf_counter() - started
    [report_path] = out.glob("runs/*/report.json")
    report = RunReport.model_validate_json(report_path.read_text())
    stages: dict[str, float] = {}
    finished: list[tuple[float, int]] = []
    for path in out.glob("results/**/*.json"):
        result = DocumentResult.model_validate_json(path.read_bytes())
        finished.append((result.processed_at.timestamp(), len(result.pages)))
        for stage, seconds in result.timings.items():
            stages[stage] = stages.get(stage, 0.0) + seconds
    shutil.rmtree(out)
    finished.sort()
    # The pages finished after the first result, over the time they took: the run's pace once
    # it is going, without its start-up (the warm pool's figure leaves its own out too).
    steady = sum(pages for _, pages in finished[1:]) / (finished[-1][0] - finished[0][0])
    return Run(report, command, cpu_seconds() - started_cpu, steady, stages)


def platform_runs(
    images: dict[str, np.ndarray], cpu_per_page: dict[str, float], seconds: float
) -> dict[str, Any]:
    cores = runtime.available_cores()
    plan = [("easyocr", 1), ("easyocr", 2), ("rapidocr", cores), ("tesseract", cores)]
    if "--torch-run" in sys.argv:
        plan.append(("easyocr-torch", cores))
    if "--plan" in sys.argv:  # e.g. --plan tesseract:2,rapidocr:2
        chosen = sys.argv[sys.argv.index("--plan") + 1].split(",")
        plan = [(name, int(count)) for name, count in (item.split(":") for item in chosen)]
    print(
        "\n| engine | workers | pages | `docproc run` pages/s, steady | raw pool pages/s, warm (before / after) "
        "| **ratio** "
        "| `docproc run` pages/s, flow | ratio | `docproc run` pages/s, whole command "
        "| raw pool pages/s, cold | ratio | CPU s, `docproc run` | CPU s, raw pool | load avg |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    figures: dict[str, Any] = {}
    for engine, workers in plan:
        # Enough copies of the five pages for about `seconds` of this engine's work on the cores.
        per_page = cpu_per_page[engine]
        copies = max(1, round(seconds * min(workers, cores) / (per_page * len(images))))
        inbox, order = inbox_with_copies(images, copies)
        load_before = os.getloadavg()[0]
        # The pool before and after the run, against the machine's drift (a shared machine's
        # pace moved by 10% within an hour): the run is compared with the mean of the two.
        before = raw_pool(order, engine, workers)
        run = docproc_run(inbox, engine, workers)
        after = raw_pool(order, engine, workers)
        # The same engine on the pages as docproc prepares them, right after ``after``: what
        # deskewing does to the engine's own pace (a straightened page is not the same work).
        prepared_inbox, prepared_order = inbox_with_copies(prepared(images, engine), copies)
        straightened = raw_pool(prepared_order, engine, workers)
        raw = {key: (before[key] + after[key]) / 2 for key in before}
        shutil.rmtree(inbox)
        shutil.rmtree(prepared_inbox)
        prepared_pace = straightened["pages_per_s"] / after["pages_per_s"]
        load = (load_before + os.getloadavg()[0]) / 2
        report, stages = run.report, dict(run.stages)
        whole = report.pages / run.command_seconds
        total = stages.pop("total", sum(stages.values()))
        row = {
            "pages": report.pages,
            "docproc_steady_pages_per_s": round(run.steady_pages_per_s, 4),
            "raw_pool_pages_per_s": round(raw["pages_per_s"], 4),
            "raw_pool_pages_per_s_before_after": [
                round(before["pages_per_s"], 4),
                round(after["pages_per_s"], 4),
            ],
            "ratio": round(run.steady_pages_per_s / raw["pages_per_s"], 3),
            "raw_pool_prepared_vs_input_pages": round(prepared_pace, 3),
            "ratio_on_prepared_pages": round(
                run.steady_pages_per_s / (raw["pages_per_s"] * prepared_pace), 3
            ),
            "docproc_flow_pages_per_s": report.pages_per_second,
            "flow_ratio": round(report.pages_per_second / raw["pages_per_s"], 3),
            "docproc_command_pages_per_s": round(whole, 4),
            "raw_pool_pages_per_s_cold": round(raw["pages_per_s_cold"], 4),
            "command_ratio_vs_cold_pool": round(whole / raw["pages_per_s_cold"], 3),
            "flow_wall_s": report.wall_seconds,
            "command_wall_s": round(run.command_seconds, 1),
            "docproc_cpu_s": round(run.cpu_seconds, 1),
            "raw_pool_cpu_s": round(raw["cpu_s"], 1),
            "stage_share": {k: round(v / total, 3) for k, v in sorted(stages.items())} if total else {},
            "load_average_1min": round(load, 2),
        }
        figures[f"{engine}_{workers}_workers"] = row
        print(
            f"| {engine} | {workers} | {report.pages} | {row['docproc_steady_pages_per_s']:.3f} | "
            f"{row['raw_pool_pages_per_s']:.3f} ({before['pages_per_s']:.3f} / {after['pages_per_s']:.3f}) | "
            f"**{row['ratio']:.2f}** | "
            f"{report.pages_per_second:.3f} | {row['flow_ratio']:.2f} | {whole:.3f} | "
            f"{row['raw_pool_pages_per_s_cold']:.3f} | {row['command_ratio_vs_cold_pool']:.2f} | "
            f"{run.cpu_seconds:.0f} | {raw['cpu_s']:.0f} | {load:.1f} |",
            flush=True,
        )
        shares = row["stage_share"]
        print("    worker time: " + ", ".join(f"{k} {v:.0%}" for k, v in shares.items()), flush=True)
        print(
            f"    raw pool on the pages as docproc prepares them (deskewed): {prepared_pace:.2f}x its pace on "
            f"the input pages; the run against it: {row['ratio_on_prepared_pages']:.2f}",
            flush=True,
        )
    return figures


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


def _option(name: str, default: float) -> float:
    if name in sys.argv:
        return float(sys.argv[sys.argv.index(name) + 1])
    return default


def main() -> None:
    if "--orchestration" in sys.argv:
        print(
            f"orchestration per batch task (Prefect + Dask, warm 2-worker cluster): {per_task_overhead():.3f} s"
        )
        return
    settings = Settings()
    images = pages(settings)
    print(f"pages: {', '.join(f'{k} {v.shape[1]}x{v.shape[0]}' for k, v in images.items())}")
    figures: dict[str, Any] = {
        "cores": runtime.available_cores(),
        "load_average_start": [round(x, 2) for x in os.getloadavg()],
    }
    print(f"cores: {figures['cores']}, load average at the start: {figures['load_average_start']}")
    if "--no-engines" not in sys.argv:
        print("engines, 1 thread each, CPU seconds per page:")
        table = engines_table(images, threads=1)
        figures["engines"] = table
        figures["load_average_after_engines"] = [round(x, 2) for x in os.getloadavg()]
        stock, default, tess = table["stock-easyocr"], table["easyocr"], table["tesseract"]
        figures["default_vs_stock_cpu"] = round(stock["cpu_s_per_page"] / default["cpu_s_per_page"], 2)
        figures["default_vs_tesseract_cpu"] = round(default["cpu_s_per_page"] / tess["cpu_s_per_page"], 2)
        print()
        print(
            "| engine | CPU s/page | pages/CPU-s | pages/s (wall, 1 thread) | phototest CER | multilingual CER "
            "| linn words in order | detection / recognition / rest |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for name, row in table.items():
            shares = row["split"]
            split = (
                " / ".join(f"{shares[k]:.0%}" for k in ("detection", "recognition", "other"))
                if shares
                else "-"
            )
            print(
                f"| {LABELS[name]} | {row['cpu_s_per_page']:.2f} | {row['pages_per_cpu_s']:.3f} | "
                f"{row['pages_per_s_wall']:.3f} | "
                f"{row['phototest_cer']:.3f} | {row['multilingual_cer']:.3f} | {row['linn_words_in_order']:.1%} | {split} |"
            )
        print(
            f"\ndefault engine: {figures['default_vs_stock_cpu']}x less CPU per page than stock easyocr, "
            f"{figures['default_vs_tesseract_cpu']}x the CPU of tesseract"
        )
    if "--no-runs" not in sys.argv:
        # This run's CPU per page where the engines were measured, else the README's figures.
        cpu_per_page = {"easyocr-torch": 26.0, "easyocr": 4.6, "rapidocr": 4.5, "tesseract": 1.3}
        for name, row in figures.get("engines", {}).items():
            cpu_per_page["easyocr-torch" if name == "stock-easyocr" else name] = row["cpu_s_per_page"]
        figures["runs"] = platform_runs(images, cpu_per_page, _option("--seconds", 60.0))
    figures["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    sys.exit(main())
