"""Entities found by patterns, each with a normalized value.

=========  ==================================================  ==============================
type       recognized                                          value
=========  ==================================================  ==============================
date       2024-03-05, 03/05/2024, 05.03.2024, March 5, 2024,  ISO 8601 ``YYYY-MM-DD``
           Mar. 5, 2024, 5 March 2024, 5th of March 2024
money      $1,234.56, €12, 1.234,56 EUR, USD 99, 12,50 €       ``{"amount", "currency"}``
email      jane.doe@example.com                                the address, domain lowercased
phone      (415) 555-0132, +44 20 7946 0958                    E.164 (default region US)
url        https://example.com/x, www.example.com              the URL (``http://`` added to www.)
iban       DE89 3704 0044 0532 0130 00                         compact IBAN; mod-97 checked
reference  Invoice No. INV-2024-0042, Order #55123, Ref: AB-7  ``{"kind", "number"}``
=========  ==================================================  ==============================

Day/month order: slashed and dashed dates are read month first (US, the default region:
03/05/2024 is March 5) unless the first number cannot be a month (25/12/2024); dotted dates
are read day first (05.03.2024 is March 5), as they are written in Europe. Two-digit years
(slashed dates only) are 2000-2069 or 1970-1999. ``$`` alone is USD, ``¥`` is JPY.

Where matches overlap, the more specific type wins (``PRIORITY``), so a date inside a URL, a
phone number inside an IBAN or an invoice number that looks like a phone number is reported once.
"""

from __future__ import annotations

import bisect
import itertools
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

import phonenumbers

PHONE_REGION = "US"
PRIORITY: tuple[str, ...] = ("url", "email", "iban", "reference", "date", "money", "phone")


@dataclass(frozen=True)
class PatternMatch:
    type: str
    start: int
    end: int
    value: str | dict[str, str]


# -- dates

_MONTHS = {
    name: number
    for number, names in enumerate(
        (
            ("jan", "january"),
            ("feb", "february"),
            ("mar", "march"),
            ("apr", "april"),
            ("may",),
            ("jun", "june"),
            ("jul", "july"),
            ("aug", "august"),
            ("sep", "sept", "september"),
            ("oct", "october"),
            ("nov", "november"),
            ("dec", "december"),
        ),
        start=1,
    )
    for name in names
}
_MONTH = r"(?P<mon>" + "|".join(sorted(_MONTHS, key=len, reverse=True)) + r")\.?"
_ORD = r"(?:st|nd|rd|th)?"

_ISO_DATE = re.compile(
    r"(?<![\d.-])(?P<y>\d{4})(?P<sep>[-/.])(?P<m>\d{1,2})(?P=sep)(?P<d>\d{1,2})(?!\d|[-/.]\d)"
)
_US_DATE = re.compile(
    r"(?<![\d/.-])(?P<m>\d{1,2})(?P<sep>[/-])(?P<d>\d{1,2})(?P=sep)(?P<y>\d{4}|\d{2})(?![\d/-]|\.\d)"
)
_DOT_DATE = re.compile(r"(?<![\d.])(?P<d>\d{1,2})\.(?P<m>\d{1,2})\.(?P<y>\d{4})(?!\d|\.\d)")
_MONTH_FIRST = re.compile(rf"\b{_MONTH}\s+(?P<d>\d{{1,2}}){_ORD},?\s+(?P<y>\d{{4}})\b", re.IGNORECASE)
_DAY_FIRST = re.compile(rf"\b(?P<d>\d{{1,2}}){_ORD}\s+(?:of\s+)?{_MONTH},?\s+(?P<y>\d{{4}})\b", re.IGNORECASE)


def _year(raw: str) -> int:
    year = int(raw)
    if len(raw) == 2:
        year += 2000 if year < 70 else 1900
    return year


