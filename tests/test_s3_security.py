"""Encryption at rest, TLS, secrets and transient failures, against real MinIO servers."""

from __future__ import annotations

import base64
import io
import logging
import os
import secrets
import threading
import time
import traceback
import uuid
from pathlib import Path

import pytest
from minio.error import S3Error
from minio.sse import SseCustomerKey

from docproc.errors import (
    AccessDeniedError,
    ConfigurationError,
    DocprocError,
    ObjectNotFoundError,
    StorageUnavailableError,
)
from docproc.storage.s3 import S3Storage
from tests.fixtures.minio import MinioFactory, MinioServer

BUCKET = "docproc-test"
MiB = 2**20


def fresh_prefix() -> str:
    return f"sec-{uuid.uuid4().hex[:12]}"


def files_containing(root: Path, needle: bytes) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


def write_marked_file(path: Path, marker: bytes, size: int) -> None:
    with path.open("wb") as fh:
        fh.write(marker)
        fh.write(os.urandom(size - len(marker)))


class TestSseS3:
    def test_every_object_docproc_writes_is_encrypted(
        self, minio_server: MinioServer, tmp_path: Path
    ) -> None:
        prefix = fresh_prefix()
        storage = S3Storage(BUCKET, prefix, minio_server.settings(s3_sse="s3"))
        marker = f"PLAINTEXT-MARKER-{uuid.uuid4().hex}".encode()
        big = tmp_path / "big.pdf"
        write_marked_file(big, marker, 12 * MiB)  # multipart: three parts
        storage.write_bytes("results/abc.json", marker + b" small result")
        storage.write_bytes("text/abc.txt", marker + b" text")
        storage.write_file("inbox/big.pdf", big)
        storage.write_file("quarantine/abc/error.json", big)

        client = minio_server.client()
        names = [o.object_name for o in client.list_objects(BUCKET, prefix + "/", recursive=True)]
        assert len(names) == 4
        for name in names:
            stat = client.stat_object(BUCKET, name)
            assert stat.metadata.get("x-amz-server-side-encryption") == "AES256", name
        # At rest: the plaintext is nowhere in MinIO's data directory.
        assert files_containing(minio_server.data_dir, marker) == []
        # Reading back through docproc decrypts transparently.
        assert storage.read_bytes("text/abc.txt") == marker + b" text"

    def test_the_check_detects_an_unencrypted_object(self, minio_server: MinioServer) -> None:
        """Control: without SSE the header is absent and the plaintext is on disk."""
        prefix = fresh_prefix()
        storage = S3Storage(BUCKET, prefix, minio_server.settings(s3_sse="none"))
        marker = f"PLAINTEXT-MARKER-{uuid.uuid4().hex}".encode()
        storage.write_bytes("results/plain.json", marker)
        stat = minio_server.client().stat_object(BUCKET, f"{prefix}/results/plain.json")
        assert "x-amz-server-side-encryption" not in stat.metadata
        assert files_containing(minio_server.data_dir, marker) != []


@pytest.fixture
def tls_server(minio_factory: MinioFactory) -> MinioServer:
    server = minio_factory(tls=True)
    server.make_bucket(BUCKET)
    return server


def sse_c_key() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode()


