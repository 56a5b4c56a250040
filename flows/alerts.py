"""Alerts: a failed or crashed run, or a run that quarantined too much, notifies a webhook.

The notification is a small JSON document (run id, counts, report location, a link to the
run) POSTed to ``settings.alert_webhook_url``. It never carries a secret: only whitelisted
fields go in, and every configured secret value is scrubbed from the text as a second guard.
Delivery failures are logged, never raised: an unreachable webhook must not fail a run.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import httpx
from pydantic import SecretStr, ValidationError

from docproc import report
from docproc.errors import DocprocError
from docproc.models import RunReport
from docproc.settings import Settings
from docproc.storage import open_storage

logger = logging.getLogger(__name__)

TIMEOUT_SECONDS = 10.0


def _secrets(settings: Settings) -> list[str]:
    values = []
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if isinstance(value, SecretStr) and value.get_secret_value():
            values.append(value.get_secret_value())
    return values


def _scrub(text: str, secrets: list[str]) -> str:
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def send_alert(settings: Settings, payload: dict[str, Any]) -> bool:
    """POST ``payload`` to the alert webhook; True if it answered 2xx."""
    if settings.alert_webhook_url is None:
        logger.warning("alert %s not sent: no alert webhook configured", payload.get("event"))
        return False
    body = _scrub(json.dumps(payload, default=str, sort_keys=True), _secrets(settings))
    url = settings.alert_webhook_url.get_secret_value()
    try:
        response = httpx.post(
            url, content=body, headers={"Content-Type": "application/json"}, timeout=TIMEOUT_SECONDS
        )
        response.raise_for_status()
    except httpx.HTTPError as exc:
        # The URL may hold a token: name the failure, not the address.
        reason = _scrub(f"{type(exc).__name__}: {exc}", [url, *_secrets(settings)])
        logger.warning(
            "alert %s for run %s not delivered: %s", payload.get("event"), payload.get("run_id"), reason
        )
        return False
    logger.info("alert %s for run %s delivered", payload.get("event"), payload.get("run_id"))
    return True


def quarantined_share(report: RunReport) -> float:
    total = sum(report.counts.values())
    return report.counts.get("quarantined", 0) / total if total else 0.0


def check_report(report: RunReport, settings: Settings, report_location: str) -> bool:
    """Alert when the run quarantined more than ``settings.alert_quarantine_share`` of its documents.

    Returns True when an alert was delivered.
    """
    share = quarantined_share(report)
    if share <= settings.alert_quarantine_share:
        return False
    payload = {
        "event": "docproc.run.quarantine-threshold",
        "run_id": report.run_id,
        "counts": dict(report.counts),
        "documents": sum(report.counts.values()),
        "quarantined_share": round(share, 4),
        "threshold": settings.alert_quarantine_share,
        "quarantine_reasons": dict(Counter(o.reason or "unknown" for o in report.quarantined)),
        "report_location": report_location,
        "source": report.source,
        "destination": report.destination,
        "finished_at": report.finished_at.isoformat(),
        "url": _run_url(report.run_id),
    }
    return send_alert(settings, payload)


def alert_on_failure(flow: Any, flow_run: Any, state: Any) -> None:
    """Prefect ``on_failure`` / ``on_crashed`` hook: tell the webhook the run did not finish."""
    parameters = dict(getattr(flow_run, "parameters", None) or {})
    try:
        settings = Settings(**(parameters.get("settings_overrides") or {}))
    except ValidationError as exc:
        # The run may have failed because of these very settings; alert with the environment's.
        logger.warning("alert uses environment settings: run settings invalid (%d errors)", exc.error_count())
        settings = Settings()
    destination = parameters.get("destination")
    run_id = str(flow_run.id)
    payload = {
        "event": f"docproc.run.{'crashed' if state.is_crashed() else 'failed'}",
        "run_id": run_id,
        "run_name": flow_run.name,
        "flow": getattr(flow, "name", None),
        "state": state.name,
        "message": (state.message or "")[:2000],
        "counts": None,
        "report_location": _written_report(destination, run_id, settings),
        "source": parameters.get("source"),
        "destination": destination,
        "priority": str(parameters.get("priority", "")) or None,
        "occurred_at": datetime.now(UTC).isoformat(),
        "url": _run_url(run_id),
    }
    send_alert(settings, payload)


def _written_report(destination: str | None, run_id: str, settings: Settings) -> str | None:
    """Where the run's report is, if it wrote one before it ended: a failed run and a terminated
    one do, in their ``finally``; a killed one (SIGKILL, an OOM kill) or a storage that refuses
    writes leaves none."""
    if not destination:
        return None
    key = report.report_prefix(run_id) + "report.json"
    try:
        dst = open_storage(destination, settings)
        return dst.url.rstrip("/") + "/" + key if dst.exists(key) else None
    except DocprocError as exc:  # the alert matters more than its link
        logger.warning("alert without a report location: %s", type(exc).__name__)
        return None


def _run_url(run_id: str) -> str | None:
    from prefect.settings import PREFECT_UI_URL

    base = PREFECT_UI_URL.value()
    return f"{base.rstrip('/')}/runs/flow-run/{run_id}" if base else None
