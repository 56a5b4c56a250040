"""Dask worker preload: `dask worker ... --preload docproc.dask_preload [--settings JSON]`.

Loads the OCR engine and the NLP models in a background thread as the worker starts, so the
worker joins the cluster at once and its first batch finds the models loaded (or waits on the
engine's lock for the rest of the load) instead of paying for it on the critical path.
"""

from __future__ import annotations

import json
import logging
import threading

import click

from docproc import runtime
from docproc.settings import Settings

log = logging.getLogger(__name__)


def _warm_up(settings: Settings) -> None:
    try:
        runtime.warm_up(settings)
    except Exception:  # the first task will meet the same error and report it properly
        log.exception("warm-up of the models failed")


@click.command()
@click.option("--settings", "settings_json", default="{}", help="JSON of docproc settings overrides.")
def dask_setup(worker: object, settings_json: str) -> None:
    settings = Settings.from_flow(json.loads(settings_json))
    threading.Thread(target=_warm_up, args=(settings,), name="docproc-warm-up", daemon=True).start()
