"""Debian's tesseract, called as a program (TSV output), so it needs no Python binding.

Installed by ``scripts/tools/tesseract.sh`` (``make tools``). Pages go to tesseract as PGM on
stdin and words come back as TSV on stdout: no temporary files. PGM, not PNG: the same words
(checked on linn), without compressing a page here and inflating it there (30 ms of PNG
encoding per page against 6 ms).
"""

from __future__ import annotations

import csv
import io
import logging
import os
import re
import shutil
import subprocess
from collections.abc import Sequence

import cv2
import numpy as np

from docproc.errors import ConfigurationError, OcrEngineError
from docproc.ocr.base import OcrEngine, OcrPage, Segment, check_gray8
from docproc.ocr.layout import reading_order

log = logging.getLogger(__name__)

# settings.languages holds easyocr's codes; tesseract names its traineddata differently.
_LANGUAGES = {
    "en": "eng",
    "de": "deu",
    "fr": "fra",
    "es": "spa",
    "it": "ita",
    "pt": "por",
    "nl": "nld",
    "da": "dan",
    "sv": "swe",
    "no": "nor",
    "fi": "fin",
    "pl": "pol",
    "cs": "ces",
    "ru": "rus",
    "tr": "tur",
}
# Prepared pages carry no resolution; without one tesseract guesses 70 dpi and warns. Pages
# are scaled to a few thousand pixels per side, which is about what 300 dpi gives.
_NOMINAL_DPI = "300"
_TIMEOUT_SECONDS = 300.0
# OSD below this confidence is a guess (OCRmyPDF's default threshold for rotating pages is 14;
# tesseract's own scale, not a probability). Lower than that keeps small pages correctable.
_OSD_MIN_CONFIDENCE = 2.0
# Set by Dask's nanny for the worker process (distributed.nanny.pre-spawn-environ), not meant
# for the programs it starts.
_WORKER_ONLY_ENV = frozenset({"MALLOC_TRIM_THRESHOLD_"})
_ROTATE = re.compile(r"^Rotate:\s*(\d+)", re.MULTILINE)
_CONFIDENCE = re.compile(r"^Orientation confidence:\s*([0-9.]+)", re.MULTILINE)


