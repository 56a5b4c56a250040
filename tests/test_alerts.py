"""Alerts against a real local HTTP receiver (http.server on loopback, in a thread)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from prefect import flow

from docproc.models import DocumentOutcome, RunReport
from docproc.settings import Settings
from flows.alerts import alert_on_failure, check_report
from tests.fixtures.prefect_server import PrefectServer

WEBHOOK_TOKEN = "hook-token-9f8e7d"
S3_SECRET = "s3-secret-5c4b3a"


class Receiver:
    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        self.status = 200
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver.requests.append((self.path, dict(self.headers), body))
                self.send_response(receiver.status)
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks/docproc?token={WEBHOOK_TOKEN}"

    def payloads(self) -> list[dict[str, object]]:
        return [json.loads(body) for _, _, body in self.requests]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def _report(processed: int, quarantined: int) -> RunReport:
    now = datetime.now(UTC)
    docs = [
        DocumentOutcome(source=f"ok{i}.txt", id=f"{i:064x}", status="processed") for i in range(processed)
    ]
    bad = [
        DocumentOutcome(
            source=f"bad{i}.pdf", id=None, status="quarantined", reason="corrupt", message="not a PDF"
        )
        for i in range(quarantined)
    ]
    return RunReport(
        run_id="3f9c2a60-1111-4222-8333-444455556666",
        source="s3://docs/inbox",
        destination="s3://docs/results",
        started_at=now,
        finished_at=now,
        pipeline_version="0.1.0",
        settings_fingerprint="abc",
        counts={"processed": processed, "skipped": 0, "quarantined": quarantined},
        by_quality={},
        by_type={},
        by_language={},
        quarantined=bad,
        documents=docs + bad,
        pages=processed,
        ocr_pages=0,
        wall_seconds=1.0,
        pages_per_second=1.0,
    )


def _settings(receiver: Receiver, share: float = 0.5) -> Settings:
    return Settings(alert_webhook_url=receiver.url, alert_quarantine_share=share, s3_secret_key=S3_SECRET)


def test_quarantine_over_threshold_notifies_with_counts_and_location(receiver: Receiver) -> None:
    report = _report(processed=1, quarantined=3)
    location = "s3://docs/results/runs/3f9c2a60-1111-4222-8333-444455556666/report.json"
    assert check_report(report, _settings(receiver), location) is True
    [(path, headers, body)] = receiver.requests
    assert path.startswith("/hooks/docproc")
    assert headers["Content-Type"] == "application/json"
    payload = json.loads(body)
    assert payload["event"] == "docproc.run.quarantine-threshold"
    assert payload["run_id"] == report.run_id
    assert payload["counts"] == {"processed": 1, "skipped": 0, "quarantined": 3}
    assert payload["quarantined_share"] == 0.75
    assert payload["quarantine_reasons"] == {"corrupt": 3}
    assert payload["report_location"] == location
    assert WEBHOOK_TOKEN.encode() not in body
    assert S3_SECRET.encode() not in body


def test_quarantine_at_or_under_threshold_is_quiet(receiver: Receiver) -> None:
    assert check_report(_report(processed=2, quarantined=2), _settings(receiver), "x") is False
    assert check_report(_report(processed=0, quarantined=0), _settings(receiver, share=0.0), "x") is False
    assert receiver.requests == []
    # The threshold is the setting, not a constant: 1 of 4 quarantined crosses 0.2.
    assert check_report(_report(processed=3, quarantined=1), _settings(receiver, share=0.2), "x") is True


def test_unreachable_or_failing_webhook_is_logged_not_raised(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    receiver.status = 500
    assert check_report(_report(0, 2), _settings(receiver), "x") is False
    assert len(receiver.requests) == 1
    receiver.close()
    assert check_report(_report(0, 2), _settings(receiver), "x") is False
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "not delivered" in logged
    assert WEBHOOK_TOKEN not in logged


@flow(name="alert-test-failing")
def _failing(source: str, destination: str, settings_overrides: dict[str, object] | None = None) -> None:
    raise RuntimeError(f"storage unreachable with key {S3_SECRET}")


@flow(name="alert-test-crashing")
def _crashing(source: str, destination: str) -> None:
    # A BaseException that is not an Exception is how Prefect tells a crash from a failure.
    raise KeyboardInterrupt


def test_failed_run_notifies_through_the_hook(
    receiver: Receiver, prefect_api: PrefectServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCPROC_ALERT_WEBHOOK_URL", receiver.url)
    monkeypatch.setenv("DOCPROC_S3_SECRET_KEY", S3_SECRET)
    failing = _failing.with_options(on_failure=[alert_on_failure])
    state = failing("s3://docs/inbox", "s3://docs/results", {"batch_size": 4}, return_state=True)
    assert state.is_failed()
    [payload] = receiver.payloads()
    assert payload["event"] == "docproc.run.failed"
    assert payload["run_id"] == str(state.state_details.flow_run_id)
    assert payload["destination"] == "s3://docs/results"
    assert payload["url"] == f"{prefect_api.ui_url}/runs/flow-run/{payload['run_id']}"
    assert "storage unreachable" in str(payload["message"])
    body = receiver.requests[0][2]
    assert S3_SECRET.encode() not in body  # scrubbed from the exception message
    assert WEBHOOK_TOKEN.encode() not in body


def test_crashed_run_notifies_through_the_hook(
    receiver: Receiver, prefect_api: PrefectServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCPROC_ALERT_WEBHOOK_URL", receiver.url)
    crashing = _crashing.with_options(on_crashed=[alert_on_failure])
    with pytest.raises(KeyboardInterrupt):
        crashing("s3://docs/inbox", "s3://docs/results")
    [payload] = receiver.payloads()
    assert payload["event"] == "docproc.run.crashed"
    assert payload["state"] == "Crashed"
