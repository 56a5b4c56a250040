"""OCR with the real engines and models on real pages (tests/data/corpus).

The easyocr Reader loads once per session; full-page reads are marked slow.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import threading
import time
import unicodedata
from collections import Counter
from collections.abc import Callable
from os import environ, pathsep
from os.path import realpath
from pathlib import Path
from shutil import which
from typing import TypeVar

import numpy as np
import psutil
import pytest
from PIL import Image

from docproc import imaging
from docproc.errors import ConfigurationError, OcrEngineError
from docproc.ocr import OcrEngine, OcrPage, engine_key, get_engine
from docproc.ocr.tesseract_engine import TesseractEngine
from docproc.settings import Settings

REPO = Path(__file__).resolve().parent.parent


def _normalize(text: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", text).split())


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance, one row at a time."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def cer(found: str, reference: str) -> float:
    """Character error rate with whitespace collapsed, as the corpus README measures it."""
    reference = _normalize(reference)
    return edit_distance(_normalize(found), reference) / len(reference)


def words(text: str) -> Counter[str]:
    # Single characters are left out: in linn.txt they are mostly bullets read as "0".
    tokens = re.findall(r"[a-z0-9]+", unicodedata.normalize("NFKC", text).lower())
    return Counter(t for t in tokens if len(t) > 1)


def test_edit_distance_helper() -> None:
    assert edit_distance("kitten", "sitting") == 3
    assert edit_distance("", "abc") == 3
    assert cer("The  quick\nfox", "The quick fox") == 0.0
    assert cer("The quack fox", "The quick fox") == pytest.approx(1 / 13)


@pytest.fixture(scope="session")
def easyocr_settings() -> Settings:
    return Settings(engine="easyocr", languages=("en",), gpu=False)


@pytest.fixture(scope="session")
def easyocr_engine(easyocr_settings: Settings) -> OcrEngine:
    return get_engine(easyocr_settings)


@pytest.fixture(scope="session")
def tesseract_settings() -> Settings:
    """Settings for the tesseract engine; skips when tesseract is missing and cannot be installed."""
    if shutil.which("tesseract") is None:
        script = REPO / "scripts" / "tools" / "tesseract.sh"
        done = subprocess.run(["bash", str(script)], capture_output=True, text=True, check=False)
        if done.returncode != 0 or shutil.which("tesseract") is None:
            pytest.skip(
                "tesseract is not installed and scripts/tools/tesseract.sh could not install it "
                f"(needs apt and root): {done.stderr.strip()[-300:]}"
            )
    return Settings(engine="tesseract", languages=("en",))


@pytest.fixture(scope="session")
def tesseract_engine(tesseract_settings: Settings) -> OcrEngine:
    return get_engine(tesseract_settings)


@pytest.fixture(scope="session")
def phototest_text(corpus: Path) -> str:
    return (corpus / "phototest.txt").read_text(encoding="utf-8")


def _check_page(page: OcrPage, image: np.ndarray) -> None:
    """Lines carry boxes inside the page and confidences in [0, 1]; text is the lines joined."""
    height, width = image.shape
    assert page.lines
    for line in page.lines:
        x0, y0, x1, y1 = line.bbox
        assert -2 <= x0 < x1 <= width + 2
        assert -2 <= y0 < y1 <= height + 2
        assert 0.0 <= line.confidence <= 1.0
        assert line.text.strip()
    assert page.text == "\n".join(line.text for line in page.lines)
    assert page.mean_confidence is not None
    assert 0.5 < page.mean_confidence <= 1.0


# -- engine cache


def test_get_engine_reuses_one_engine_per_settings(easyocr_engine: OcrEngine) -> None:
    again = get_engine(Settings(engine="easyocr", languages=("en",), gpu=False, dpi=300))
    assert again is easyocr_engine  # dpi is not part of what makes an engine
    assert easyocr_engine.name == "easyocr"


def test_get_engine_differs_by_engine(easyocr_engine: OcrEngine, tesseract_settings: Settings) -> None:
    tesseract = get_engine(tesseract_settings)
    assert tesseract is not easyocr_engine
    assert tesseract.name == "tesseract"
    assert get_engine(tesseract_settings) is tesseract


def test_get_engine_differs_by_languages(easyocr_engine: OcrEngine) -> None:
    other = Settings(engine="easyocr", languages=("en", "fr"))
    assert engine_key(other) != engine_key(Settings(engine="easyocr", languages=("en",)))
    # Not served from the English engine's cache entry: a new Reader is built, and French needs
    # a model the offline package does not ship (nothing may download).
    with pytest.raises(ConfigurationError, match="latin"):
        get_engine(other)


def test_get_engine_builds_once_under_concurrency(tesseract_settings: Settings) -> None:
    settings = Settings(engine="tesseract", languages=("en",), gpu=True)  # a key nobody built yet
    engines: list[OcrEngine] = []
    barrier = threading.Barrier(4)

    def fetch() -> None:
        barrier.wait()
        engines.append(get_engine(settings))

    threads = [threading.Thread(target=fetch) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(engines) == 4
    assert all(engine is engines[0] for engine in engines)


# -- easyocr


def test_engine_rejects_pages_that_are_not_gray8(easyocr_engine: OcrEngine) -> None:
    with pytest.raises(ValueError, match="uint8"):
        easyocr_engine.read(np.zeros((10, 10), dtype=bool))


@pytest.mark.slow
def test_easyocr_reads_phototest(
    easyocr_engine: OcrEngine, easyocr_settings: Settings, phototest: Image.Image, phototest_text: str
) -> None:
    prepared = imaging.prepare_page(phototest, easyocr_settings, easyocr_engine)
    assert prepared.rotation == 0  # already upright: no false positive
    assert prepared.skew == 0.0
    page = easyocr_engine.read(prepared.image)
    _check_page(page, prepared.image)
    assert cer(page.text, phototest_text) <= 0.02
    assert page.lines[0].text.startswith("This is a lot of 12 point text")


@pytest.mark.slow
def test_easyocr_reads_two_columns_in_order(
    easyocr_engine: OcrEngine, easyocr_settings: Settings, corpus: Path
) -> None:
    with Image.open(corpus / "linn.png") as image:
        prepared = imaging.prepare_page(image, easyocr_settings, easyocr_engine)
    assert prepared.rotation == 0
    page = easyocr_engine.read(prepared.image)
    _check_page(page, prepared.image)

    reference = words((corpus / "linn.txt").read_text(encoding="utf-8"))
    found = words(page.text)
    recall = sum((reference & found).values()) / sum(reference.values())
    assert recall >= 0.95, f"found {recall:.1%} of the reference words"

    text = _normalize(page.text)

    def at(phrase: str) -> int:
        position = text.find(phrase)
        assert position >= 0, f"{phrase!r} not read"
        return position

    # Title, then the first column top to bottom, then the second, then the full-width section.
    first_column = ["Recording a Sequence", "overdubbed", "Editing", "SINGLE STEP"]
    second_column = ["desired bar number", "Creating a Song", "Composition Without Compromise"]
    positions = [at(p) for p in ["LinnSequencer", *first_column, *second_column, "Additional Features"]]
    assert positions == sorted(positions)


@pytest.mark.slow
@pytest.mark.parametrize("turn", [90, 180, 270])
def test_easyocr_corrects_rotated_page(
    turn: int,
    easyocr_engine: OcrEngine,
    easyocr_settings: Settings,
    phototest: Image.Image,
    phototest_text: str,
) -> None:
    # PIL turns counter-clockwise; making the page upright again takes `turn` degrees clockwise.
    rotated = phototest.rotate(turn, expand=True)
    prepared = imaging.prepare_page(rotated, easyocr_settings, easyocr_engine)
    assert prepared.rotation == turn
    page = easyocr_engine.read(prepared.image)
    assert cer(page.text, phototest_text) <= 0.02


@pytest.mark.slow
def test_easyocr_deskews_page(
    easyocr_engine: OcrEngine, easyocr_settings: Settings, phototest: Image.Image, phototest_text: str
) -> None:
    skewed = imaging.to_gray8(phototest).rotate(
        4.0, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=255
    )
    prepared = imaging.prepare_page(skewed, easyocr_settings, easyocr_engine)
    assert prepared.rotation == 0
    assert prepared.skew == pytest.approx(4.0, abs=0.2)
    page = easyocr_engine.read(prepared.image)
    assert cer(page.text, phototest_text) <= 0.03


# -- tesseract


@pytest.mark.slow
def test_tesseract_reads_phototest(
    tesseract_engine: OcrEngine, tesseract_settings: Settings, phototest: Image.Image, phototest_text: str
) -> None:
    prepared = imaging.prepare_page(phototest, tesseract_settings, tesseract_engine)
    assert prepared.rotation == 0
    page = tesseract_engine.read(prepared.image)
    _check_page(page, prepared.image)
    assert cer(page.text, phototest_text) <= 0.02


@pytest.mark.slow
def test_tesseract_corrects_rotated_page(
    tesseract_engine: OcrEngine, tesseract_settings: Settings, phototest: Image.Image, phototest_text: str
) -> None:
    prepared = imaging.prepare_page(phototest.rotate(270, expand=True), tesseract_settings, tesseract_engine)
    assert prepared.rotation == 270
    assert cer(tesseract_engine.read(prepared.image).text, phototest_text) <= 0.02


def test_tesseract_killed_mid_page_is_a_docproc_error(
    tesseract_settings: Settings, corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Real fault: SIGKILL the real tesseract process while it reads a large page (OCRmyPDF's
    # test kills its engine the same way). The read must end in OcrEngineError, not hang or pass.
    # Aimed, not timed: a `tesseract` first on PATH stops itself before it becomes the real
    # program, so the test finds it however loaded the machine, lets it go and kills it once it
    # runs the real binary, which then still has the page's OCR ahead of it.
    real = which("tesseract")
    assert real is not None
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "tesseract"
    wrapper.write_text(
        "#!/bin/sh\n"
        f'case "$*" in *--version*|*--list-langs*) exec {real} "$@";; esac\n'
        f'kill -STOP $$\nexec {real} "$@"\n'
    )
    wrapper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{pathsep}{environ['PATH']}")
    engine = TesseractEngine(tesseract_settings.languages)  # not the cached one: this PATH
    with Image.open(corpus / "linn.png") as image:
        page = np.asarray(imaging.to_gray8(image))
    errors: list[BaseException] = []

    def read() -> None:
        try:
            engine.read(page)
        except Exception as exc:  # noqa: BLE001 - the test asserts on whatever the thread raised
            errors.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        victim = _wait_for(lambda: _stopped_child("tesseract"), "a stopped tesseract", reader, errors)
        victim.resume()
        real_exe = realpath(real)
        _wait_for(lambda: _exe(victim) == real_exe, "tesseract to exec the real binary", reader, errors)
        victim.send_signal(signal.SIGKILL)
    finally:
        for child in psutil.Process().children():
            if child.name() == "tesseract" and child.status() == psutil.STATUS_STOPPED:
                child.kill()
        reader.join(timeout=120)
    assert not reader.is_alive()
    assert len(errors) == 1, errors
    assert isinstance(errors[0], OcrEngineError)
    assert "signal 9" in str(errors[0])


def _stopped_child(name: str) -> psutil.Process | None:
    for child in psutil.Process().children():
        try:
            if child.name() == name and child.status() == psutil.STATUS_STOPPED:
                return child
        except psutil.Error:  # ended while we looked
            continue
    return None


def _exe(process: psutil.Process) -> str | None:
    try:  # not process.exe(), which psutil caches from its first call
        return realpath(f"/proc/{process.pid}/exe")
    except OSError:
        return None


T = TypeVar("T")


def _wait_for(
    found: Callable[[], T | None], what: str, reader: threading.Thread, errors: list[BaseException]
) -> T:
    deadline = time.monotonic() + 120
    while True:
        value = found()
        if value:
            return value
        if not reader.is_alive():
            pytest.fail(f"the read ended before {what}: {errors}")
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} after 120 s")
        time.sleep(0.01)


def test_tesseract_unknown_language(tesseract_settings: Settings) -> None:
    with pytest.raises(ConfigurationError, match="xx"):
        get_engine(Settings(engine="tesseract", languages=("xx",)))