class TesseractEngine(OcrEngine):
    name = "tesseract"
    # Mean confidence on the corpus pages (tests/test_ocr.py): upright 0.70-0.96 (baiona.png, a
    # map, 0.77; 0.56 when its 0.1 degrees of skew were turned away), upside down 0.10-0.37.
    upright_confidence = 0.6
    # Tesseract finds leaning text lines itself. linn.png (two columns) leaned by 0.3-1.0
    # degrees read as is keeps 99.2% of its words in order, as deskewed; at 1.3 degrees 98.3%,
    # at 2.0 95.5% (skew.pdf at 1.85 runs its columns together). A turned page costs tesseract
    # 2-4% more CPU on linn and 6% on c02-22 (0.7 degrees), for the same text.
    reads_leaning_below = 1.0

    def __init__(self, languages: Sequence[str]) -> None:
        executable = shutil.which("tesseract")
        if executable is None:
            raise ConfigurationError(
                "the tesseract engine needs the `tesseract` program: run `make tools` "
                "(scripts/tools/tesseract.sh installs Debian's tesseract-ocr)"
            )
        self._executable = executable
        # Tesseract's OpenMP threads fight the other workers for the same cores; one page per
        # process on one thread is faster overall (OCRmyPDF sets the same limit). The child
        # inherits the rest of the environment (TESSDATA_PREFIX, locale) except the malloc
        # setting Dask's nanny gives its workers (docproc.runtime tunes the worker's own
        # malloc instead): inherited, it cost tesseract up to 3% more CPU a page and 18-72% more
        # page faults on the bench pages.
        self._env = {key: value for key, value in os.environ.items() if key not in _WORKER_ONLY_ENV}
        self._env["OMP_THREAD_LIMIT"] = "1"
        unknown = [code for code in languages if code not in _LANGUAGES]
        if unknown:
            raise ConfigurationError(f"no tesseract language known for {unknown}")
        wanted = [_LANGUAGES[code] for code in languages]
        installed = self._installed_languages()
        missing = [lang for lang in wanted if lang not in installed]
        if missing:
            raise ConfigurationError(
                f"tesseract language data missing: {missing} (apt-get install "
                + " ".join(f"tesseract-ocr-{m}" for m in missing)
                + ")"
            )
        self._languages = "+".join(wanted)
        self._has_osd = "osd" in installed

    def _installed_languages(self) -> set[str]:
        output = self._run(["--list-langs"], None).decode(errors="replace")
        return {line.strip() for line in output.splitlines()[1:] if line.strip()}

    def _run(self, args: list[str], image: np.ndarray | None) -> bytes:
        stdin = None
        if image is not None:
            ok, pgm = cv2.imencode(".pgm", image)
            if not ok:
                raise OcrEngineError(f"cannot encode a {image.shape} page as PGM for tesseract")
            stdin = pgm.tobytes()
        command = [self._executable, *args]
        try:
            done = subprocess.run(
                command,
                input=stdin,
                capture_output=True,
                timeout=_TIMEOUT_SECONDS,
                check=True,
                env=self._env,
            )
        except FileNotFoundError as exc:
            raise ConfigurationError(f"tesseract disappeared: {exc}") from exc
        except subprocess.TimeoutExpired as exc:
            raise OcrEngineError(f"tesseract took longer than {_TIMEOUT_SECONDS:.0f} s") from exc
        except subprocess.CalledProcessError as exc:
            if exc.returncode < 0:
                raise OcrEngineError(f"tesseract was killed by signal {-exc.returncode}") from exc
            message = exc.stderr.decode(errors="replace").strip()[-500:]
            raise OcrEngineError(f"tesseract exited with status {exc.returncode}: {message}") from exc
        return done.stdout

    def read(self, image: np.ndarray) -> OcrPage:
        check_gray8(image)
        tsv = self._run(
            ["stdin", "stdout", "-l", self._languages, "--dpi", _NOMINAL_DPI, "--psm", "3", "tsv"], image
        )
        return OcrPage.from_lines(reading_order(parse_tsv(tsv.decode("utf-8", errors="replace"))))

    def detect_rotation(self, image: np.ndarray) -> int | None:
        if not self._has_osd:
            return None
        check_gray8(image)
        try:
            osd = self._run(["stdin", "stdout", "--dpi", _NOMINAL_DPI, "--psm", "0"], image)
        except OcrEngineError as exc:
            # "Too few characters" and similar: no opinion, the generic detector decides.
            log.debug("tesseract OSD gave no answer: %s", exc)
            return None
        text = osd.decode(errors="replace")
        rotate, confidence = _ROTATE.search(text), _CONFIDENCE.search(text)
        if rotate is None or confidence is None:
            return None
        if float(confidence.group(1)) < _OSD_MIN_CONFIDENCE:
            log.debug("tesseract OSD unsure (%s): ignored", confidence.group(1))
            return None
        return int(rotate.group(1)) % 360


def parse_tsv(tsv: str) -> list[Segment]:
    """Tesseract's word rows (level 5) grouped into its lines (block, paragraph, line)."""
    lines: dict[tuple[str, str, str, str], list[tuple[str, tuple[int, int, int, int], float]]] = {}
    for row in csv.DictReader(io.StringIO(tsv), delimiter="\t", quoting=csv.QUOTE_NONE):
        text = (row.get("text") or "").strip()
        if row.get("level") != "5" or not text:
            continue
        left, top = int(row["left"]), int(row["top"])
        box = (left, top, left + int(row["width"]), top + int(row["height"]))
        confidence = max(0.0, min(100.0, float(row["conf"]))) / 100.0
        key = (row["page_num"], row["block_num"], row["par_num"], row["line_num"])
        lines.setdefault(key, []).append((text, box, confidence))
    segments = []
    for words in lines.values():
        chars = sum(len(w[0]) for w in words)
        segments.append(
            Segment(
                text=" ".join(w[0] for w in words),
                bbox=(
                    min(w[1][0] for w in words),
                    min(w[1][1] for w in words),
                    max(w[1][2] for w in words),
                    max(w[1][3] for w in words),
                ),
                confidence=sum(w[2] * len(w[0]) for w in words) / chars,
            )
        )
    return segments
