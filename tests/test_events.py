"""The MinIO webhook receiver: token, malformed payloads, routing, and the real thing end to end.

End to end: a real MinIO server sends its real webhook (with its auth token) to a real
`docproc events serve` process, which creates flow runs on the session's real Prefect server.
"""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from minio.notificationconfig import NotificationConfig, PrefixFilterRule, QueueConfig
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags
from prefect.client.schemas.objects import FlowRun
from prefect.client.schemas.sorting import FlowRunSort
from starlette.testclient import TestClient

from docproc.errors import ConfigurationError
from docproc.queues import Priority
from docproc.settings import Settings
from flows.events import EVENTS_PATH, NewObject, create_app, queue_for_key
from tests.fixtures.minio import MinioFactory
from tests.fixtures.prefect_server import PrefectServer, free_port
from tests.processes import stop

TOKEN = "events-token-0a1b2c3d"  # a test value


def _event(key: str, bucket: str = "docs", name: str = "s3:ObjectCreated:Put") -> dict[str, Any]:
    """The shape MinIO sends (keys URL-encoded, as in S3 event messages)."""
    return {
        "EventName": name,
        "Key": f"{bucket}/{key}",
        "Records": [
            {
                "eventVersion": "2.0",
                "eventSource": "minio:s3",
                "eventName": name,
                "s3": {
                    "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
                    "object": {
                        "key": key.replace("/", "%2F").replace(" ", "+"),
                        "size": 12,
                        "eTag": "0123abcd",
                        "sequencer": "17F0A1B2C3D4E5F6",
                    },
                },
            }
        ],
    }


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[NewObject, Priority]] = []

    async def __call__(self, obj: NewObject, priority: Priority) -> str:
        self.calls.append((obj, priority))
        return f"run-{len(self.calls)}"


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def client(recorder: Recorder) -> Iterator[TestClient]:
    # The Prefect submission is swapped for a recorder in these in-process tests only: they
    # check the HTTP contract; the end-to-end test below creates real runs.
    app = create_app(Settings(events_token=TOKEN), submit=recorder)
    with TestClient(app) as c:
        yield c


def _auth(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize(
    ("key", "queue"),
    [
        ("inbox/critical/payroll.pdf", Priority.CRITICAL),
        ("inbox/critical/2024/06/p.pdf", Priority.CRITICAL),
        ("inbox/bulk/archive/scan.tif", Priority.BULK),
        ("inbox/x.pdf", Priority.STANDARD),
        ("inbox/criticality/x.pdf", Priority.STANDARD),
        ("inbox/standard/x.pdf", Priority.STANDARD),
        ("inbox/bulk.pdf", Priority.STANDARD),
    ],
)
def test_queue_by_prefix(key: str, queue: Priority) -> None:
    assert queue_for_key(key) is queue


def test_receiver_needs_a_token() -> None:
    with pytest.raises(ConfigurationError, match="DOCPROC_EVENTS_TOKEN"):
        create_app(Settings())


@pytest.mark.parametrize(
    "headers", [{}, _auth("wrong"), {"Authorization": TOKEN}, {"Authorization": "Basic x"}]
)
def test_requests_without_the_token_are_refused(
    client: TestClient, recorder: Recorder, headers: dict[str, str]
) -> None:
    response = client.post(EVENTS_PATH, json=_event("inbox/critical/a.pdf"), headers=headers)
    assert response.status_code == 401
    assert recorder.calls == []


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"\xff\xfe\x00garbage",
        b"[]",
        b"{}",
        json.dumps({"Records": []}).encode(),
        json.dumps({"Records": [{"eventName": "s3:ObjectCreated:Put"}]}).encode(),
        json.dumps(
            {"Records": [{"eventName": "s3:ObjectCreated:Put", "s3": {"bucket": {"name": "b"}}}]}
        ).encode(),
    ],
)
def test_malformed_payloads_get_400_and_a_log_line(
    client: TestClient, recorder: Recorder, body: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="flows.events"):
        response = client.post(EVENTS_PATH, content=body, headers=_auth())
    assert response.status_code == 400
    assert any("malformed event" in r.getMessage() for r in caplog.records)
    assert recorder.calls == []
    # ... and the receiver keeps serving.
    assert client.post(EVENTS_PATH, json=_event("inbox/a.pdf"), headers=_auth()).status_code == 200


