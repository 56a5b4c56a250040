"""Alerts against a real local HTTP receiver (http.server on loopback, in a thread).

The failure and crash alerts come from the real `process_documents` flow with real faults:
storage it cannot sign in to, and a flow-run process killed by a signal under a real worker.
"""

from __future__ import annotations

import io
import json
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psutil
import pytest
from PIL import Image
from prefect.client.orchestration import get_client

from docproc.models import DocumentOutcome, RunReport
from docproc.settings import Settings
from flows import deployments
from flows.alerts import check_report
from flows.process import build_task_runner, process_documents
from tests.fault_engines import GATE_SIZE, Gate
from tests.fixtures.minio import MinioServer
from tests.fixtures.prefect_server import PrefectServer
from tests.fixtures.prefect_worker import ProcessWorker

WEBHOOK_TOKEN = "hook-token-9f8e7d"
S3_SECRET = "s3-secret-5c4b3a"
FAULT_ENGINE = "tests.fault_engines:FaultEngine"


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


def _inbox(folder: Path, *pages: tuple[int, int]) -> Path:
    folder.mkdir()
    (folder / "letter.txt").write_text("Dear Ms. Rivera,\n\nthank you for your letter.\n", encoding="utf-8")
    for i, (height, width) in enumerate(pages):
        Image.new("L", (width, height), 255).save(folder / f"scan-{i}.png")
    return folder


def test_failed_run_notifies_through_the_hook(
    receiver: Receiver,
    prefect_api: PrefectServer,
    minio_server: MinioServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The real flow fails on misconfigured storage (a wrong S3 secret key): the hook alerts,
    names the failure and carries no secret."""
    bucket = minio_server.make_bucket(f"alerts-{uuid.uuid4().hex[:8]}")
    minio_server.client().put_object(bucket, "inbox/letter.txt", io.BytesIO(b"Dear Ms. Rivera,\n"), 17)
    wrong_secret = "wrong-" + S3_SECRET
    monkeypatch.setenv("DOCPROC_ALERT_WEBHOOK_URL", receiver.url)
    monkeypatch.setenv("DOCPROC_S3_ENDPOINT", minio_server.endpoint)
    monkeypatch.setenv("DOCPROC_S3_ACCESS_KEY", minio_server.access_key)
    monkeypatch.setenv("DOCPROC_S3_SECRET_KEY", wrong_secret)
    # The fault engine (blank pages) keeps the worker's warm-up cheap; the run fails before OCR.
    settings = Settings(engine=FAULT_ENGINE, workers=1)
    out = tmp_path / "out"
    flow = process_documents.with_options(task_runner=build_task_runner(settings))

    state = flow(
        source=f"s3://{bucket}/inbox",
        destination=str(out),
        settings_overrides=settings.overrides(),
        return_state=True,
    )

    assert state.is_failed(), state
    [payload] = receiver.payloads()
    assert payload["event"] == "docproc.run.failed"
    assert payload["state"] == "Failed"
    assert payload["run_id"] == str(state.state_details.flow_run_id)
    assert payload["flow"] == "process-documents"
    assert payload["source"] == f"s3://{bucket}/inbox"
    assert payload["destination"] == str(out)
    assert payload["url"] == f"{prefect_api.ui_url}/runs/flow-run/{payload['run_id']}"
    assert "SignatureDoesNotMatch" in str(payload["message"]), payload["message"]
    # The failed run still wrote its report (to the local destination), and the alert links it.
    written = out / "runs" / payload["run_id"] / "report.json"
    assert payload["report_location"] == str(written)
    assert "SignatureDoesNotMatch" in str(RunReport.model_validate_json(written.read_text()).error)
    body = receiver.requests[0][2]
    assert wrong_secret.encode() not in body
    assert WEBHOOK_TOKEN.encode() not in body


@pytest.mark.parametrize(
    ("sig", "expected_message"),
    [(signal.SIGKILL, "status code: -9"), (signal.SIGTERM, "aborted by a termination signal")],
    ids=["SIGKILL", "SIGTERM"],
)
def test_crashed_run_notifies_through_the_hook(
    sig: signal.Signals,
    expected_message: str,
    receiver: Receiver,
    process_worker_factory: Callable[..., ProcessWorker],
    tmp_path: Path,
) -> None:
    """A flow run of the real deployment, killed while it reads a page.

    SIGKILL is how the kernel's OOM killer ends it: Prefect's runner (in the worker) sees the
    process die, marks the run Crashed and runs the flow's on_crashed hook. SIGTERM is how
    Kubernetes evicts a pod: the flow engine itself marks the run Crashed and runs the hook.
    Either way the webhook hears of it once.
    """
    gate = Gate(tmp_path / "gate")
    worker = process_worker_factory(
        DOCPROC_ENGINE=FAULT_ENGINE,
        DOCPROC_WORKERS="1",
        DOCPROC_DETECT_ORIENTATION="false",
        DOCPROC_DESKEW="false",
        DOCPROC_ALERT_WEBHOOK_URL=receiver.url,
        **gate.env(),
    )
    inbox, out = _inbox(tmp_path / "inbox", GATE_SIZE), tmp_path / "out"
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name(deployments.deployment_name("standard"))
        run = client.create_flow_run_from_deployment(
            deployment.id, parameters={"source": str(inbox), "destination": str(out), "priority": "standard"}
        )
    # The run is in the middle of a document: its Dask worker holds the page at the gate.
    dask_worker = psutil.Process(gate.wait_entered(timeout=300, alive=lambda: worker.proc.poll() is None))
    flow_process = worker.flow_run_process(run.id)
    assert dask_worker in flow_process.children(recursive=True)
    flow_process.send_signal(sig)

    final = worker.wait_final([run.id])[run.id]
    assert final.state is not None
    assert final.state.is_crashed(), final.state
    payloads = _wait_payloads(receiver, 1, worker)
    assert len(payloads) == 1, payloads
    [payload] = payloads
    assert payload["event"] == "docproc.run.crashed"
    assert payload["state"] == "Crashed"
    assert payload["run_id"] == str(run.id)
    assert payload["flow"] == "process-documents"
    assert payload["source"] == str(inbox)
    assert payload["destination"] == str(out)
    assert payload["priority"] == "standard"
    assert expected_message in str(payload["message"]), payload["message"]
    assert WEBHOOK_TOKEN.encode() not in receiver.requests[0][2]
    # The run's processes do not outlive it, and the crash was reported once, not by both the
    # engine and the runner.
    flow_process.wait(timeout=120)
    dask_worker.wait(timeout=120)
    assert len(receiver.requests) == 1, receiver.payloads()
    written = out / "runs" / str(run.id) / "report.json"
    if sig == signal.SIGTERM:  # a flow that gets to run its `finally` writes its report
        report = RunReport.model_validate_json(written.read_text())
        assert "TerminationSignal" in str(report.error), report.error
        assert payload["report_location"] == str(written)
    else:  # killed outright: no report, and the alert does not point at one
        assert not written.exists()
        assert payload["report_location"] is None


def _wait_payloads(receiver: Receiver, count: int, worker: ProcessWorker) -> list[dict[str, object]]:
    deadline = time.monotonic() + 120
    while len(receiver.requests) < count:
        if time.monotonic() > deadline:
            worker.fail(f"{len(receiver.requests)} alerts delivered, expected {count}")
        time.sleep(0.2)
    return receiver.payloads()
