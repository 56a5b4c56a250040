"""Image preprocessing without any OCR model: conversions, scaling, orientation and skew geometry,
and the reading-order layout on hand-made boxes."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from docproc import imaging
from docproc.ocr.base import Segment
from docproc.ocr.layout import reading_order
from docproc.settings import Settings


@pytest.fixture(scope="module")
def linn(corpus: Path) -> Image.Image:
    with Image.open(corpus / "linn.png") as image:
        image.load()
        return image


# -- to_gray8


def test_to_gray8_one_bit_page(phototest: Image.Image) -> None:
    assert phototest.mode == "1"
    gray = imaging.to_gray8(phototest)
    values = np.asarray(gray)
    assert gray.mode == "L"
    assert gray.size == phototest.size
    assert set(np.unique(values).tolist()) == {0, 255}
    # Mostly paper, some ink: black stayed black rather than being inverted.
    assert 0.8 < (values == 255).mean() < 0.99


@pytest.mark.parametrize("mode", ["I;16", "I;16B", "I"])
def test_to_gray8_scales_16_bit_samples(mode: str) -> None:
    ramp = np.array([[0, 257, 32896, 65535]], dtype=np.uint16)
    if mode == "I;16B":
        image = Image.frombytes("I;16B", (4, 1), ramp.astype(">u2").tobytes())
    elif mode == "I":
        image = Image.fromarray(ramp.astype(np.int32))
    else:
        image = Image.fromarray(ramp)
    assert image.mode == mode
    gray = imaging.to_gray8(image)
    assert gray.mode == "L"
    assert np.asarray(gray).tolist() == [[0, 1, 128, 255]]


def test_to_gray8_float_samples() -> None:
    image = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32))
    assert np.asarray(imaging.to_gray8(image)).tolist() == [[0, 128, 255]]


def test_to_gray8_palette_with_transparency_is_white() -> None:
    image = Image.new("P", (3, 1))
    image.putpalette([0, 0, 0, 255, 0, 0, 10, 10, 10] + [0] * (256 * 3 - 9))
    image.putdata([0, 1, 2])
    image.info["transparency"] = 2
    gray = np.asarray(imaging.to_gray8(image))
    assert gray[0, 0] == 0
    assert gray[0, 1] == 76  # pure red's luma (ITU-R 601-2)
    assert gray[0, 2] == 255  # the transparent index is paper, not its dark palette colour


def test_to_gray8_cmyk() -> None:
    image = Image.new("CMYK", (2, 1))
    image.putpixel((0, 0), (0, 0, 0, 255))
    image.putpixel((1, 0), (0, 0, 0, 0))
    assert np.asarray(imaging.to_gray8(image)).tolist() == [[0, 255]]


@pytest.mark.parametrize("mode", ["RGBA", "LA", "PA"])
def test_to_gray8_composites_alpha_over_white(mode: str) -> None:
    rgba = Image.new("RGBA", (3, 1))
    rgba.putdata([(0, 0, 0, 255), (0, 0, 0, 0), (0, 0, 0, 128)])
    image = rgba if mode == "RGBA" else rgba.convert(mode)
    assert image.mode == mode
    gray = np.asarray(imaging.to_gray8(image)).tolist()[0]
    assert gray[0] == 0
    assert gray[1] == 255  # transparent black on white paper: white, not black
    assert 120 <= gray[2] <= 135


def test_to_gray8_applies_exif_orientation() -> None:
    # A 40x20 picture, dark on its left half, stored with EXIF orientation 6: viewers turn it
    # 90 degrees clockwise, so upright it is 20x40 with the dark half on top.
    stored = Image.new("RGB", (40, 20), (255, 255, 255))
    stored.paste((0, 0, 0), (0, 0, 20, 20))
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    stored.save(buffer, format="JPEG", exif=exif.tobytes(), quality=95)
    with Image.open(io.BytesIO(buffer.getvalue())) as jpeg:
        gray = imaging.to_gray8(jpeg)
    values = np.asarray(gray)
    assert gray.size == (20, 40)
    assert values[:18].mean() < 30
    assert values[22:].mean() > 225


# -- scaling


@pytest.mark.parametrize(
    ("size", "expected_longer", "expected_scale"),
    [((640, 480), 1000, 1000 / 640), ((2550, 3300), 2600, 2600 / 3300), ((1200, 1500), 1500, 1.0)],
)
def test_prepare_page_scales_longer_side_into_range(
    size: tuple[int, int], expected_longer: int, expected_scale: float
) -> None:
    settings = Settings(ocr_min_side=1000, ocr_max_side=2600, detect_orientation=False, deskew=False)
    prepared = imaging.prepare_page(Image.new("1", size, 1), settings)
    assert prepared.image.dtype == np.uint8
    assert prepared.image.ndim == 2
    assert max(prepared.image.shape) == expected_longer
    assert prepared.scale == pytest.approx(expected_scale)
    assert (prepared.rotation, prepared.skew) == (0, 0.0)


# -- orientation and skew geometry


def test_rotate_quadrant_turns_clockwise() -> None:
    image = np.zeros((2, 3), dtype=np.uint8)
    image[0, 0] = 255  # top-left
    turned = imaging.rotate_quadrant(image, 90)
    assert turned.shape == (3, 2)
    assert turned[0, 1] == 255  # clockwise: the top-left corner goes to the top-right
    assert imaging.rotate_quadrant(image, 180)[1, 2] == 255
    assert imaging.rotate_quadrant(image, 270)[2, 0] == 255


@pytest.mark.parametrize("page", ["phototest", "linn"])
@pytest.mark.parametrize("turn", [0, 90, 180, 270])
def test_lines_run_vertically(page: str, turn: int, request: pytest.FixtureRequest) -> None:
    image: Image.Image = request.getfixturevalue(page)
    gray = np.asarray(imaging.to_gray8(image).rotate(turn, expand=True))
    assert imaging.lines_run_vertically(gray) == (turn in (90, 270))


@pytest.mark.parametrize("page", ["phototest", "linn"])
@pytest.mark.parametrize("lean", [0.0, 4.0, -2.5, 7.0])
def test_detect_skew(page: str, lean: float, request: pytest.FixtureRequest) -> None:
    image: Image.Image = request.getfixturevalue(page)
    gray = imaging.to_gray8(image)
    if lean:
        gray = gray.rotate(lean, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=255)
    assert imaging.detect_skew(np.asarray(gray)) == pytest.approx(lean, abs=0.15)


def test_rotate_small_undoes_lean(phototest: Image.Image) -> None:
    gray = imaging.to_gray8(phototest).rotate(
        4.0, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=255
    )
    straight = imaging.rotate_small(np.asarray(gray), 4.0)
    assert abs(imaging.detect_skew(straight)) <= 0.1
    # The canvas grew instead of cutting corners off, and the new corners are paper.
    assert straight.shape[0] >= gray.size[1]
    assert straight.shape[1] >= gray.size[0]
    assert straight[0, 0] == 255


def _ink_mass(gray: np.ndarray) -> int:
    return int((255 - gray.astype(np.int64)).sum())


def test_deskewed_page_keeps_its_size_when_its_margins_hold_the_turn(linn: Image.Image) -> None:
    # linn leaned by 3 degrees inside its own frame: the corners Pillow fills are paper, and so
    # are the corners a turn back cuts, so the straightened page needs no bigger canvas.
    gray = imaging.to_gray8(linn).rotate(3.0, resample=Image.Resampling.BICUBIC, fillcolor=255)
    leaned = np.asarray(gray)
    prepared = imaging.straighten(leaned, 1.0, Settings(detect_orientation=False))
    assert prepared.skew == pytest.approx(3.0, abs=0.15)
    grown = imaging.rotate_small(leaned, prepared.skew)
    assert prepared.image.shape == leaned.shape
    assert grown.shape[0] > leaned.shape[0]
    assert grown.shape[1] > leaned.shape[1]
    # Nothing but paper was cut: the ink is all there.
    assert _ink_mass(prepared.image) == pytest.approx(_ink_mass(grown), rel=0.002)


def test_page_leaning_less_than_the_engine_reads_through_is_left_as_it_is(linn: Image.Image) -> None:
    gray = imaging.to_gray8(linn)
    settings = Settings(detect_orientation=False)
    for lean, turned in ((0.7, False), (1.6, True)):
        leaned = np.asarray(gray.rotate(lean, resample=Image.Resampling.BICUBIC, fillcolor=255))
        assert imaging.straighten(leaned, 1.0, settings).skew == pytest.approx(lean, abs=0.15)
        prepared = imaging.straighten(leaned, 1.0, settings, leaning_read=1.0)
        if turned:
            assert prepared.skew == pytest.approx(lean, abs=0.15)
            assert not np.array_equal(prepared.image, leaned)
        else:
            assert prepared.skew == 0.0
            assert np.array_equal(prepared.image, leaned)


def test_deskewed_page_grows_as_far_as_its_ink_needs(phototest: Image.Image) -> None:
    # The leaned text cut out tight: its corners touch the frame, so turning it back needs
    # more room than the page has, and the canvas grows to keep every corner.
    gray = imaging.to_gray8(phototest).rotate(
        4.0, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=255
    )
    ys, xs = np.nonzero(np.asarray(gray) < 128)
    tight = np.ascontiguousarray(np.asarray(gray)[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1])
    prepared = imaging.straighten(tight, 1.0, Settings(detect_orientation=False))
    assert prepared.skew == pytest.approx(4.0, abs=0.15)
    grown = imaging.rotate_small(tight, prepared.skew)
    height, width = prepared.image.shape
    assert tight.shape[0] < height <= grown.shape[0]
    assert tight.shape[1] < width <= grown.shape[1]
    assert _ink_mass(prepared.image) == pytest.approx(_ink_mass(grown), rel=0.002)


def test_blank_page_has_no_skew_or_orientation() -> None:
    blank = np.full((800, 600), 255, dtype=np.uint8)
    assert imaging.detect_skew(blank) == 0.0
    assert not imaging.lines_run_vertically(blank)


# -- reading order


def _seg(text: str, x0: int, y0: int, x1: int, y1: int) -> Segment:
    return Segment(text=text, bbox=(x0, y0, x1, y1), confidence=0.9)


def _two_column_page() -> list[Segment]:
    segments = [_seg("Title", 100, 20, 900, 60), _seg("intro spans the page", 50, 80, 950, 100)]
    for row in range(6):
        y = 130 + 30 * row
        segments.append(_seg(f"left{row}", 50, y, 460 - 20 * (row % 2), y + 20))
        segments.append(_seg(f"right{row}", 520, y, 950, y + 20))
    # A heading under the left column, set apart by a wide gap: it starts the next section.
    segments.append(_seg("Heading", 50, 340, 200, 360))
    segments.append(_seg("footer spans the page", 50, 380, 950, 400))
    return segments


def test_reading_order_two_columns() -> None:
    segments = _two_column_page()
    # The engine's order must not matter.
    rng = np.random.default_rng(7)
    shuffled = [segments[i] for i in rng.permutation(len(segments))]
    texts = [line.text for line in reading_order(shuffled)]
    assert texts == [
        "Title",
        "intro spans the page",
        *(f"left{i}" for i in range(6)),
        *(f"right{i}" for i in range(6)),
        "Heading",
        "footer spans the page",
    ]


def test_reading_order_joins_segments_of_a_row() -> None:
    lines = reading_order(
        [
            _seg("world", 300, 12, 400, 40),
            _seg("Hello", 100, 10, 200, 38),
            _seg("second", 100, 60, 250, 88),
        ]
    )
    assert [line.text for line in lines] == ["Hello world", "second"]
    assert lines[0].bbox == (100, 10, 400, 40)


def test_reading_order_keeps_a_column_tail_with_its_column() -> None:
    segments = []
    for row in range(5):
        y = 100 + 30 * row
        segments.append(_seg(f"left{row}", 50, y, 460, y + 20))
        segments.append(_seg(f"right{row}", 520, y, 950, y + 20))
    # The left column runs two lines longer, at the column's own line spacing.
    segments += [_seg("left5", 50, 250, 460, 270), _seg("left6", 50, 280, 300, 300)]
    texts = [line.text for line in reading_order(segments)]
    assert texts == [*(f"left{i}" for i in range(7)), *(f"right{i}" for i in range(5))]


def test_reading_order_heading_under_column_with_overlapping_boxes() -> None:
    # easyocr's boxes carry margins, so successive lines of a column overlap (pitch 30, height
    # 40); a heading 15 px below the last line is still set apart from the column.
    segments = [_seg("Title", 50, 0, 950, 40)]
    for row in range(5):
        y = 60 + 30 * row
        segments.append(_seg(f"left{row}", 50, y, 460, y + 40))
        segments.append(_seg(f"right{row}", 520, y, 950, y + 40))
    segments.append(_seg("Heading", 50, 235, 200, 275))
    texts = [line.text for line in reading_order(segments)]
    assert texts == ["Title", *(f"left{i}" for i in range(5)), *(f"right{i}" for i in range(5)), "Heading"]