class TestSseC:
    def test_round_trip_and_reads_without_the_key_fail(self, tls_server: MinioServer, tmp_path: Path) -> None:
        key = sse_c_key()
        prefix = fresh_prefix()
        storage = S3Storage(BUCKET, prefix, tls_server.settings(s3_sse="c", s3_sse_c_key=key))
        marker = f"PLAINTEXT-MARKER-{uuid.uuid4().hex}".encode()
        big = tmp_path / "big.tif"
        write_marked_file(big, marker, 11 * MiB)
        storage.write_bytes("results/a.json", marker + b"{}")
        storage.write_file("inbox/big.tif", big)

        assert storage.exists("results/a.json")
        assert storage.read_bytes("results/a.json") == marker + b"{}"
        with storage.local_copy("inbox/big.tif") as path:
            assert path.read_bytes() == big.read_bytes()
        assert [o.key for o in storage.iter_objects()] == ["inbox/big.tif", "results/a.json"]

        client = tls_server.client()
        ssec = SseCustomerKey(base64.b64decode(key))
        for name in (f"{prefix}/results/a.json", f"{prefix}/inbox/big.tif"):
            stat = client.stat_object(BUCKET, name, ssec=ssec)
            assert stat.metadata.get("x-amz-server-side-encryption-customer-algorithm") == "AES256"
            with pytest.raises(S3Error):
                client.get_object(BUCKET, name)  # no key: refused
        assert files_containing(tls_server.data_dir, marker) == []

        without_key = S3Storage(BUCKET, prefix, tls_server.settings(s3_sse="s3"))
        with pytest.raises(ConfigurationError):
            without_key.read_bytes("results/a.json")
        wrong_key = S3Storage(BUCKET, prefix, tls_server.settings(s3_sse="c", s3_sse_c_key=sse_c_key()))
        # A wrong key is answered AccessDenied, as an object a policy denies: that object is refused
        # (its document is quarantined as access_denied, the run goes on), and the key never shows.
        with pytest.raises(AccessDeniedError, match="AccessDenied") as info:
            wrong_key.read_bytes("results/a.json")
        assert key not in str(info.value)

    def test_inbox_objects_uploaded_without_a_key_are_readable(self, tls_server: MinioServer) -> None:
        """Users drop documents into inbox/ without SSE-C; docproc must still read them."""
        prefix = fresh_prefix()
        tls_server.client().put_object(BUCKET, f"{prefix}/inbox/plain.txt", io.BytesIO(b"plain"), 5)
        storage = S3Storage(BUCKET, prefix, tls_server.settings(s3_sse="c", s3_sse_c_key=sse_c_key()))
        assert storage.exists("inbox/plain.txt")
        assert storage.read_bytes("inbox/plain.txt") == b"plain"
        with storage.local_copy("inbox/plain.txt") as path:
            assert path.read_bytes() == b"plain"
        assert not storage.exists("inbox/missing.txt")
        # What docproc writes next to it is still encrypted with the customer key.
        storage.write_bytes("results/r.json", b"{}")
        with pytest.raises(S3Error):
            tls_server.client().stat_object(BUCKET, f"{prefix}/results/r.json")

    def test_sse_c_settings_are_checked_up_front(
        self, tls_server: MinioServer, minio_server: MinioServer
    ) -> None:
        with pytest.raises(ConfigurationError, match="TLS"):
            S3Storage(BUCKET, "x", minio_server.settings(s3_sse="c", s3_sse_c_key=sse_c_key()))
        with pytest.raises(ConfigurationError, match="SSE_C_KEY"):
            S3Storage(BUCKET, "x", tls_server.settings(s3_sse="c"))
        short = base64.b64encode(b"too short").decode()
        with pytest.raises(ConfigurationError, match="32 bytes") as info:
            S3Storage(BUCKET, "x", tls_server.settings(s3_sse="c", s3_sse_c_key=short))
        assert short not in str(info.value)


class TestTls:
    def test_reached_with_the_ca_bundle(self, tls_server: MinioServer) -> None:
        settings = tls_server.settings()
        assert settings.s3_secure
        assert settings.s3_ca_bundle is not None
        storage = S3Storage(BUCKET, fresh_prefix(), settings)
        storage.write_bytes("results/x.json", b"{}")
        assert storage.read_bytes("results/x.json") == b"{}"

    def test_refused_without_the_ca_bundle(self, tls_server: MinioServer) -> None:
        storage = S3Storage(BUCKET, fresh_prefix(), tls_server.settings(s3_ca_bundle=None))
        started = time.monotonic()
        with pytest.raises(ConfigurationError, match="CA_BUNDLE"):
            storage.write_bytes("results/x.json", b"{}")
        # A certificate failure is not retried for the whole transient budget.
        assert time.monotonic() - started < 10

    def test_plain_http_to_a_tls_port_fails(self, tls_server: MinioServer) -> None:
        storage = S3Storage(BUCKET, fresh_prefix(), tls_server.settings(s3_secure=False, s3_sse="none"))
        with pytest.raises(DocprocError):
            storage.write_bytes("results/x.json", b"{}")


