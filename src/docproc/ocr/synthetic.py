"""Pages of known text drawn with Pillow's bundled font: calibration and validation material
for model conversion, shipped with docproc (no corpus needed) and never used for evaluation.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

# Written for docproc. The calibration pages and the validation page use different text, and
# neither shares text with the evaluation pages in tests/ and benchmarks/.
CALIBRATION_TEXT = (
    "Quarterly report of the northern warehouse, prepared for the board of directors.",
    "Shipments rose by 14 percent while returns fell to 2.3 percent of all orders placed.",
    "Invoice 2024-0917 was paid on 3 March; the balance of $1,250.00 is carried forward.",
    "Please sign both copies and return one of them before the end of the month.",
    "Section 4.2: the tenant keeps the premises clean and reports any damage at once.",
    "Temperature readings between 18 and 24 degrees were recorded at every station.",
    "Contact: Maria Jensen, 42 Harbour Road, Springfield, phone +1 555 0143 201.",
    "The meeting adjourned at 5:45 pm; minutes will be circulated by Friday.",
    "ITEM  QTY  UNIT PRICE  TOTAL   Bolts M8  400  0.12  48.00   Nuts M8  400  0.05  20.00",
    "Chapter Seven. The road wound up through the pines until the valley lay below them.",
)
VALIDATION_TEXT = (
    # No full stops: the bundled font draws them small enough to pass for colons.
    "Golden page for docproc model conversion",
    "Every converted model must read these lines",
    "Order 7351 ships on 12 June to Oslo and Lyon",
    "Weights, thresholds and boxes stay the same",
)


def text_page(
    lines: tuple[str, ...], *, size: int, width: int, columns: int = 1, blur: float = 0.0
) -> np.ndarray:
    """A white uint8 page with ``lines`` in black, ``size`` pixels high, in ``columns`` columns."""
    font = ImageFont.load_default(size=size)
    leading = int(size * 1.6)
    margin = size * 2
    per_column = -(-len(lines) // columns)
    height = margin * 2 + leading * per_column
    page = Image.new("L", (width, height), 255)
    draw = ImageDraw.Draw(page)
    column_width = (width - 2 * margin) // columns
    for index, line in enumerate(lines):
        column, row = divmod(index, per_column)
        text = line
        # Long lines are cut to the column: the text a page holds is what ground truth says.
        while draw.textlength(text, font=font) > column_width - size and " " in text:
            text = text.rsplit(" ", 1)[0]
        draw.text((margin + column * column_width, margin + row * leading), text, fill=0, font=font)
    if blur:
        page = page.filter(ImageFilter.GaussianBlur(blur))
    return np.asarray(page)


def fitted_lines(lines: tuple[str, ...], *, size: int, width: int, columns: int = 1) -> tuple[str, ...]:
    """The part of each line that ``text_page`` draws with the same arguments."""
    font = ImageFont.load_default(size=size)
    column_width = (width - 4 * size) // columns
    out = []
    for line in lines:
        text = line
        while font.getlength(text) > column_width - size and " " in text:
            text = text.rsplit(" ", 1)[0]
        out.append(text)
    return tuple(out)


def calibration_pages() -> list[np.ndarray]:
    """Pages from small to large print, one and two columns, sharp and slightly blurred."""
    return [
        text_page(CALIBRATION_TEXT, size=18, width=1300, blur=0.6),
        text_page(CALIBRATION_TEXT, size=26, width=1600, columns=2),
        text_page(CALIBRATION_TEXT[:5], size=40, width=1600, blur=1.0),
        text_page(CALIBRATION_TEXT[::-1], size=22, width=1100),
    ]


def validation_page() -> tuple[np.ndarray, str]:
    """The golden page and its text."""
    size, width = 32, 1200
    image = text_page(VALIDATION_TEXT, size=size, width=width)
    return image, "\n".join(fitted_lines(VALIDATION_TEXT, size=size, width=width))
