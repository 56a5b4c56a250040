"""What a run downloads from a real MinIO, counted by MinIO itself (its per-bucket request
metrics): a long document split into slices is downloaded once per worker, not once per
slice, and a re-run over unchanged objects downloads nothing; a changed object is read again.

The CLI runs in a subprocess as a user starts it, against the session's Prefect server.
"""

from __future__ import annotations

import io
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

from minio import Minio

from tests.documents import pages_pdf
from tests.fixtures.minio import MinioFactory, MinioServer
from tests.fixtures.prefect_server import PrefectServer
from tests.test_s3_flow import reports

DOCPROC = Path(sys.executable).parent / "docproc"
RUN_TIMEOUT = 600
WORKERS = 2
PAGES = 12
BATCH = 2  # 6 slices of the long document


def get_requests(server: MinioServer, bucket: str) -> int:
    """GetObject requests MinIO served on ``bucket`` so far: every download of a document."""
    with urllib.request.urlopen(f"{server.url}/minio/v2/metrics/bucket", timeout=30) as resp:
        text = resp.read().decode()
    pattern = rf'^minio_bucket_requests_total\{{api="getobject",bucket="{re.escape(bucket)}",[^}}]*\}} (\S+)$'
    found = re.search(pattern, text, re.M)
    return int(float(found.group(1))) if found else 0


def upload(client: Minio, bucket: str, key: str, data: bytes) -> None:
    client.put_object(bucket, key, io.BytesIO(data), len(data))


def run(server: MinioServer, prefect: PrefectServer) -> subprocess.CompletedProcess[str]:
    env = prefect.env(
        DOCPROC_S3_ENDPOINT=server.endpoint,
        DOCPROC_S3_ACCESS_KEY=server.access_key,
        DOCPROC_S3_SECRET_KEY=server.secret_key,
        DOCPROC_S3_SECURE="false",
        DOCPROC_S3_SSE="s3",
    )
    # The engine is never used (text and text-layer pages): tesseract is the one cheap to start.
    args = ["run", "s3://inbox", "--out", "s3://out", "--engine", "tesseract"]
    args += ["--workers", str(WORKERS), "--batch-size", str(BATCH)]
    proc = subprocess.run(
        [str(DOCPROC), *args], env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT, check=False
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_downloads_once_per_worker_and_not_again_on_a_rerun(
    minio_factory: MinioFactory, prefect_server: PrefectServer, tmp_path: Path
) -> None:
    server = minio_factory(extra_env={"MINIO_PROMETHEUS_AUTH_TYPE": "public"})
    client = server.client()
    for bucket in ("inbox", "out"):
        server.make_bucket(bucket)
    pdf = pages_pdf(
        tmp_path / "long.pdf", [f"Chapter {n}: page {n} of the long report." for n in range(1, PAGES + 1)]
    )
    upload(client, "inbox", "long.pdf", pdf.read_bytes())

    # The long document alone: inspected once, read in 6 slices, finished with its searchable
    # PDF. Without a local copy that is 1 + 6 + 1 downloads; with one, at most one per worker.
    before = get_requests(server, "inbox")
    run(server, prefect_server)
    long_downloads = get_requests(server, "inbox") - before
    assert 1 <= long_downloads <= WORKERS, long_downloads
    (report,) = reports(client, "out")
    assert report["counts"] == {"processed": 1, "skipped": 0, "quarantined": 0}
    assert [o.object_name for o in client.list_objects("out", "parts/", recursive=True)] == []

    memos = {f"memo-{i}.txt": f"Memo {i}: the meeting moved to 2024-06-0{i}.".encode() for i in range(1, 5)}
    for key, data in memos.items():
        upload(client, "inbox", key, data)
    before = get_requests(server, "inbox")
    run(server, prefect_server)
    # The new memos only, each at most once per worker; the long document not at all.
    assert len(memos) <= get_requests(server, "inbox") - before <= len(memos) * WORKERS
    assert reports(client, "out")[-1]["counts"] == {"processed": 4, "skipped": 1, "quarantined": 0}

    before = get_requests(server, "inbox")
    run(server, prefect_server)
    assert get_requests(server, "inbox") - before == 0  # nothing changed, nothing downloaded
    assert reports(client, "out")[-1]["counts"] == {"processed": 0, "skipped": 5, "quarantined": 0}

    upload(client, "inbox", "memo-2.txt", b"Memo 2, corrected: the meeting moved to 2024-07-02.")
    before = get_requests(server, "inbox")
    run(server, prefect_server)
    assert 1 <= get_requests(server, "inbox") - before <= WORKERS
    last = reports(client, "out")[-1]
    assert last["counts"] == {"processed": 1, "skipped": 4, "quarantined": 0}
    assert [d["source"] for d in last["documents"] if d["status"] == "processed"] == ["memo-2.txt"]