class TestSecrets:
    def test_secret_never_in_logs_reprs_or_errors(
        self, minio_factory: MinioFactory, caplog: pytest.LogCaptureFixture
    ) -> None:
        server = minio_factory(tls=True)
        server.make_bucket(BUCKET)
        sse_key = sse_c_key()
        settings = server.settings(s3_sse="c", s3_sse_c_key=sse_key)
        caplog.set_level(logging.DEBUG)  # everything, urllib3's request lines included
        storage = S3Storage(BUCKET, fresh_prefix(), settings)
        raised: list[BaseException] = []

        storage.write_bytes("results/a.json", b"{}")
        storage.read_bytes("results/a.json")
        list(storage.iter_objects())
        storage.exists("results/a.json")
        with storage.local_copy("results/a.json"):
            pass
        storage.delete("results/a.json")
        with pytest.raises(ObjectNotFoundError) as missing:
            storage.read_bytes("results/a.json")
        raised.append(missing.value)

        wrong = S3Storage(
            BUCKET, "x", server.settings(s3_secret_key="wrong-" + server.secret_key, s3_sse="s3")
        )
        with pytest.raises(ConfigurationError) as denied:
            wrong.write_bytes("a.json", b"{}")
        raised.append(denied.value)

        with pytest.raises(ConfigurationError) as in_url:
            S3Storage.from_url(f"s3://{server.access_key}:{server.secret_key}@{BUCKET}/x", settings)
        raised.append(in_url.value)

        server.stop()
        storage.retry_seconds = 1.5
        with pytest.raises(StorageUnavailableError) as down:
            storage.write_bytes("results/b.json", b"{}")
        raised.append(down.value)

        texts = [repr(storage), str(storage), str(vars(storage)), repr(settings), str(settings), repr(wrong)]
        texts += [r.getMessage() for r in caplog.records]
        texts += ["".join(traceback.format_exception(exc)) for exc in raised]
        assert any("retry" in r.getMessage() for r in caplog.records), "the outage was not logged"
        for secret in (server.secret_key, sse_key, "wrong-" + server.secret_key):
            leaks = [t for t in texts if secret in t]
            assert leaks == [], f"secret leaked in: {leaks[0][:300]}"


class TestTransientFailures:
    def test_write_survives_a_server_restart(
        self, minio_factory: MinioFactory, caplog: pytest.LogCaptureFixture, tmp_path: Path
    ) -> None:
        server = minio_factory()
        server.make_bucket(BUCKET)
        storage = S3Storage(BUCKET, fresh_prefix(), server.settings())
        storage.write_bytes("results/before.json", b"before")
        big = tmp_path / "big.pdf"
        big.write_bytes(os.urandom(7 * MiB))

        server.stop()
        results: dict[str, object] = {}

        def write() -> None:
            started = time.monotonic()
            try:
                storage.write_bytes("results/during.json", b"during")
                storage.write_file("inbox/during.pdf", big)
                results["ok"] = time.monotonic() - started
            except Exception as exc:  # noqa: BLE001 - handed to the main thread, which asserts on it
                results["error"] = exc

        caplog.set_level(logging.WARNING, logger="docproc.storage.s3")
        thread = threading.Thread(target=write)
        thread.start()
        time.sleep(3)
        assert thread.is_alive(), f"the write did not wait for the server: {results}"
        server.start()
        thread.join(60)
        assert not thread.is_alive()
        assert "error" not in results, results.get("error")
        assert float(results["ok"]) > 3  # type: ignore[arg-type]
        assert storage.read_bytes("results/during.json") == b"during"
        assert storage.read_bytes("inbox/during.pdf") == big.read_bytes()
        assert storage.read_bytes("results/before.json") == b"before"  # same data dir, same KMS key
        assert any("retry" in r.getMessage() for r in caplog.records)

    def test_gives_up_after_the_retry_budget(self, minio_factory: MinioFactory) -> None:
        server = minio_factory()
        server.make_bucket(BUCKET)
        storage = S3Storage(BUCKET, fresh_prefix(), server.settings(), retry_seconds=3)
        server.stop()
        started = time.monotonic()
        with pytest.raises(StorageUnavailableError) as info:
            storage.read_bytes("results/x.json")
        elapsed = time.monotonic() - started
        assert 1 < elapsed < 10
        assert info.value.__cause__ is not None
        assert server.endpoint in str(info.value)
