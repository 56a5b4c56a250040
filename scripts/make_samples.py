"""Generate the born-digital sample documents in samples/ (our own text, CC0).

Run with `.venv/bin/python scripts/make_samples.py`; the outputs are committed.
"""

from __future__ import annotations

from pathlib import Path

from fpdf import FPDF

SAMPLES = Path(__file__).resolve().parent.parent / "samples"

INVOICE = [
    "ACME Office Supplies Ltd.",
    "12 Harbour Road, Boston, MA 02110",
    "billing@acme-supplies.example  |  +1 617-555-0142  |  https://acme-supplies.example",
    "",
    "INVOICE",
    "Invoice No. INV-2024-0042",
    "Invoice date: March 5, 2024        Due date: 2024-04-04",
    "",
    "Bill to: Globex Corporation, attn. Jane Doe",
    "",
    "Qty  Description                       Unit price     Amount",
    "10   Recycled copy paper, A4 ream       $4.50          $45.00",
    "2    Toner cartridge TN-2420            $79.90         $159.80",
    "",
    "Subtotal: $204.80    Tax (6.25%): $12.80    Total due: $217.60",
    "",
    "Pay by bank transfer to IBAN DE89 3704 0044 0532 0130 00, reference INV-2024-0042.",
]

LETTER = """Globex Corporation
200 Main Street, Springfield

14 February 2024

Dear Mr. Smith,

Thank you for your letter of 2 February 2024 about the delivery to our Springfield office.
We have reviewed the order and will send the missing items by the end of the month.
If you have further questions, please call me at +1 (217) 555-0199 or write to
jane.doe@globex.example.

Sincerely,

Jane Doe
Customer Relations, Globex Corporation
"""


def make_invoice(path: Path) -> None:
    pdf = FPDF(format="letter")
    pdf.set_creator("docproc samples")
    pdf.add_page()
    pdf.set_font("helvetica", size=11)
    for line in INVOICE:
        pdf.cell(0, 7, line, new_x="LMARGIN", new_y="NEXT")
    pdf.output(str(path))


def main() -> None:
    make_invoice(SAMPLES / "invoice-acme.pdf")
    (SAMPLES / "letter-globex.txt").write_text(LETTER, encoding="utf-8")


if __name__ == "__main__":
    main()
