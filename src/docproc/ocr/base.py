"""What every OCR engine returns, and the interface it implements.

Engines only see 8-bit grayscale pages that ``docproc.imaging.prepare_page`` produced; they
know nothing about documents, storage or orchestration (like OCRmyPDF's ``OcrEngine``).
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

# A few characters read confidently prove nothing ("NOON" reads the same either way up).
UPRIGHT_MIN_CHARS = 20


@dataclass(frozen=True)
class OcrLine:
    """One line of text; ``bbox`` is x0, y0, x1, y1 in the prepared page's pixels."""

    text: str
    bbox: tuple[int, int, int, int]
    confidence: float


@dataclass(frozen=True)
class OcrPage:
    """A page's lines and text, both in reading order.

    ``timings`` are the wall seconds the engine spent on ``detection``, ``recognition`` and
    ``other`` work (pre- and post-processing, reading order) for this page, where it can tell.
    """

    lines: tuple[OcrLine, ...]
    text: str
    mean_confidence: float | None
    timings: Mapping[str, float] = field(default_factory=dict, compare=False)

    @classmethod
    def from_lines(cls, lines: tuple[OcrLine, ...], timings: Mapping[str, float] | None = None) -> OcrPage:
        """Join ordered lines into a page; the mean confidence is weighted by characters."""
        chars = sum(len(line.text) for line in lines)
        mean = sum(line.confidence * len(line.text) for line in lines) / chars if chars else None
        return cls(
            lines=lines,
            text="\n".join(line.text for line in lines),
            mean_confidence=mean,
            timings=dict(timings or {}),
        )


@dataclass(frozen=True)
class Segment:
    """A piece of recognized text as an engine found it, before lines and reading order exist."""

    text: str
    bbox: tuple[int, int, int, int]
    confidence: float


class OcrEngine(abc.ABC):
    """An OCR engine. Instances are expensive (models, processes): get them from ``get_engine``."""

    name: str
    # True when the engine reads every language it accepts with the same model (rapidocr's
    # one Latin dictionary): a page found to be in another language needs no second reading.
    one_model_for_languages: bool = False
    # A reading at least this confident (mean, by characters) is of an upright page: the
    # orientation test is skipped. Measured per engine on the corpus, turned both ways (an
    # upside-down page reads far less confidently). None: always ask the orientation test.
    upright_confidence: float | None = None
    # Degrees of skew the engine reads through as well as a deskewed page: a page leaning less
    # is handed to it as it is (``imaging.straighten``), since turning it costs the engine CPU.
    reads_leaning_below: float = 0.0

    @abc.abstractmethod
    def read(self, image: np.ndarray) -> OcrPage:
        """Read an upright, deskewed uint8 HxW page; lines and text in reading order."""

    def flip_confidences(self, crop: np.ndarray) -> tuple[float, float] | None:
        """Mean confidence reading ``crop`` (a part of a page) as is and turned by 180 degrees.

        ``imaging.upright_turn`` compares the two to tell upright from upside-down text. None when
        the crop holds nothing readable. Engines override this with something cheaper than
        reading the crop twice when they can.
        """
        upright = self.read(crop).mean_confidence
        turned = self.read(np.ascontiguousarray(crop[::-1, ::-1])).mean_confidence
        if upright is None and turned is None:
            return None
        return (upright or 0.0, turned or 0.0)

    def reads_upright(self, page: OcrPage) -> bool:
        """Whether a page read as it is was surely upright: enough text, read confidently."""
        chars = sum(len(line.text) for line in page.lines)
        return (
            self.upright_confidence is not None
            and chars >= UPRIGHT_MIN_CHARS
            and page.mean_confidence is not None
            and page.mean_confidence >= self.upright_confidence
        )

    def detect_rotation(self, image: np.ndarray) -> int | None:
        """Clockwise degrees (0, 90, 180, 270) that make the page upright, from the engine's own
        orientation detector; None to let ``imaging.upright_turn`` use its generic test."""
        return None


def check_gray8(image: np.ndarray) -> None:
    """Engines get 8-bit single-channel pages only (easyocr's loader rejects 1-bit ones)."""
    if image.dtype != np.uint8 or image.ndim != 2 or image.size == 0:
        raise ValueError(
            f"OCR engines read non-empty uint8 HxW pages, got {image.dtype} with shape {image.shape}; "
            "use docproc.imaging.prepare_page"
        )
