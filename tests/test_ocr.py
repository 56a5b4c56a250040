"""OCR with the real engines and models on real pages (tests/data/corpus).

The easyocr Reader loads once per session; full-page reads are marked slow.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
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
from PIL import Image, ImageFilter

from docproc import imaging, pipeline
from docproc.errors import ConfigurationError, OcrEngineError
from docproc.ocr import OcrEngine, OcrPage, engine_key, get_engine
from docproc.ocr.quality import cer, edit_distance, normalize
from docproc.ocr.tesseract_engine import TesseractEngine
from docproc.settings import Settings
from tests.documents import MULTILINGUAL_LINES, multilingual_pdf

REPO = Path(__file__).resolve().parent.parent


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
def tesseract_settings(tesseract_bin: Path) -> Settings:
    """Settings for the tesseract engine (tesseract_bin installs it, or fails the test)."""
    return Settings(engine="tesseract", languages=("en",))


@pytest.fixture(scope="session")
def tesseract_engine(tesseract_settings: Settings) -> OcrEngine:
    return get_engine(tesseract_settings)


@pytest.fixture(scope="session")
def phototest_text(corpus: Path) -> str:
    return (corpus / "phototest.txt").read_text(encoding="utf-8")


@pytest.fixture(scope="session")
def multilingual_page(tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    """The generated multilingual page (tests/documents.py) rendered at 300 dpi: the text part."""
    import pypdfium2

    path = multilingual_pdf(tmp_path_factory.mktemp("multilingual") / "multilingual.pdf")
    document = pypdfium2.PdfDocument(str(path))
    try:
        image = document[0].render(scale=300 / 72).to_pil().convert("L")
    finally:
        document.close()
    return np.asarray(image.crop((0, 0, image.width, image.height // 3)))


MULTILINGUAL_TEXT = "\n".join(MULTILINGUAL_LINES)


def _check_two_columns(engine: OcrEngine, settings: Settings, corpus: Path) -> None:
    """linn.png: at least 95% of the reference words, title, left column, right column, footer."""
    with Image.open(corpus / "linn.png") as image:
        read = pipeline.read_image(image, settings)
    assert (read.engine, read.prepared.rotation) == (engine.name, 0)
    page = read.ocr
    _check_page(page, read.prepared.image)

    reference = words((corpus / "linn.txt").read_text(encoding="utf-8"))
    found = words(page.text)
    recall = sum((reference & found).values()) / sum(reference.values())
    assert recall >= 0.95, f"found {recall:.1%} of the reference words"

    text = normalize(page.text)

    def at(phrase: str) -> int:
        position = text.find(phrase)
        assert position >= 0, f"{phrase!r} not read"
        return position

    # Title, then the first column top to bottom, then the second, then the full-width section.
    first_column = ["Recording a Sequence", "overdubbed", "Editing", "SINGLE STEP"]
    second_column = ["desired bar number", "Creating a Song", "Composition Without Compromise"]
    positions = [at(p) for p in ["LinnSequencer", *first_column, *second_column, "Additional Features"]]
    assert positions == sorted(positions)


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
    other = Settings(engine="easyocr-torch", languages=("en", "fr"))
    assert engine_key(other) != engine_key(Settings(engine="easyocr-torch", languages=("en",)))
    # Not served from the English engine's cache entry: a new Reader is built, and French needs
    # a model the offline package does not ship (nothing may download).
    with pytest.raises(ConfigurationError, match="latin"):
        get_engine(other)
    # The default engine's OpenVINO models are converted from the English weights: for other
    # languages it is easyocr on torch with theirs, named when they are not installed.
    with pytest.raises(ConfigurationError, match=r"languages \['en', 'fr'\].*latin_g2\.pth"):
        get_engine(Settings(engine="easyocr", languages=("en", "fr")))


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
    timer = pipeline._Timer()
    read = pipeline.read_image(phototest, easyocr_settings, timer)
    assert read.prepared.rotation == 0  # already upright: no false positive
    assert read.prepared.skew == 0.0
    assert "orientation" not in timer.seconds  # read confidently: no orientation test
    page = read.ocr
    _check_page(page, read.prepared.image)
    assert cer(page.text, phototest_text) <= 0.02
    assert page.lines[0].text.startswith("This is a lot of 12 point text")


@pytest.mark.slow
def test_easyocr_reads_two_columns_in_order(
    easyocr_engine: OcrEngine, easyocr_settings: Settings, corpus: Path
) -> None:
    _check_two_columns(easyocr_engine, easyocr_settings, corpus)


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
    timer = pipeline._Timer()
    read = pipeline.read_image(rotated, easyocr_settings, timer)
    assert read.prepared.rotation == turn
    assert cer(read.ocr.text, phototest_text) <= 0.02
    # A quarter turn is found from the ink; only an upside-down reading asks the engine.
    assert ("orientation" in timer.seconds) == (turn != 90)


@pytest.mark.slow
def test_easyocr_deskews_page(
    easyocr_engine: OcrEngine, easyocr_settings: Settings, phototest: Image.Image, phototest_text: str
) -> None:
    skewed = imaging.to_gray8(phototest).rotate(
        4.0, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=255
    )
    read = pipeline.read_image(skewed, easyocr_settings)
    assert read.prepared.rotation == 0
    assert read.prepared.skew == pytest.approx(4.0, abs=0.2)
    assert cer(read.ocr.text, phototest_text) <= 0.03


# -- tesseract


@pytest.mark.slow
def test_tesseract_reads_phototest(
    tesseract_engine: OcrEngine, tesseract_settings: Settings, phototest: Image.Image, phototest_text: str
) -> None:
    read = pipeline.read_image(phototest, tesseract_settings)
    assert read.prepared.rotation == 0
    page = read.ocr
    _check_page(page, read.prepared.image)
    assert cer(page.text, phototest_text) <= 0.02


@pytest.mark.slow
def test_tesseract_corrects_rotated_page(
    tesseract_engine: OcrEngine, tesseract_settings: Settings, phototest: Image.Image, phototest_text: str
) -> None:
    timer = pipeline._Timer()
    read = pipeline.read_image(phototest.rotate(270, expand=True), tesseract_settings, timer)
    # The ink says sideways, a quarter turn reads it upside down, tesseract's OSD turns it round.
    assert read.prepared.rotation == 270
    assert "orientation" in timer.seconds
    assert cer(read.ocr.text, phototest_text) <= 0.02


def test_tesseract_reads_a_slightly_leaning_page_as_it_is(tesseract_settings: Settings, corpus: Path) -> None:
    # Under TesseractEngine.reads_leaning_below the page is not turned (a turn costs tesseract
    # CPU) and the two columns of linn still read in order; past it the page is deskewed.
    from docproc.ocr.quality import words_in_order

    truth = (corpus / "linn.txt").read_text(encoding="utf-8")
    with Image.open(corpus / "linn.png") as image:
        gray = imaging.to_gray8(image)
    for lean, as_it_is in ((0.8, True), (2.0, False)):
        leaned = gray.rotate(lean, resample=Image.Resampling.BICUBIC, fillcolor=255)
        read = pipeline.read_image(leaned, tesseract_settings)
        if as_it_is:
            assert read.prepared.skew == 0.0
            scaled, _ = imaging.scaled_gray(leaned, tesseract_settings)
            assert np.array_equal(read.prepared.image, scaled)
        else:
            assert read.prepared.skew == pytest.approx(lean, abs=0.15)
        assert words_in_order(read.ocr.text, truth) >= 0.98


def test_tesseract_killed_mid_page_is_a_docproc_error(
    tesseract_settings: Settings, corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Real fault: SIGKILL the real tesseract process while it reads a large page (OCRmyPDF's
    # test kills its engine the same way). The read must end in OcrEngineError, not hang or pass.
    # Aimed, not timed: a `tesseract` first on PATH stops itself before it becomes the real
    # program, so the test finds it however loaded the machine, lets it go and kills it once it
    # runs the real binary, which then still has the page's OCR ahead of it.
    engine, real = _engine_behind_wrapper(
        tesseract_settings,
        tmp_path,
        monkeypatch,
        lambda real: f'case "$*" in *--version*|*--list-langs*) exec {real} "$@";; esac\nkill -STOP $$\n',
    )
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


def test_tesseract_runs_without_the_dask_workers_malloc_setting(
    tesseract_settings: Settings, phototest: Image.Image, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Dask's nanny starts its workers with MALLOC_TRIM_THRESHOLD_=65536; passed on, it made the
    # tesseract child up to 3% slower (18-72% more page faults). A `tesseract` first on PATH writes
    # the environment it was given, then runs the real program.
    seen = tmp_path / "env"
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "65536")  # as Dask's nanny sets it
    monkeypatch.setenv("DOCPROC_TEST_MARKER", "passed-on")
    engine, _ = _engine_behind_wrapper(tesseract_settings, tmp_path, monkeypatch, lambda _: f"env > {seen}\n")
    page = engine.read(np.asarray(imaging.to_gray8(phototest)))
    assert "quick brown" in page.text
    env = dict(line.split("=", 1) for line in seen.read_text().splitlines() if "=" in line)
    assert "MALLOC_TRIM_THRESHOLD_" not in env
    assert env["OMP_THREAD_LIMIT"] == "1"
    assert env["DOCPROC_TEST_MARKER"] == "passed-on"  # the rest of the environment goes along


def _engine_behind_wrapper(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, before_exec: Callable[[str], str]
) -> tuple[TesseractEngine, str]:
    """A new TesseractEngine (not the cached one) whose `tesseract` is a shell script first on
    PATH: the lines ``before_exec(real)`` gives, then the real program; and the real one's path."""
    real = which("tesseract")
    assert real is not None
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "tesseract"
    wrapper.write_text(f'#!/bin/sh\n{before_exec(real)}exec {real} "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{pathsep}{environ['PATH']}")
    return TesseractEngine(settings.languages), real


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


# -- rapidocr


@pytest.fixture(scope="session")
def rapidocr_settings() -> Settings:
    return Settings(engine="rapidocr", languages=("en",))


@pytest.fixture(scope="session")
def rapidocr_engine(rapidocr_settings: Settings) -> OcrEngine:
    return get_engine(rapidocr_settings)


def test_rapidocr_is_its_own_engine(rapidocr_engine: OcrEngine) -> None:
    assert rapidocr_engine.name == "rapidocr"
    assert get_engine(Settings(engine="rapidocr", languages=("en",), dpi=300)) is rapidocr_engine
    with pytest.raises(ValueError, match="uint8"):
        rapidocr_engine.read(np.zeros((10, 10), dtype=bool))


def test_rapidocr_reads_a_blank_page(rapidocr_engine: OcrEngine) -> None:
    page = rapidocr_engine.read(np.full((300, 400), 255, dtype=np.uint8))
    assert page.lines == ()
    assert page.text == ""
    assert page.mean_confidence is None


def test_rapidocr_unknown_language() -> None:
    with pytest.raises(ConfigurationError, match="xx"):
        get_engine(Settings(engine="rapidocr", languages=("xx",)))


@pytest.mark.slow
def test_rapidocr_reads_phototest(
    rapidocr_engine: OcrEngine, rapidocr_settings: Settings, phototest: Image.Image, phototest_text: str
) -> None:
    read = pipeline.read_image(phototest, rapidocr_settings)
    assert read.prepared.rotation == 0
    assert read.prepared.skew == 0.0
    page = read.ocr
    _check_page(page, read.prepared.image)
    assert cer(page.text, phototest_text) == 0.0
    assert page.lines[0].text.startswith("This is a lot of 12 point text")
    assert set(page.timings) == {"detection", "recognition", "other"}
    assert page.timings["detection"] > 0
    assert page.timings["recognition"] > 0


@pytest.mark.slow
def test_rapidocr_reads_multilingual_page_at_least_as_well_as_tesseract(
    rapidocr_engine: OcrEngine, tesseract_engine: OcrEngine, multilingual_page: np.ndarray
) -> None:
    page = rapidocr_engine.read(multilingual_page)
    _check_page(page, multilingual_page)
    rapid = cer(page.text, MULTILINGUAL_TEXT)
    tess = cer(tesseract_engine.read(multilingual_page).text, MULTILINGUAL_TEXT)
    assert rapid <= tess, f"rapidocr CER {rapid:.3f}, tesseract {tess:.3f}"
    # The wheel's recognizer reads accents even with languages=en: nothing is lost.
    for word in ("über", "Grüße", "marrón", "cão", "città", "préfère"):
        assert word in page.text


@pytest.mark.slow
def test_rapidocr_reads_two_columns_in_order(
    rapidocr_engine: OcrEngine, rapidocr_settings: Settings, corpus: Path
) -> None:
    _check_two_columns(rapidocr_engine, rapidocr_settings, corpus)


@pytest.mark.slow
def test_rapidocr_corrects_upside_down_page(
    rapidocr_engine: OcrEngine, rapidocr_settings: Settings, phototest: Image.Image, phototest_text: str
) -> None:
    read = pipeline.read_image(phototest.rotate(180, expand=True), rapidocr_settings)
    assert read.prepared.rotation == 180
    assert cer(read.ocr.text, phototest_text) == 0.0


@pytest.mark.slow
def test_rapidocr_turns_a_page_of_close_lines(
    rapidocr_engine: OcrEngine, rapidocr_settings: Settings, corpus: Path
) -> None:
    """c02-22's lines sit too close for the ink to tell them apart: the orientation test reads
    the crop both ways instead of sampling lines, and still finds the page upside down."""
    from docproc import loader
    from docproc.detect import sniff_file

    path = corpus / "c02-22.pdf"
    [page] = [p for p in loader.iter_pages(path, sniff_file(path), rapidocr_settings) if p.image is not None][
        :1
    ]
    assert page.image is not None
    upright = pipeline.read_image(page.image, rapidocr_settings)
    turned = pipeline.read_image(page.image.rotate(180, expand=True), rapidocr_settings)
    assert (upright.prepared.rotation, turned.prepared.rotation) == (0, 180)
    assert "Chapter" in turned.ocr.text
    # The test itself, which the pipeline runs only on an unsure reading, still finds it turned.
    assert imaging.upright_turn(upright.prepared.image, rapidocr_engine) == 0
    assert imaging.upright_turn(imaging.rotate_quadrant(upright.prepared.image, 180), rapidocr_engine) == 180


# -- orientation: asked only of a reading the engine is unsure of


@pytest.mark.slow
@pytest.mark.parametrize("name", ["easyocr", "tesseract", "rapidocr"])
def test_engine_is_sure_of_upright_pages_only(
    name: str,
    request: pytest.FixtureRequest,
    phototest: Image.Image,
    corpus: Path,
    multilingual_page: np.ndarray,
) -> None:
    """Each engine's ``upright_confidence``: the corpus pages read as they are pass it, the
    same pages upside down do not (so the pipeline asks the orientation test for them)."""
    from docproc import loader
    from docproc.detect import sniff_file

    engine: OcrEngine = request.getfixturevalue(f"{name}_engine")
    settings: Settings = request.getfixturevalue(f"{name}_settings")
    path = corpus / "c02-22.pdf"
    [c02] = [p.image for p in loader.iter_pages(path, sniff_file(path), settings) if p.image is not None][:1]
    assert c02 is not None
    sources = {"phototest": phototest, "c02-22": c02, "multilingual": Image.fromarray(multilingual_page)}
    for page, image in sources.items():
        gray = imaging.prepare_page(image, settings).image
        upright, turned = engine.read(gray), engine.read(imaging.rotate_quadrant(gray, 180))
        assert engine.reads_upright(upright), f"{page}: upright read at {upright.mean_confidence}"
        assert not engine.reads_upright(turned), f"{page}: upside down read at {turned.mean_confidence}"


@pytest.mark.slow
def test_unsure_reading_of_an_upright_page_stays_upright(
    tesseract_engine: OcrEngine, tesseract_settings: Settings, corpus: Path
) -> None:
    """A blurred page reads below tesseract's upright confidence: the orientation test runs, and
    the page stays as it is (a turned reading is kept only when it reads better). (baiona.png, a
    map with place names, did this while its 0.1 degrees of skew were turned away; read as it
    is, it is read confidently.)"""
    timer = pipeline._Timer()
    with Image.open(corpus / "phototest.tif") as image:
        blurred = imaging.to_gray8(image).filter(ImageFilter.GaussianBlur(2.0))
    read = pipeline.read_image(blurred, tesseract_settings, timer)
    assert not tesseract_engine.reads_upright(read.ocr)
    assert "orientation" in timer.seconds
    assert read.prepared.rotation == 0


# -- the default engine (easyocr's weights on OpenVINO) against easyocr on torch


@pytest.fixture(scope="session")
def easyocr_torch_engine() -> OcrEngine:
    return get_engine(Settings(engine="easyocr-torch", languages=("en",)))


def test_default_engine_is_easyocr_on_openvino(easyocr_engine: OcrEngine) -> None:
    from docproc.ocr.easyocr_openvino import EasyOcrOpenVinoEngine, cache_key

    assert isinstance(easyocr_engine, EasyOcrOpenVinoEngine)
    assert Settings().engine == "easyocr"
    models = Settings().model_cache_dir / f"easyocr-openvino-{cache_key()}"
    manifest = json.loads((models / "manifest.json").read_text())
    assert manifest["golden_cer"] <= 0.02
    assert set(manifest["files"]) == {"craft-int8.xml", "craft-int8.bin", "recognizer.xml", "recognizer.bin"}


def test_converted_models_are_checked_by_hash(easyocr_engine: OcrEngine, tmp_path: Path) -> None:
    from docproc.ocr import easyocr_openvino

    key = easyocr_openvino.cache_key()
    source = Settings().model_cache_dir / f"easyocr-openvino-{key}"
    copy = tmp_path / f"easyocr-openvino-{key}"
    shutil.copytree(source, copy)
    assert easyocr_openvino.converted_models(tmp_path) == copy  # complete: used as it is
    weights = copy / "craft-int8.bin"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    assert not easyocr_openvino._complete(copy)  # a damaged file is never loaded


def test_cache_key_follows_the_weights() -> None:
    from docproc.ocr import easyocr_openvino

    key = easyocr_openvino.cache_key()
    assert re.fullmatch(r"[0-9a-f]{20}", key)
    assert easyocr_openvino.cache_key() == key


@pytest.mark.slow
def test_default_engine_reads_like_torch(
    easyocr_engine: OcrEngine,
    easyocr_torch_engine: OcrEngine,
    phototest: Image.Image,
    phototest_text: str,
    multilingual_page: np.ndarray,
) -> None:
    page = np.asarray(imaging.to_gray8(phototest))
    fast, reference = easyocr_engine.read(page), easyocr_torch_engine.read(page)
    _check_page(fast, page)
    assert cer(fast.text, phototest_text) <= 0.02
    assert set(fast.timings) == {"detection", "recognition", "other"}
    # English models lose the accents either way; the faster runtime must not lose more.
    fast_ml = cer(easyocr_engine.read(multilingual_page).text, MULTILINGUAL_TEXT)
    torch_ml = cer(easyocr_torch_engine.read(multilingual_page).text, MULTILINGUAL_TEXT)
    assert fast_ml <= torch_ml + 0.005, f"OpenVINO CER {fast_ml:.3f}, torch {torch_ml:.3f}"
    assert cer(reference.text, phototest_text) <= 0.02


def test_gpu_setting_falls_back_to_the_cpu(phototest: Image.Image, phototest_text: str) -> None:
    """No GPU here: torch reports none, so ``gpu`` must leave both easyocr engines on the CPU."""
    import torch

    assert not torch.cuda.is_available()  # this machine has no GPU; the test checks the fallback
    reference = get_engine(Settings(engine="easyocr-torch", languages=("en",), gpu=True))
    assert reference.device == "cpu"  # type: ignore[attr-defined]
    default = get_engine(Settings(engine="easyocr", languages=("en",), gpu=True))
    assert default.device == "cpu"  # type: ignore[attr-defined]
    assert default.name == "easyocr"  # without a device the default stays on OpenVINO
    page = np.asarray(imaging.to_gray8(phototest))
    assert cer(reference.read(page).text, phototest_text) <= 0.02


def test_engines_use_the_workers_share_of_the_cores(easyocr_engine: OcrEngine) -> None:
    """Two workers on two cores: each engine is built with the thread count its worker owns."""
    from docproc import runtime

    assert 1 <= runtime.available_cores() <= len(os.sched_getaffinity(0))
    assert runtime.compute_threads(Settings()) == runtime.available_cores()
    one = get_engine(Settings(engine="easyocr", languages=("en",), compute_threads=1))
    assert one is not easyocr_engine or runtime.available_cores() == 1
    assert one.threads == {1}  # type: ignore[attr-defined]
    runtime.configure_process(Settings(compute_threads=1))
    import cv2
    import torch

    assert torch.get_num_threads() == 1
    assert cv2.getNumThreads() == 1


def test_words_in_order_counts_order() -> None:
    from docproc.ocr.quality import words_in_order

    reference = "the left column then the right column"
    assert words_in_order(reference, reference) == 1.0
    # Columns interleaved: the words are all there, but not in reading order.
    assert words_in_order("the right column the left column then", reference) < 0.8
    assert words_in_order("", reference) == 0.0
    assert cer("The quack fox", "The quick fox") == pytest.approx(1 / 13)
