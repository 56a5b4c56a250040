"""Character error rate, for the golden check of converted models and for benchmarks."""

from __future__ import annotations

import re
import unicodedata


def normalize(text: str) -> str:
    """NFKC with whitespace collapsed: line breaks and spacing are not reading errors."""
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
    """Edits per reference character, whitespace collapsed."""
    reference = normalize(reference)
    return edit_distance(normalize(found), reference) / max(1, len(reference))


def words(text: str) -> list[str]:
    """Lower-case words of two or more letters or digits (single characters are mostly bullets)."""
    return [t for t in re.findall(r"[a-z0-9]+", unicodedata.normalize("NFKC", text).lower()) if len(t) > 1]


def words_in_order(found: str, reference: str) -> float:
    """Share of the reference's words found in the same order: longest common subsequence."""
    ref, got = words(reference), words(found)
    if not ref:
        return 1.0
    previous = [0] * (len(got) + 1)
    for r in ref:
        current = [0]
        for j, g in enumerate(got, 1):
            current.append(previous[j - 1] + 1 if r == g else max(previous[j], current[j - 1]))
        previous = current
    return previous[-1] / len(ref)