def test_created_inbox_objects_start_runs_on_their_queue(client: TestClient, recorder: Recorder) -> None:
    for key in ("inbox/critical/pay roll.pdf", "inbox/bulk/old.tif", "inbox/new.pdf"):
        assert client.post(EVENTS_PATH, json=_event(key), headers=_auth()).status_code == 200
    # Not inbox objects, or not creations: nothing starts.
    for event in (_event("results/x.json"), _event("inbox/a.pdf", name="s3:ObjectRemoved:Delete")):
        response = client.post(EVENTS_PATH, json=event, headers=_auth())
        assert response.status_code == 200
        assert response.json() == {"runs": []}
    assert [(o.key, p) for o, p in recorder.calls] == [
        ("inbox/critical/pay roll.pdf", Priority.CRITICAL),
        ("inbox/bulk/old.tif", Priority.BULK),
        ("inbox/new.pdf", Priority.STANDARD),
    ]
    assert recorder.calls[0][0].idempotency_key == "minio:docs/inbox/critical/pay roll.pdf@17F0A1B2C3D4E5F6"


# -- end to end ------------------------------------------------------------------------------


@pytest.fixture
def receiver_process(prefect_server: PrefectServer, docproc_pool: str, tmp_path: Path) -> Iterator[str]:
    """`docproc events serve` as its own process, pointed at the session's Prefect server."""
    port = free_port()
    log = (tmp_path / "receiver.log").open("wb")
    env = prefect_server.env(DOCPROC_EVENTS_TOKEN=TOKEN)
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "docproc"), "events", "serve", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    try:
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail((tmp_path / "receiver.log").read_text(errors="replace")[-4000:])
            time.sleep(0.3)
        yield base
    finally:
        stop(proc, timeout=20)
        log.close()


def _event_runs(expected: int, timeout: float = 60) -> list[FlowRun]:
    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while True:
            runs = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=["minio-event"])),
                sort=FlowRunSort.EXPECTED_START_TIME_DESC,
                limit=50,
            )
            if len(runs) >= expected or time.monotonic() > deadline:
                return runs
            time.sleep(0.5)


def test_minio_upload_starts_a_run_in_the_right_queue(
    minio_factory: MinioFactory, receiver_process: str, prefect_api: PrefectServer
) -> None:
    minio = minio_factory(
        extra_env={
            "MINIO_NOTIFY_WEBHOOK_ENABLE_DOCPROC": "on",
            "MINIO_NOTIFY_WEBHOOK_ENDPOINT_DOCPROC": f"{receiver_process}{EVENTS_PATH}",
            "MINIO_NOTIFY_WEBHOOK_AUTH_TOKEN_DOCPROC": TOKEN,
        }
    )
    s3 = minio.client()
    bucket = minio.make_bucket("intake")
    config = NotificationConfig(
        queue_config_list=[
            QueueConfig(
                queue="arn:minio:sqs::DOCPROC:webhook",
                events=["s3:ObjectCreated:*"],
                config_id="docproc-inbox",
                prefix_filter_rule=PrefixFilterRule(value="inbox/"),
            )
        ]
    )
    s3.set_bucket_notification(bucket, config)

    uploads = {
        "inbox/critical/payroll.txt": "critical",
        "inbox/bulk/archive.txt": "bulk",
        "inbox/letter.txt": "standard",
    }
    for key in uploads:
        data = f"document {key}\n".encode()
        s3.put_object(bucket, key, io.BytesIO(data), len(data))
    s3.put_object(bucket, "results/ignored.json", io.BytesIO(b"{}"), 2)  # outside inbox/: no event

    runs = _event_runs(expected=len(uploads))
    with get_client(sync_client=True) as client:
        for run in runs:  # checked below, never to be run: the worker tests want empty queues
            client.delete_flow_run(run.id)
    by_key = {run.parameters["keys"][0]: run for run in runs}
    assert sorted(by_key) == sorted(k.removeprefix("inbox/") for k in uploads), minio.log_tail()
    for key, queue in uploads.items():
        run = by_key[key.removeprefix("inbox/")]
        assert run.work_queue_name == queue
        assert run.parameters["priority"] == queue
        assert run.parameters["source"] == f"s3://{bucket}/inbox"
        assert run.parameters["destination"] == f"s3://{bucket}/results"
        assert run.state is not None
        assert run.state.is_scheduled()
        with get_client(sync_client=True) as client:
            deployment = client.read_deployment(run.deployment_id)  # type: ignore[arg-type]
        assert deployment.name == queue
        # The run must be runnable: the deployed flow has to accept the `keys` it is given.
        assert "keys" in deployment.parameter_openapi_schema["properties"], (
            "process_documents has no `keys` parameter: event runs would fail when a worker starts them"
        )

    # The live receiver refuses a caller without MinIO's token.
    refused = httpx.post(f"{receiver_process}{EVENTS_PATH}", json=_event("inbox/critical/x.txt"), timeout=10)
    assert refused.status_code == 401
