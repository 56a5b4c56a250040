"""Markdown of a document (filled in by the next commit)."""

from __future__ import annotations

from docproc.models import DocumentResult


def render(result: DocumentResult) -> str:
    return result.text.replace("\f", "\n\n") + "\n"
