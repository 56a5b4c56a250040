"""Operations commands (pool, submit, status, events): registered on the `docproc` CLI."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the operations sub-commands to ``app``. Filled in by the queues work."""
