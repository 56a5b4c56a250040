"""The processing core: pages of a local file read (``read_pages``), then joined, analysed and
validated into a ``DocumentResult`` (``finish``); a long document is read in several parts."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from PIL import Image

from docproc import __version__, imaging, loader, logcontext, nlp, ocr_languages, validate
from docproc.models import DocumentResult, Line, PageResult, PlannedDocument
from docproc.ocr import OcrEngine, OcrPage, get_engine
from docproc.settings import Settings

log = logging.getLogger(__name__)

MIN_TEXT_PIXELS = 8


class _Timer:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start


@dataclass(frozen=True)
class PagesRead:
    """Pages of one document read (OCR or text layer), with the seconds each stage took."""

    pages: list[PageResult]
    timings: dict[str, float]


def read_pages(
    path: Path, doc: PlannedDocument, settings: Settings, first: int = 1, last: int | None = None
) -> PagesRead:
    """Read pages ``first``..``last`` (1-based, inclusive) of a document. Raises PermanentDocumentError."""
    timer = _Timer()
    pages: list[PageResult] = []
    pending = loader.iter_pages(path, doc.media_type, settings, first=first, last=last)
    with logcontext.document(doc.id):
        while True:
            with timer.stage("load"):
                source_page = next(pending, None)
            if source_page is None:
                break
            with logcontext.page(source_page.number):
                pages.append(_read_page(source_page, settings, timer))
                log.debug("read page %d of %s", source_page.number, doc.source)
    return PagesRead(pages=pages, timings=timer.seconds)


def finish(doc: PlannedDocument, parts: list[PagesRead], settings: Settings) -> DocumentResult:
    """Join read pages into a document, find its language, entities and type, and validate it."""
    timer = _Timer()
    for part in parts:
        for stage, seconds in part.timings.items():
            timer.seconds[stage] = timer.seconds.get(stage, 0.0) + seconds
    pages = sorted((page for part in parts for page in part.pages), key=lambda p: p.number)
    text, page_starts = _join_pages(pages)
    with timer.stage("nlp"):
        analysis = nlp.analyze(text, page_starts, settings.nlp_max_chars)
    with timer.stage("validate"):
        quality = validate.assess_quality(
            pages,
            analysis.entities,
            analysis.document_type,
            settings.min_confidence,
            nlp_truncated=analysis.truncated,
        )
    timer.seconds["total"] = sum(timer.seconds.values())
    return DocumentResult(
        id=doc.id,
        source=doc.source,
        media_type=doc.media_type,
        size_bytes=doc.size_bytes,
        pages=pages,
        text=text,
        language=analysis.language,
        entities=analysis.entities,
        document_type=analysis.document_type,
        quality=quality,
        timings={k: round(v, 4) for k, v in timer.seconds.items()},
        pipeline_version=__version__,
        settings_fingerprint=settings.fingerprint(),
        processed_at=datetime.now(UTC),
    )


def _read_page(page: loader.SourcePage, settings: Settings, timer: _Timer) -> PageResult:
    if page.image is None:
        return PageResult(
            number=page.number,
            width=page.width,
            height=page.height,
            rotation=0,
            skew=0.0,
            text_source="text_layer",
            engine=None,
            mean_confidence=None,
            text=page.text or "",
            lines=[Line(text=line.text, bbox=line.bbox, confidence=1.0) for line in page.lines],
        )
    read = read_image(page.image, settings, timer)
    prepared, ocr = read.prepared, read.ocr
    height, width = prepared.image.shape[:2]
    return PageResult(
        number=page.number,
        width=int(width),
        height=int(height),
        rotation=prepared.rotation,
        skew=round(prepared.skew, 3),
        text_source="ocr",
        engine=read.engine,
        languages=list(read.languages),
        mean_confidence=None if ocr.mean_confidence is None else round(ocr.mean_confidence, 4),
        text=ocr.text,
        lines=[
            Line(text=line.text, bbox=line.bbox, confidence=round(line.confidence, 4)) for line in ocr.lines
        ],
    )


@dataclass(frozen=True)
class ImageRead:
    """A page image as the engine read it, and how it was prepared for it."""

    prepared: imaging.PreparedPage
    ocr: OcrPage
    languages: tuple[str, ...]
    engine: str


def read_image(image: Image.Image, settings: Settings, timer: _Timer | None = None) -> ImageRead:
    """Read one page image with the engine ``settings`` name.

    The page is scaled, given a quarter turn if its lines run down the page, deskewed and
    read. Only a reading the engine is not sure of (an upside-down page reads with far less
    confidence, ``OcrEngine.reads_upright``) costs an orientation test; when that finds the
    page turned, it is read again turned and the more confident reading is kept. Upright
    pages, nearly all of them, are read once with no test (the test was up to two fifths of
    a page's time, issue 11).
    """
    timer = timer or _Timer()
    engine = get_engine(ocr_languages.engine_settings(settings))
    with timer.stage("preprocess"):
        gray, scale = imaging.scaled_gray(image, settings)
        prepared = imaging.straighten(gray, scale, settings, leaning_read=engine.reads_leaning_below)
    with timer.stage("ocr"):
        ocr, languages = _ocr(prepared.image, engine, settings)
    if not settings.detect_orientation or engine.reads_upright(ocr):
        return ImageRead(prepared, ocr, languages, engine.name)
    with timer.stage("orientation"):
        turn = imaging.upright_turn(prepared.image, engine)
    log.debug("reading unsure (%s): orientation test turns %d", ocr.mean_confidence, turn)
    if not turn:
        return ImageRead(prepared, ocr, languages, engine.name)
    with timer.stage("preprocess"):
        turned = imaging.straighten(
            gray, scale, settings, prepared.rotation + turn, leaning_read=engine.reads_leaning_below
        )
    with timer.stage("ocr"):
        again, again_languages = _ocr(turned.image, engine, settings)
    if (again.mean_confidence or 0.0) <= (ocr.mean_confidence or 0.0):
        return ImageRead(prepared, ocr, languages, engine.name)
    return ImageRead(turned, again, again_languages, engine.name)


def _ocr(image: np.ndarray, engine: OcrEngine, settings: Settings) -> tuple[OcrPage, tuple[str, ...]]:
    # A sliver of a page holds no readable text, and the engines' own resizing fails on it.
    if min(image.shape[:2]) < MIN_TEXT_PIXELS:
        return OcrPage.from_lines(()), ()
    return ocr_languages.read(image, engine, settings)


def _join_pages(pages: list[PageResult]) -> tuple[str, list[int]]:
    """Full text with pages separated by form feeds, and where each page starts in it."""
    starts: list[int] = []
    parts: list[str] = []
    offset = 0
    for page in pages:
        starts.append(offset)
        parts.append(page.text)
        offset += len(page.text) + 1
    return "\f".join(parts), starts