def _dates(text: str) -> Iterator[PatternMatch]:
    for regex in (_ISO_DATE, _US_DATE, _DOT_DATE, _MONTH_FIRST, _DAY_FIRST):
        for m in regex.finditer(text):
            groups = m.groupdict()
            month = _MONTHS[groups["mon"].lower()] if groups.get("mon") else int(groups["m"])
            day = int(groups["d"])
            if regex is _US_DATE and month > 12 >= day:
                month, day = day, month
            try:
                value = date(_year(groups["y"]), month, day)
            except ValueError:
                continue
            yield PatternMatch("date", m.start(), m.end(), value.isoformat())


# -- money

_CODES = (
    "USD|EUR|GBP|JPY|CHF|CAD|AUD|NZD|CNY|HKD|SGD|SEK|NOK|DKK|PLN|CZK|HUF|RON|BGN|ISK"
    "|INR|BRL|MXN|ZAR|RUB|TRY|KRW|ILS|AED|SAR|THB|MYR|IDR|PHP|TWD|ARS|CLP|COP"
)
_SYMBOLS = {"$": "USD", "US$": "USD", "C$": "CAD", "CA$": "CAD", "A$": "AUD", "AU$": "AUD"}
_SYMBOLS |= {"€": "EUR", "£": "GBP", "¥": "JPY"}
_SYMBOL = r"(?P<sym>(?<![A-Za-z])(?:US|CA|AU|C|A)\$|[$€£¥])"
_CODE = rf"(?P<code>\b(?:{_CODES})\b)"
# Thousands groups of exactly three digits (1,234 / 1.234 / 1 234 / 1'234), then an optional
# decimal part of one or two digits.
_AMOUNT = r"(?P<amt>(?:\d{1,3}(?:[,.'\u00a0\u202f ]\d{3})+|\d+)(?:[.,]\d{1,2})?)(?!\d)"
# An amount written before its currency must not start inside a longer number ("1 234,56 €").
_NOT_IN_NUMBER = r"(?<![\d.,])(?<!\d[ \u00a0\u202f'])"
_SCALES = {"thousand": 10**3, "k": 10**3, "million": 10**6, "mn": 10**6, "m": 10**6}
_SCALES |= {"billion": 10**9, "bn": 10**9}
_SCALE = r"(?:[ \u00a0]?(?P<scale>(?i:thousand|million|billion|mn|bn|k|m))\b)?"
_MONEY = (
    re.compile(rf"(?:{_SYMBOL}|{_CODE})[ \u00a0]?{_AMOUNT}{_SCALE}"),
    re.compile(rf"{_NOT_IN_NUMBER}{_AMOUNT}{_SCALE}[ \u00a0]?(?:{_SYMBOL}|{_CODE})"),
)
_DECIMALS = re.compile(r"[.,](\d{1,2})$")


def normalize_amount(raw: str, scale: str | None = None) -> str:
    """``"1.234,56"`` -> ``"1234.56"``: a final separator followed by one or two digits is the
    decimal point; every other separator groups thousands. ``("4.2", "million")`` -> ``"4200000"``.
    """
    decimals = _DECIMALS.search(raw)
    integer = raw[: decimals.start()] if decimals else raw
    digits = re.sub(r"\D", "", integer).lstrip("0") or "0"
    amount = f"{digits}.{decimals[1]}" if decimals else digits
    if scale:
        return format((Decimal(amount) * _SCALES[scale.lower()]).normalize(), "f")
    return amount


def _money(text: str) -> Iterator[PatternMatch]:
    for regex in _MONEY:
        for m in regex.finditer(text):
            currency = _SYMBOLS[m["sym"]] if m["sym"] else m["code"]
            value = {"amount": normalize_amount(m["amt"], m["scale"]), "currency": currency}
            yield PatternMatch("money", m.start(), m.end(), value)


# -- emails, URLs

# Every pattern here runs in time linear in the text (a test feeds each one adversarial input):
# a run that may repeat is anchored by a lookbehind so that it is scanned from its first
# character only, and possessive quantifiers (``++``, ``*+``) never give back what they took.

