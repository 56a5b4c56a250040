"""Document type by weighted cues: words and layouts typical of each type, plus the entities found.

Each cue counts once, however often it occurs, so a long report that says "invoice" ten
times does not become an invoice. A cue in the document's head (its title, letterhead)
counts ``HEAD_BONUS`` times more, because documents name themselves at the top.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Sequence

from docproc.models import DocumentType, DocumentTypeLabel, Entity

HEAD_CHARS = 300
# Cues are looked for in the first this many characters (about 60 pages): a document shows its
# type early, and a cap keeps the ~40 scans of a huge text short.
CUE_CHARS = 200_000
HEAD_BONUS = 2.0
# Below this much evidence for every type, the document is "other".
MIN_EVIDENCE = 4.0
# Evidence at which a clear winner is fully trusted.
FULL_EVIDENCE = 12.0


# Every cue runs in time linear in the text (a test feeds them adversarial input). Under
# MULTILINE, "^\s*" would be quadratic: "\s" also eats line breaks, so every line start of a
# run of blank lines rescans the whole run; cues anchored at a line start take "[^\S\n]" (whitespace but a line break) instead.
# A number before "%" starts at the first digit of a run, so a long run is scanned once.
def _cues(*pairs: tuple[str, float]) -> tuple[tuple[re.Pattern[str], float], ...]:
    return tuple((re.compile(pattern, re.IGNORECASE | re.MULTILINE), weight) for pattern, weight in pairs)


# Title words, scored with the head bonus.
_TITLES: dict[DocumentTypeLabel, re.Pattern[str]] = {
    "invoice": re.compile(r"\b(?:(?:tax |proforma |pro forma )?invoice|facture|rechnung|factura)\b", re.I),
    "receipt": re.compile(r"\b(?:(?:sales |payment |cash )?receipt|quittung|kassenbon|re[çc]u)\b", re.I),
    "contract": re.compile(r"\b(?:agreement|contract|vertrag|contrat|terms and conditions)\b", re.I),
    "form": re.compile(r"\b(?:form|application|questionnaire|registration|formular(?:e)?)\b", re.I),
    "report": re.compile(r"\b(?:report|bericht|rapport|white paper|study)\b", re.I),
}

_BODY: dict[DocumentTypeLabel, tuple[tuple[re.Pattern[str], float], ...]] = {
    "invoice": _cues(
        (r"\binvoice\s*(?:no|number|#|date)", 3),
        (r"\bbill(?:ed)? to\b", 2),
        (r"\b(?:amount|balance|total) due\b|\bdue date\b|\bpayment due\b", 2),
        (r"\bpayment terms\b|\bnet \d{1,2}\b|\bdue (?:with)?in \d+ days\b", 2),
        (r"\bremit(?:tance)?\b|\bbank details\b|\biban\b|\bswift\b|\bbic\b", 1),
        (r"\bsub-?total\b", 1),
        (r"\b(?:vat|sales tax|tax)\b", 1),
        (r"\b(?:qty|quantity|unit price|description)\b", 1),
    ),
    "receipt": _cues(
        (r"\bthank you for (?:shopping|your (?:purchase|visit|order))\b|\bplease come again\b", 3),
        (r"\b(?:cashier|register|terminal|till|store\s*#|server)\b", 2),
        (r"\bchange(?: due)?\b|\bcash tendered\b|\btendered\b", 2),
        (r"\b(?:visa|mastercard|amex|debit|credit card|card (?:ending|no))\b|\*{4}\s?\d{4}", 1.5),
        (r"\b(?:approved|auth(?:orization)? code|transaction id)\b", 1.5),
        (r"\b(?:paid|payment received)\b", 1),
        (r"\bsub-?total\b", 1),
        (r"\b(?:items?|qty)\b", 0.5),
    ),
    "letter": _cues(
        (r"^[^\S\n]*+(?:dear|hello|hi)\b[^\n]{0,60}[,:]?[^\S\n]*$|\bto whom it may concern\b", 4),
        (r"\b(?:yours (?:sincerely|truly|faithfully)|sincerely(?: yours)?|(?:best|kind|warm) regards)\b", 4),
        (r"\b(?:sehr geehrte|mit freundlichen gr[üu](?:ß|ss)en|madame, monsieur|cordialement)\b", 4),
        (r"^[^\S\n]*+(?:re|subject)[^\S\n]*+:", 1.5),
        (r"\b(?:enclosed|enclosure|encl\.|cc:)", 1),
        (r"\bi am writing\b|\bplease do not hesitate\b|\blook forward to\b", 1.5),
    ),
    "contract": _cues(
        (r"\bthis (?:\w+ )?(?:agreement|contract)\b", 3),
        (r"\b(?:whereas|hereinafter|witnesseth|hereby|hereto|thereof|herein)\b", 2),
        (r"\b(?:the )?parties\b|\bparty\b", 2),
        (r"\bin witness whereof\b|\bsigned by\b|\bduly authorized\b", 2),
        (r"\bgoverning law\b|\bjurisdiction\b", 1.5),
        (r"\b(?:termination|terminate)\b", 1),
        (r"\b(?:indemnif\w*|liability|confidential(?:ity)?|warrant(?:y|ies))\b", 1),
        (r"\beffective date\b|\bterm of (?:this|the)\b", 1),
        (r"\bshall\b", 1),
    ),
    "form": _cues(
        (r"\bplease (?:print|complete|fill|tick|check)\b|\bfill (?:in|out)\b", 3),
        (r"_{4,}|\.{6,}|\[\s?\]|☐|☑|☒", 2),
        (r"\b(?:first|last|given|family) name\b|\bdate of birth\b|\bd\.?o\.?b\b", 2),
        (r"\bcheck (?:one|all that apply)\b|\bif yes\b|\byes\s*/\s*no\b|\bmark (?:one|all)\b", 2),
        (r"\bfor office use only\b|\bapplicant\b|\bsignature of\b", 2),
        (r"^[^\S\n]*+(?:signature|date|name|address|phone|e-?mail)[^\S\n]*+:", 1),
    ),
    "report": _cues(
        (r"\bexecutive summary\b|\babstract\b", 3),
        (r"^[^\S\n]*+(?:\d++(?:\.\d++)*+\.?[^\S\n]++)?(?:introduction|background|methodology|methods|results"
         r"|discussion|conclusions?|findings|recommendations)[^\S\n]*$", 2),
        (r"\b(?:table|figure|fig\.)\s+\d+", 1.5),
        (r"\b(?:analysis|findings|conclusions?|recommendations?)\b", 1),
        (r"\b(?:q[1-4]|quarter(?:ly)?|fiscal|annual|year-over-year|yoy)\b", 1),
        (r"\b(?:increase|decrease|growth|declined?|rose|fell)\b", 0.5),
        (r"(?<!\d)\d++(?:\.\d++)?\s?%", 0.5),
    ),
}  # fmt: skip


def _entity_evidence(entities: Sequence[Entity]) -> defaultdict[DocumentTypeLabel, float]:
    types = Counter(e.type for e in entities)
    kinds = Counter(
        e.value.get("kind") for e in entities if e.type == "reference" and isinstance(e.value, dict)
    )
    evidence: defaultdict[DocumentTypeLabel, float] = defaultdict(float)
    if kinds["invoice"]:
        evidence["invoice"] += 2
    if kinds["receipt"] or kinds["transaction"]:
        evidence["receipt"] += 1
    if types["money"] >= 2:
        evidence["invoice"] += 1
        evidence["receipt"] += 1
    if types["iban"]:
        evidence["invoice"] += 1
    if types["PERSON"] + types["ORG"] >= 2 and types["date"]:
        evidence["contract"] += 0.5
        evidence["letter"] += 0.5
    return evidence


def classify(text: str, entities: Sequence[Entity]) -> DocumentType:
    """The most likely type of the document, with a score in [0, 1]."""
    head = text[:HEAD_CHARS]
    text = text[:CUE_CHARS]
    evidence = _entity_evidence(entities)
    for label, title in _TITLES.items():
        if title.search(head):
            evidence[label] += 3 * HEAD_BONUS
        elif title.search(text):
            evidence[label] += 1
    for label, cues in _BODY.items():
        evidence[label] += sum(weight for cue, weight in cues if cue.search(text))

    ranked = sorted(evidence.items(), key=lambda item: item[1], reverse=True)
    (best_label, best), (_, second) = [*ranked, ("other", 0.0), ("other", 0.0)][:2]
    if best < MIN_EVIDENCE:
        return DocumentType(label="other", score=round(1 - best / MIN_EVIDENCE, 3))
    # A clear margin over the runner-up and enough evidence are both needed for a high score.
    margin = best / (best + second)
    strength = min(1.0, best / FULL_EVIDENCE)
    return DocumentType(label=best_label, score=round(margin * strength, 3))
