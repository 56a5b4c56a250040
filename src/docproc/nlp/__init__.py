"""NLP stage: language, entities (patterns and spaCy NER) and document type of a document's text.

Models are loaded once per process (``load_models`` warms them up, for worker preload) and
never downloaded: the spaCy model and the language model both ship inside installed packages.
"""

from __future__ import annotations

import bisect
import itertools
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from docproc.models import DocumentType, Entity, Language
from docproc.nlp import doctype, language, ner, patterns

__all__ = ["Analysis", "analyze", "load_models"]

log = logging.getLogger(__name__)

# spaCy's model is English: on other languages it labels capitalized words at random, so its
# entities would be noise presented as facts. "und" (too little text to tell) still runs it.
NER_LANGUAGES = frozenset({"en", "und"})
# Default of Settings.nlp_max_chars: spaCy's own max_length. Every NLP step is linear in the
# text, so this bounds the NLP time of one document however long its text is.
MAX_CHARS = 1_000_000


@dataclass(frozen=True)
class Analysis:
    language: Language
    entities: list[Entity]  # sorted by start offset
    document_type: DocumentType
    truncated: bool = False  # entities and type come from the first ``max_chars`` characters only


def load_models() -> None:
    """Load the spaCy pipeline and the language model into this process's caches."""
    ner.get_pipeline()
    language.get_detector()


def _segments(text: str, page_starts: Sequence[int]) -> list[tuple[int, int]]:
    bounds = [*page_starts, len(text)] if page_starts else [0, len(text)]
    return [(a, b) for a, b in itertools.pairwise(bounds) if b > a]


def _analysed_length(text: str, max_chars: int) -> int:
    """How much of ``text`` is analysed: all of it, or up to the last whitespace before
    ``max_chars`` so that no word is cut into a false entity at the edge."""
    if len(text) <= max_chars:
        return len(text)
    cut = max(text.rfind(ws, max_chars // 2, max_chars) for ws in ("\n", " ", "\t", "\f"))
    return cut if cut > 0 else max_chars


def analyze(text: str, page_starts: Sequence[int], max_chars: int = MAX_CHARS) -> Analysis:
    """Language, entities and type of ``text``, the pages of a document joined by form feeds.

    ``page_starts[i]`` is the offset in ``text`` where page ``i + 1`` starts; it gives each
    entity its 1-based page. Only the first ``max_chars`` characters are analysed (then
    ``truncated`` is set), which bounds the time of a huge text.
    """
    full_length = len(text)
    text = text[: _analysed_length(text, max_chars)]
    page_starts = [start for start in page_starts if start < len(text)] or ([0] if page_starts else [])

    def page_of(offset: int) -> int | None:
        return bisect.bisect_right(page_starts, offset) or None

    lang = language.detect_language(text)
    found, taken = patterns.find(text)
    entities = [
        Entity(
            type=m.type,
            source="pattern",
            text=text[m.start : m.end],
            value=m.value,
            page=page_of(m.start),
            start=m.start,
            end=m.end,
        )
        for m in found
    ]
    if lang.code in NER_LANGUAGES:
        for named in ner.extract(text, _segments(text, page_starts)):
            # A pattern entity is the same thing, normalized: "March 5, 2024" is a date, not a DATE.
            if taken.overlaps(named.start, named.end):
                continue
            raw = text[named.start : named.end]
            tidy = " ".join(raw.split())
            entities.append(
                Entity(
                    type=named.label,
                    source="ner",
                    text=raw,
                    value=tidy if tidy != raw else None,
                    page=page_of(named.start),
                    start=named.start,
                    end=named.end,
                )
            )
    else:
        log.debug("language %s: named entities skipped", lang.code)
    entities.sort(key=lambda e: (e.start, e.end))
    if len(text) < full_length:
        log.info("NLP looked at the first %d of %d characters", len(text), full_length)
    return Analysis(
        language=lang,
        entities=entities,
        document_type=doctype.classify(text, entities),
        truncated=len(text) < full_length,
    )