# An address is found in steps: a local part ending in "@", a word boundary in it, then
# dot-separated labels cut back to the last one that starts with a top-level domain. The single
# regex ``\b[local]+@label(?:\.label)*\.[A-Za-z]{2,}\b`` finds the same addresses but
# backtracks quadratically on "a.a.a.a..." (a run of local-part characters without "@").
_LOCAL = r"[A-Za-z0-9._%+-]"
_LOCAL_AT_HERE = re.compile(rf"{_LOCAL}++@")
_LOCAL_AT = re.compile(rf"(?<!{_LOCAL}){_LOCAL}++@")
_DOMAIN = re.compile(r"[A-Za-z0-9-]++(?:\.[A-Za-z0-9-]++)*+")
_TLD = re.compile(r"[A-Za-z]{2,}")
_WORD_EDGE = re.compile(r"\b")
_URL = re.compile(r"\b(?:https?://|www\.)[^\s<>\"'`]++", re.IGNORECASE)
_URL_TRAILING = ".,;:!?'\")]}"


def _is_word_char(text: str, index: int) -> bool:
    return index < len(text) and (text[index].isalnum() or text[index] == "_")


def _emails(text: str) -> Iterator[PatternMatch]:
    pos = 0
    while True:
        # A run that starts where the last match ended is only matched there; other runs only
        # from their first character: each character is scanned a bounded number of times.
        run = _LOCAL_AT_HERE.match(text, pos) or _LOCAL_AT.search(text, pos)
        if run is None:
            return
        at = run.end() - 1
        pos = at + 1
        edge = _WORD_EDGE.search(text, run.start(), at + 1)
        domain = _DOMAIN.match(text, at + 1)
        if edge is None or edge.start() >= at or domain is None:
            continue
        end = _domain_end(text, domain.start(), domain[0])
        if end is None:
            continue
        pos = end
        address = f"{text[edge.start() : at]}@{text[at + 1 : end].lower()}"
        yield PatternMatch("email", edge.start(), end, address)


def _domain_end(text: str, start: int, candidate: str) -> int | None:
    """Where the longest domain in ``candidate`` (at ``start`` in ``text``) ends: its last label
    begins with a top-level domain (two or more letters) that ends at a word boundary."""
    labels = candidate.split(".")
    offsets = list(itertools.accumulate((len(label) + 1 for label in labels[:-1]), initial=start))
    for index in range(len(labels) - 1, 0, -1):
        tld = _TLD.match(labels[index])
        if tld is not None:
            end = offsets[index] + tld.end()
            if not _is_word_char(text, end):
                return end
    return None


def _urls(text: str) -> Iterator[PatternMatch]:
    for m in _URL.finditer(text):
        url = m[0]
        # Sentence punctuation after a URL is not part of it; a closing bracket is when it
        # balances one inside (https://en.wikipedia.org/wiki/Foo_(bar)). Trimmed by index:
        # slicing one character at a time is quadratic on a URL followed by a long run of dots.
        end, opened, closed = len(url), url.count("("), url.count(")")
        while end and url[end - 1] in _URL_TRAILING:
            if url[end - 1] == ")":
                if opened >= closed:
                    break
                closed -= 1
            end -= 1
        url = url[:end]
        if "." not in url.split("//", 1)[-1]:
            continue
        value = url if "://" in url else f"http://{url}"
        yield PatternMatch("url", m.start(), m.start() + len(url), value)


# -- phones


def _phones(text: str) -> Iterator[PatternMatch]:
    for m in phonenumbers.PhoneNumberMatcher(text, PHONE_REGION):
        e164 = phonenumbers.format_number(m.number, phonenumbers.PhoneNumberFormat.E164)
        yield PatternMatch("phone", m.start, m.end, e164)


# -- IBANs

# Length of the IBAN of each country (ISO 13616 registry); the country fixes where it ends.
IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22,
    "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28,
    "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23,
    "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26,
    "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20,
    "LV": 21, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MR": 27, "MT": 31, "MU": 30, "NL": 18,
    "NO": 15, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "SA": 24,
    "SC": 31, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "ST": 25, "SV": 28, "TL": 23, "TN": 24,
    "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}  # fmt: skip
_IBAN = re.compile(r"\b(?P<country>[A-Z]{2})\d{2}(?: ?[A-Z0-9]){10,30}")


