"""Dask worker preload: `dask worker ... --preload docproc.dask_preload [--settings JSON]
[--ready-file PATH]`.

Loads the OCR engine and the NLP models in a background thread as the worker starts, so the
worker joins the cluster at once and its first batch finds the models loaded (or waits on the
engine's lock for the rest of the load) instead of paying for it on the critical path.

With ``--ready-file`` the file is removed as the worker process starts and created once the
models are loaded; the chart's readiness probe checks it. A worker loading its models burns a
core or more for a while: found on the kind cluster, where that CPU alone made the HPA ask for a
second worker with no document in sight. Kubernetes' HPA leaves an unready pod's CPU out of its
average while the pod is new (its CPU initialization period), so a scale-up no longer feeds on the
start-up of the workers it adds. A worker whose models fail to load never becomes ready.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

import click

from docproc import runtime
from docproc.settings import Settings

log = logging.getLogger(__name__)


def _warm_up(settings: Settings, ready_file: Path | None) -> None:
    try:
        runtime.warm_up(settings)
    except Exception:  # the first task will meet the same error and report it properly
        log.exception("warm-up of the models failed")
        return
    if ready_file is not None:
        ready_file.touch()


@click.command()
@click.option("--settings", "settings_json", default="{}", help="JSON of docproc settings overrides.")
@click.option(
    "--ready-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Created once the models are loaded (removed as the worker starts), for a readiness probe.",
)
def dask_setup(worker: object, settings_json: str, ready_file: Path | None) -> None:
    settings = Settings.from_flow(json.loads(settings_json))
    if ready_file is not None:
        ready_file.unlink(missing_ok=True)  # left by this pod's previous worker process
    threading.Thread(
        target=_warm_up, args=(settings, ready_file), name="docproc-warm-up", daemon=True
    ).start()
