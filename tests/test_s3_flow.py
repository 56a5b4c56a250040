"""The whole `docproc run` over MinIO: s3:// inbox in, s3:// results out, encrypted, idempotent,
and surviving a MinIO outage in the middle of a run.

The CLI runs as a user would start it, in a subprocess, with the S3 settings in DOCPROC_S3_*
environment variables (the local Dask workers read the secret from their inherited
environment, never from the flow's parameters) and the session's real Prefect server.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from minio import Minio
from PIL import Image

from tests.fault_engines import GATE_SIZE, Gate
from tests.fixtures.minio import MinioFactory, MinioServer
from tests.fixtures.prefect_server import PrefectServer

DOCPROC = Path(sys.executable).parent / "docproc"
RUN_TIMEOUT = 600
FAULT_ENGINE = "tests.fault_engines:FaultEngine"

TEXTS = {
    "notes/meeting minutes.txt": "Minutes of the meeting held in Berlin on 3 March 2025.\n",
    "notes/überweisung 日本.txt": "Invoice 2025-117 from Acme GmbH, total 1,250.00 EUR.\n",
    "letter.txt": "Dear Ms. Smith, thank you for your letter of 12 May.\n",
}


def run_env(server: MinioServer, prefect: PrefectServer) -> dict[str, str]:
    return prefect.env(
        DOCPROC_S3_ENDPOINT=server.endpoint,
        DOCPROC_S3_ACCESS_KEY=server.access_key,
        DOCPROC_S3_SECRET_KEY=server.secret_key,
        DOCPROC_S3_SECURE="false",
        DOCPROC_S3_SSE="s3",
        # One worker process: the machine has 2 cores shared with the MinIO server and Prefect.
        DOCPROC_WORKERS="1",
    )


def upload(client: Minio, bucket: str, key: str, data: bytes) -> None:
    # Uploaded the way a user or another system would: plain, no SSE.
    client.put_object(bucket, key, io.BytesIO(data), len(data))


def objects(client: Minio, bucket: str, prefix: str) -> list[str]:
    return sorted(o.object_name for o in client.list_objects(bucket, prefix, recursive=True))


def read(client: Minio, bucket: str, key: str) -> bytes:
    response = client.get_object(bucket, key)
    try:
        return response.read()
    finally:
        response.close()
        response.release_conn()


def reports(client: Minio, bucket: str) -> list[dict[str, Any]]:
    keys = [k for k in objects(client, bucket, "runs/") if k.endswith("/report.json")]
    return sorted((json.loads(read(client, bucket, k)) for k in keys), key=lambda r: str(r["started_at"]))


def docproc_run(bucket: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(DOCPROC), "run", f"s3://{bucket}/inbox", "--out", f"s3://{bucket}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )


@pytest.fixture
def bucket(minio_server: MinioServer) -> str:
    return minio_server.make_bucket(f"flow-{uuid.uuid4().hex[:10]}")


def test_run_over_minio_encrypted_then_rerun_skips(
    minio_server: MinioServer, prefect_server: PrefectServer, bucket: str, corpus: Path
) -> None:
    client = minio_server.client()
    for key, text in TEXTS.items():
        upload(client, bucket, f"inbox/{key}", text.encode())
    upload(client, bucket, "inbox/scans/phototest.tif", (corpus / "phototest.tif").read_bytes())
    upload(client, bucket, "inbox/broken.pdf", (corpus / "invalid.pdf").read_bytes())
    env = run_env(minio_server, prefect_server)

    first = docproc_run(bucket, env)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    (report,) = reports(client, bucket)
    assert report["counts"] == {"processed": 4, "skipped": 0, "quarantined": 1}
    by_source = {d["source"]: d for d in report["documents"]}
    assert sorted(by_source) == sorted([*TEXTS, "scans/phototest.tif", "broken.pdf"])
    assert by_source["broken.pdf"]["status"] == "quarantined"
    assert by_source["broken.pdf"]["reason"] == "corrupt"

    results = objects(client, bucket, "results/")
    assert len(results) == 4
    assert sorted(d["result_key"] for d in by_source.values() if d["result_key"]) == results
    assert len(objects(client, bucket, "text/")) == 4
    quarantined_id = by_source["broken.pdf"]["id"]
    assert objects(client, bucket, f"quarantine/{quarantined_id}/") == [
        f"quarantine/{quarantined_id}/error.json",
        f"quarantine/{quarantined_id}/original.pdf",
    ]
    text_of = {
        source: read(client, bucket, d["result_key"].replace("results/", "text/").replace(".json", ".txt"))
        for source, d in by_source.items()
        if d["result_key"]
    }
    for key, text in TEXTS.items():
        assert text.strip() in text_of[key].decode()
    assert "quick brown" in text_of["scans/phototest.tif"].decode().lower()

    # Everything docproc wrote (everything outside inbox/) is encrypted at rest; the secret is nowhere.
    written = [k for k in objects(client, bucket, "") if not k.startswith("inbox/")]
    assert {k.split("/")[0] for k in written} == {
        "results",
        "text",
        "pdf",
        "markdown",
        "quarantine",
        "runs",
        "index",
    }
    for key in written:
        stat = client.stat_object(bucket, key)
        assert stat.metadata.get("x-amz-server-side-encryption") == "AES256", key
        assert minio_server.secret_key.encode() not in read(client, bucket, key), key
    assert minio_server.secret_key not in first.stdout + first.stderr

    second = docproc_run(bucket, env)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    rerun = reports(client, bucket)[-1]
    # The corrupt file has no result to find, so it is quarantined again; nothing is reprocessed.
    assert rerun["counts"] == {"processed": 0, "skipped": 4, "quarantined": 1}
    assert objects(client, bucket, "results/") == results


def test_minio_stopped_mid_run_and_restarted(
    minio_factory: MinioFactory, prefect_server: PrefectServer, tmp_path: Path
) -> None:
    """MinIO stops while a document is being read and comes back: the run waits it out.

    Aimed, not timed: one page is held at a gate (``tests.fault_engines``) while MinIO is
    stopped, then let go, so its result is written into the outage; MinIO comes back only once
    the run's log shows the retries. No sleep, no bound on how long the restart may take.
    """
    server = minio_factory()
    bucket = server.make_bucket("outage")
    client = server.client()
    inputs = {f"inbox/doc-{i:02d}.txt": f"Document {i} of the outage test.\n".encode() for i in range(10)}
    page = io.BytesIO()
    Image.new("L", (GATE_SIZE[1], GATE_SIZE[0]), 255).save(page, format="PNG")
    inputs["inbox/gate.png"] = page.getvalue()
    for key, data in inputs.items():
        upload(client, bucket, key, data)
    gate = Gate(tmp_path / "gate")
    env = run_env(server, prefect_server)
    env.update(
        gate.env(),
        PYTHONPATH=str(Path(__file__).resolve().parents[1]),
        DOCPROC_ENGINE=FAULT_ENGINE,
        DOCPROC_DETECT_ORIENTATION="false",
        DOCPROC_DESKEW="false",
    )

    log_path = tmp_path / "docproc-run.log"
    started = time.monotonic()
    # Output to a file, not a pipe: a pipe nobody reads while we poll MinIO would fill and block the run.
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [str(DOCPROC), "run", f"s3://{bucket}/inbox", "--out", f"s3://{bucket}", "--verbose"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        gate.wait_entered(RUN_TIMEOUT, alive=lambda: proc.poll() is None)
        stopped = time.monotonic()
        server.stop()
        gate.open()  # the gated page's result now meets the outage
        deadline = time.monotonic() + RUN_TIMEOUT
        while "; retry " not in log_path.read_text(errors="replace"):
            assert proc.poll() is None, log_path.read_text()[-4000:]
            assert time.monotonic() < deadline, (
                "the run never retried storage:\n" + log_path.read_text()[-4000:]
            )
            time.sleep(0.2)
        # Read before start(): it returns once MinIO answers, and the run's retry can get through
        # (and the run finish) while start() is still polling (CI: finished 7 ms before a clock
        # read after it). MinIO is down until this moment, so a run that finishes later waited.
        restarted_at = datetime.now(UTC)
        server.start()
        restarted = time.monotonic()
        proc.wait(timeout=RUN_TIMEOUT)
        print(  # the timeline, for -s runs and failure reports
            f"gate reached after {stopped - started:.0f}s; outage {restarted - stopped:.0f}s; "
            f"run finished {time.monotonic() - restarted:.0f}s after the restart"
        )
    finally:
        gate.open()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    output = log_path.read_text()
    assert proc.returncode == 0, output[-4000:]
    assert server.secret_key not in output

    (report,) = reports(client, bucket)
    # The run was still going when MinIO came back: it waited out the outage instead of failing.
    assert datetime.fromisoformat(str(report["finished_at"])) > restarted_at
    documents = report["documents"]
    assert sorted(d["source"] for d in documents) == sorted(k.removeprefix("inbox/") for k in inputs)
    assert {d["status"] for d in documents} == {"processed"}
    # Exactly one result per document: one result key per id, each present, nothing extra.
    result_keys = [d["result_key"] for d in documents]
    assert len(set(result_keys)) == len(inputs)
    assert objects(client, bucket, "results/") == sorted(result_keys)
    assert len(objects(client, bucket, "text/")) == len(inputs)


def test_a_listing_that_fails_still_writes_the_report(
    minio_server: MinioServer, prefect_server: PrefectServer, tmp_path: Path
) -> None:
    """The run fails before any document (the source bucket does not exist), and the report
    in the output folder says why: the report is written also when the flow itself fails."""
    out = tmp_path / "out"
    missing = f"missing-{uuid.uuid4().hex[:10]}"
    proc = subprocess.run(
        [str(DOCPROC), "run", f"s3://{missing}/inbox", "--out", str(out)],
        env=run_env(minio_server, prefect_server),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )
    assert proc.returncode == 2, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "does not exist" in proc.stdout + proc.stderr
    [path] = out.glob("runs/*/report.json")
    report = json.loads(path.read_text())
    assert "ConfigurationError" in report["error"]
    assert missing in report["error"]
    assert sum(report["counts"].values()) == 0