def iban_is_valid(iban: str) -> bool:
    """ISO 7064 mod-97-10: the IBAN, its first four characters moved to the end and letters
    read as 10..35, leaves remainder 1."""
    if IBAN_LENGTHS.get(iban[:2]) != len(iban) or not iban.isalnum():
        return False
    return int("".join(str(int(ch, 36)) for ch in iban[4:] + iban[:4])) % 97 == 1


def _ibans(text: str) -> Iterator[PatternMatch]:
    for m in _IBAN.finditer(text):
        length = IBAN_LENGTHS.get(m["country"])
        if length is None:
            continue
        # Walk the match up to the country's length: it may run on into the next word.
        count, end = 0, m.start()
        while count < length and end < m.end():
            count += text[end] != " "
            end += 1
        if count < length or (end < len(text) and text[end].isalnum()):
            continue
        iban = text[m.start() : end].replace(" ", "")
        if iban_is_valid(iban):
            yield PatternMatch("iban", m.start(), end, iban)


# -- invoice, order and other reference numbers

_REFERENCE_KINDS = {
    "invoice": "invoice", "inv": "invoice", "bill": "invoice",
    "order": "order", "purchase order": "order", "po": "order", "p.o.": "order",
    "ref": "reference", "reference": "reference", "our ref": "reference", "your ref": "reference",
    "receipt": "receipt", "quote": "quote", "quotation": "quote", "account": "account",
    "customer": "customer", "client": "customer", "transaction": "transaction",
    "case": "case", "ticket": "ticket", "policy": "policy", "contract": "contract",
}  # fmt: skip
_REF_KEYWORD = "|".join(re.escape(k) for k in sorted(_REFERENCE_KINDS, key=len, reverse=True))
# A keyword, then a marker that says a number follows ("No.", "Number", "#", ":"), then an
# identifier with at least one digit: "Invoice 2024" or "Order confirmed" are not references.
_REFERENCE = re.compile(
    rf"(?i:\b(?P<kw>{_REF_KEYWORD})\s*"
    r"(?:(?:no|nr|num|number|id)\b\.?\s*+[:#]?|#|:)\s*+#?\s*+)"
    r"(?P<ref>(?=[A-Za-z0-9/-]*\d)[A-Za-z0-9](?:[A-Za-z0-9/-]*[A-Za-z0-9])?)"
)


def _references(text: str) -> Iterator[PatternMatch]:
    for m in _REFERENCE.finditer(text):
        kind = _REFERENCE_KINDS[" ".join(m["kw"].lower().split())]
        yield PatternMatch("reference", m.start("ref"), m.end("ref"), {"kind": kind, "number": m["ref"]})


_FINDERS: dict[str, Callable[[str], Iterator[PatternMatch]]] = {
    "url": _urls,
    "email": _emails,
    "iban": _ibans,
    "reference": _references,
    "date": _dates,
    "money": _money,
    "phone": _phones,
}


class Spans:
    """Non-overlapping ``[start, end)`` spans, sorted, with a logarithmic overlap test."""

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []

    def overlaps(self, start: int, end: int) -> bool:
        i = bisect.bisect_left(self._starts, end)
        return i > 0 and self._ends[i - 1] > start

    def add(self, start: int, end: int) -> None:
        i = bisect.bisect_left(self._starts, start)
        self._starts.insert(i, start)
        self._ends.insert(i, end)


def find(text: str) -> tuple[list[PatternMatch], Spans]:
    """Pattern entities in ``text``, without overlaps, sorted by start; and the spans they take.

    Matches across a page break (form feed) are dropped.
    """
    taken = Spans()
    kept: list[PatternMatch] = []
    for kind in PRIORITY:
        # Within a type, longer matches first: "March 5, 2024" before a shorter reading of it.
        for match in sorted(_FINDERS[kind](text), key=lambda m: (m.start - m.end, m.start)):
            if "\f" in text[match.start : match.end] or taken.overlaps(match.start, match.end):
                continue
            taken.add(match.start, match.end)
            kept.append(match)
    kept.sort(key=lambda m: m.start)
    return kept, taken
