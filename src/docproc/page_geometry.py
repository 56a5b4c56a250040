"""Where a box on a page as read lies on the page as it came in.

``imaging.prepare_page`` scales a page, turns it by a quarter turn or more and straightens
it before the engine reads it; the result's boxes are in that prepared page's pixels. Outputs
that draw on the original page (the searchable PDF) need the inverse. The steps are
deterministic given the source size, the settings, and the rotation, skew and prepared size
the result records, so the inverse is rebuilt here rather than stored with every page.

Coordinates are continuous with the origin at the top-left corner, y pointing down. A
180-degree turn and the deskew rotation (both about the page's centre) commute, so the order
in which ``prepare_page`` applied them does not matter.
"""

from __future__ import annotations

import math

import numpy as np

from docproc.imaging import scale_factor
from docproc.models import PageResult
from docproc.settings import Settings

Affine = np.ndarray  # 3x3, acting on column vectors (x, y, 1)


def prepared_to_source(page: PageResult, source_size: tuple[int, int], settings: Settings) -> Affine:
    """Matrix taking a point of the prepared page (the result's boxes) to the source image's pixels.

    ``source_size`` is the width and height of the image the loader gave the engine (the
    rendered PDF page, or the image upright per its EXIF orientation).
    """
    width0, height0 = source_size
    factor = scale_factor(width0, height0, settings.ocr_min_side, settings.ocr_max_side)
    width1 = max(1, round(width0 * factor)) if factor != 1.0 else width0
    height1 = max(1, round(height0 * factor)) if factor != 1.0 else height0
    forward = np.diag([width1 / width0, height1 / height0, 1.0])

    turns = (page.rotation // 90) % 4
    quadrant = {
        0: np.eye(3),
        1: np.array([[0.0, -1.0, height1], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]),
        2: np.array([[-1.0, 0.0, width1], [0.0, -1.0, height1], [0.0, 0.0, 1.0]]),
        3: np.array([[0.0, 1.0, 0.0], [-1.0, 0.0, width1], [0.0, 0.0, 1.0]]),
    }[turns]
    forward = quadrant @ forward
    width2, height2 = (height1, width1) if turns % 2 else (width1, height1)

    if page.skew:
        # The same matrix imaging.rotate_small gives cv2.warpAffine.
        angle = math.radians(-page.skew)
        cos, sin = math.cos(angle), math.sin(angle)
        centre_x, centre_y = width2 / 2, height2 / 2
        # The canvas the page was turned on: the prepared page's size (rotate_small grows it
        # only as far as the page's ink needs).
        new_w, new_h = page.width, page.height
        rotate = np.array(
            [
                [cos, sin, (1 - cos) * centre_x - sin * centre_y + new_w / 2 - centre_x],
                [-sin, cos, sin * centre_x + (1 - cos) * centre_y + new_h / 2 - centre_y],
                [0.0, 0.0, 1.0],
            ]
        )
        forward = rotate @ forward
    return np.linalg.inv(forward)


def apply(matrix: Affine, x: float, y: float) -> tuple[float, float]:
    out = matrix @ np.array([x, y, 1.0])
    return float(out[0]), float(out[1])


def box_corners(matrix: Affine, bbox: tuple[int, int, int, int]) -> list[tuple[float, float]]:
    """The four corners of ``bbox`` (x0, y0, x1, y1) through ``matrix``."""
    x0, y0, x1, y1 = bbox
    return [apply(matrix, x, y) for x, y in ((x0, y0), (x1, y0), (x1, y1), (x0, y1))]
