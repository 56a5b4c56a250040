"""Storage on an S3 bucket prefix (MinIO or any S3-compatible server), through the ``minio`` SDK.

Every failure that can pass by itself (connection refused or reset, timeouts, 5xx answers,
a server still starting) is retried here with exponential backoff and jitter for a bounded
time, then raised as :class:`~docproc.errors.StorageUnavailableError`; callers above
(Prefect task retries) see only docproc errors. Every write asks for server-side encryption
as the settings say. Credentials live only inside the SDK client: they are not in ``repr``,
in a log record, or in an exception message (messages are also scrubbed, in case a library
ever echoes a header).
"""

from __future__ import annotations

import base64
import binascii
import http.client
import io
import logging
import posixpath
import random
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import TypeVar
from urllib.parse import urlsplit

import certifi
import urllib3
from minio import Minio
from minio.error import InvalidResponseError, MinioException, S3Error, ServerError
from minio.sse import Sse, SseCustomerKey, SseS3

from docproc.errors import (
    AccessDeniedError,
    ConfigurationError,
    ObjectNotFoundError,
    StorageUnavailableError,
)
from docproc.settings import Settings
from docproc.storage.base import MAX_KEY_BYTES, ObjectInfo, Storage, clean_key

logger = logging.getLogger(__name__)

T = TypeVar("T")

# 5 MiB is S3's smallest part; with one upload thread the SDK holds about one part in memory,
# so a large document streams with a small, fixed footprint instead of 3 parts in flight.
PART_SIZE = 5 * 2**20
DEFAULT_RETRY_SECONDS = 30.0
_FIRST_DELAY = 0.25
_MAX_DELAY = 4.0
# Connect fails fast so a dead endpoint costs little of the retry budget; read is generous
# because one socket read of a large part on a busy server can take a while.
_CONNECT_TIMEOUT = 5.0
_READ_TIMEOUT = 120.0
# S3 error codes that describe the server's state, not the request.
_TRANSIENT_CODES = frozenset(
    {
        "InternalError",
        "ServiceUnavailable",
        "SlowDown",
        "RequestTimeout",
        "RequestTimeTooSkewed",
        "XMinioServerNotInitialized",
        "XMinioReadQuorum",
        "XMinioWriteQuorum",
    }
)
_NOT_FOUND_CODES = frozenset({"NoSuchKey", "NoSuchObject", "ResourceNotFound"})
_DENIED_CODES = frozenset({"AccessDenied"})
# What a server answers when a customer key is sent for an object stored without one
# (GET: InvalidRequest "The encryption parameters are not applicable"; HEAD has no body: BadRequest).
_SSEC_NOT_APPLICABLE_CODES = frozenset({"InvalidRequest", "BadRequest", "InvalidArgument"})


class _NotCustomerEncryptedError(Exception):
    """Internal: the object was not written with SSE-C; read it without the key."""


def _is_tls_failure(exc: BaseException) -> bool:
    """A certificate problem: retrying will not fix it, the CA bundle setting will."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, urllib3.exceptions.SSLError):
            return True
        reason = getattr(current, "reason", None)
        current = reason if isinstance(reason, BaseException) else current.__cause__
    return False


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, S3Error):
        status = getattr(exc.response, "status", 0) or 0
        return exc.code in _TRANSIENT_CODES or status >= 500
    if isinstance(exc, ServerError):
        return exc.status_code >= 500
    if isinstance(exc, InvalidResponseError):
        # A non-XML answer: a proxy or load balancer in front of a restarting server.
        return int(getattr(exc, "_code", 0) or 0) >= 500
    if _is_tls_failure(exc):
        return False
    # ConnectionError covers refused/reset/aborted sockets, TimeoutError socket timeouts;
    # other OSErrors (a missing local file, a full disk) are not the server's fault.
    return isinstance(
        exc, urllib3.exceptions.HTTPError | http.client.HTTPException | ConnectionError | TimeoutError
    )


class S3Storage(Storage):
    """Keys relative to ``s3://bucket/prefix`` on the endpoint named in the settings."""

    def __init__(
        self,
        bucket: str,
        prefix: str,
        settings: Settings,
        *,
        retry_seconds: float = DEFAULT_RETRY_SECONDS,
    ) -> None:
        self.bucket = bucket
        self.prefix = clean_key(prefix) if prefix.strip("/") else ""
        self.endpoint = settings.s3_endpoint
        self.retry_seconds = retry_seconds
        # Kept as SecretStr so that even vars(storage) shows no secret; unwrapped only to scrub messages.
        self._secrets = tuple(
            s
            for s in (settings.s3_secret_key, settings.s3_sse_c_key)
            if s is not None and s.get_secret_value()
        )
        self._sse, self._ssec = self._encryption(settings)
        ca_certs = str(settings.s3_ca_bundle) if settings.s3_ca_bundle else certifi.where()
        if settings.s3_ca_bundle and not settings.s3_ca_bundle.is_file():
            raise ConfigurationError(f"S3 CA bundle {settings.s3_ca_bundle} is not a file")
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=_CONNECT_TIMEOUT, read=_READ_TIMEOUT),
            maxsize=10,
            cert_reqs="CERT_REQUIRED",
            ca_certs=ca_certs,
            # Retries are ours (bounded by time, with jitter, logged); urllib3's own would
            # multiply with them and hide the failure from the log.
            retries=False,
        )
        try:
            self._client = Minio(
                settings.s3_endpoint,
                access_key=settings.s3_access_key.get_secret_value() or None,
                secret_key=settings.s3_secret_key.get_secret_value() or None,
                secure=settings.s3_secure,
                region=settings.s3_region,
                http_client=http,
            )
        except ValueError as exc:
            raise ConfigurationError(
                f"invalid S3 endpoint {settings.s3_endpoint!r} (expected host:port): {exc}"
            ) from None

    @staticmethod
    def _encryption(settings: Settings) -> tuple[Sse | None, SseCustomerKey | None]:
        if settings.s3_sse == "s3":
            return SseS3(), None
        if settings.s3_sse == "c":
            if settings.s3_sse_c_key is None:
                raise ConfigurationError("s3_sse=c needs DOCPROC_S3_SSE_C_KEY (32 bytes, base64)")
            if not settings.s3_secure:
                # S3 servers refuse customer keys over plain HTTP; say so before the first request.
                raise ConfigurationError("s3_sse=c needs TLS: set DOCPROC_S3_SECURE=true")
            try:
                raw = base64.b64decode(settings.s3_sse_c_key.get_secret_value(), validate=True)
            except (binascii.Error, ValueError):
                raise ConfigurationError("DOCPROC_S3_SSE_C_KEY is not valid base64") from None
            if len(raw) != 32:
                raise ConfigurationError(f"DOCPROC_S3_SSE_C_KEY must decode to 32 bytes, not {len(raw)}")
            key = SseCustomerKey(raw)
            return key, key
        return None, None

    @classmethod
    def from_url(cls, url: str, settings: Settings) -> S3Storage:
        """``s3://bucket`` or ``s3://bucket/prefix``; the endpoint and credentials come from settings."""
        parts = urlsplit(url)
        if parts.scheme != "s3":
            raise ConfigurationError(f"not an s3:// URL: {url!r}")
        if "@" in parts.netloc:
            # Never echo it: the part before '@' may be a credential.
            raise ConfigurationError("credentials do not belong in an s3:// URL; use DOCPROC_S3_* settings")
        if parts.query or parts.fragment:
            raise ConfigurationError(f"s3:// URL with a query or fragment: {url!r}")
        bucket = parts.netloc
        if not bucket:
            raise ConfigurationError(f"s3:// URL without a bucket: {url!r}")
        return cls(bucket, parts.path.strip("/"), settings)

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    def __repr__(self) -> str:
        return f"S3Storage({self.url!r}, endpoint={self.endpoint!r})"

    # -- helpers

    def _object_name(self, key: str) -> str:
        key = clean_key(key)
        name = f"{self.prefix}/{key}" if self.prefix else key
        if len(name.encode()) > MAX_KEY_BYTES:
            raise ConfigurationError(f"object name longer than {MAX_KEY_BYTES} bytes: {name[:60]!r}...")
        return name

    def _redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret.get_secret_value(), "***")
        return text

    def _read(self, op: str, key: str, fn: Callable[[SseCustomerKey | None], T]) -> T:
        """A read that sends the SSE-C key when there is one.

        Documents in an inbox are usually uploaded without a customer key; the server refuses
        a key for those, so they are read again without it. docproc's own writes always carry it.
        """
        if self._ssec is None:
            return self._call(op, key, lambda: fn(None))
        ssec = self._ssec
        try:
            return self._call(op, key, lambda: fn(ssec), ssec_sent=True)
        except _NotCustomerEncryptedError:
            return self._call(op, key, lambda: fn(None))

    def _call(self, op: str, key: str, fn: Callable[[], T], *, ssec_sent: bool = False) -> T:
        """Run one SDK operation; retry what may pass, translate everything into docproc errors."""
        target = f"{self.url}/{key}" if key else self.url
        start = time.monotonic()
        attempt = 0
        while True:
            try:
                return fn()
            except (MinioException, urllib3.exceptions.HTTPError, OSError, http.client.HTTPException) as exc:
                if not _is_transient(exc):
                    if (
                        ssec_sent
                        and isinstance(exc, S3Error)
                        and exc.code in _SSEC_NOT_APPLICABLE_CODES
                        and getattr(exc.response, "status", 0) == 400
                    ):
                        raise _NotCustomerEncryptedError from exc
                    raise self._permanent(op, key, target, exc) from exc
                attempt += 1
                delay = min(_MAX_DELAY, _FIRST_DELAY * 2 ** (attempt - 1))
                delay = random.uniform(delay / 2, delay)
                elapsed = time.monotonic() - start
                reason = self._redact(f"{type(exc).__name__}: {exc}")
                if elapsed + delay > self.retry_seconds:
                    raise StorageUnavailableError(
                        f"{op} {target}: S3 endpoint {self.endpoint} unavailable after "
                        f"{attempt} attempts in {elapsed:.1f}s: {reason}"
                    ) from exc
                logger.warning("S3 %s %s failed (%s); retry %d in %.2fs", op, target, reason, attempt, delay)
                time.sleep(delay)

    def _permanent(self, op: str, key: str, target: str, exc: Exception) -> Exception:
        if isinstance(exc, S3Error):
            if exc.code in _NOT_FOUND_CODES:
                return ObjectNotFoundError(key or target)
            if exc.code == "NoSuchBucket":
                return ConfigurationError(f"bucket {self.bucket!r} does not exist on {self.endpoint}")
            if exc.code in _DENIED_CODES and key and op != "list":
                # A policy can deny one object while the rest of the inbox is readable: that
                # document is quarantined, the run goes on. A denied listing stops the run below.
                return AccessDeniedError(self._redact(f"S3 denied {op} {target}: {exc.code}: {exc.message}"))
            return ConfigurationError(self._redact(f"S3 refused {op} {target}: {exc.code}: {exc.message}"))
        if _is_tls_failure(exc):
            return ConfigurationError(
                self._redact(
                    f"TLS verification of {self.endpoint} failed ({exc}); "
                    "set DOCPROC_S3_CA_BUNDLE to the CA that signed its certificate"
                )
            )
        if isinstance(exc, MinioException):
            return ConfigurationError(self._redact(f"S3 {op} {target} failed: {exc}"))
        return exc  # a local OSError (missing source file, full disk): not ours to rename

    # -- the Storage interface

    def iter_objects(self, prefix: str = "") -> Iterator[ObjectInfo]:
        rel_prefix = clean_key(prefix) if prefix else ""
        base = f"{self.prefix}/" if self.prefix else ""
        list_prefix = self._object_name(rel_prefix) if rel_prefix else base

        def collect() -> list[ObjectInfo]:
            found: list[ObjectInfo] = []
            for obj in self._client.list_objects(self.bucket, prefix=list_prefix or None, recursive=True):
                name = obj.object_name
                if not name or obj.is_dir or name.endswith("/"):
                    continue
                rel = name[len(base) :]
                if rel_prefix and rel != rel_prefix and not rel.startswith(rel_prefix + "/"):
                    continue  # "inbox2/x" is not under "inbox"
                # Same rule as the local folder: hidden names are not part of the tree.
                if any(part.startswith(".") for part in rel.split("/")):
                    continue
                # The ETag changes with the content (an MD5 or a multipart digest, never reused
                # for other bytes under one key in practice); the time covers a server without one.
                version = (obj.etag or "").strip('"') or (
                    obj.last_modified.isoformat() if obj.last_modified else ""
                )
                found.append(ObjectInfo(rel, obj.size or 0, version))
            return found

        # Listed in full before yielding, so a retry restarts a listing rather than a half-consumed one.
        yield from sorted(self._call("list", rel_prefix, collect), key=lambda o: o.key)

    def exists(self, key: str) -> bool:
        name = self._object_name(key)
        try:
            self._read("stat", key, lambda ssec: self._client.stat_object(self.bucket, name, ssec=ssec))
        except ObjectNotFoundError:
            return False
        return True

    def read_bytes(self, key: str) -> bytes:
        name = self._object_name(key)

        def read(ssec: SseCustomerKey | None) -> bytes:
            response = self._client.get_object(self.bucket, name, ssec=ssec)
            try:
                return response.read()
            finally:
                response.close()
                response.release_conn()

        return self._read("read", key, read)

    def write_bytes(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        name = self._object_name(key)
        self._call(
            "write",
            key,
            lambda: self._client.put_object(
                self.bucket, name, io.BytesIO(data), len(data), content_type=content_type, sse=self._sse
            ),
        )
        logger.debug("wrote %s/%s (%d bytes)", self.url, key, len(data))

    def write_file(self, key: str, path: Path, content_type: str = "application/octet-stream") -> None:
        name = self._object_name(key)
        # S3 makes a PUT (and a completed multipart upload) visible all at once: readers see
        # the old object or the new one. A retry starts the upload again from the file.
        self._call(
            "write",
            key,
            lambda: self._client.fput_object(
                self.bucket,
                name,
                str(path),
                content_type=content_type,
                sse=self._sse,
                part_size=PART_SIZE,
                num_parallel_uploads=1,
            ),
        )
        logger.debug("uploaded %s to %s/%s", path, self.url, key)

    @contextmanager
    def local_copy(self, key: str) -> Iterator[Path]:
        name = self._object_name(key)
        basename = posixpath.basename(name)
        # Keep the object's name (its suffix tells loaders the type) unless it is too long for
        # a local file name.
        if len(basename.encode()) > 200:
            basename = "object" + PurePosixPath(basename).suffix[:16]
        with tempfile.TemporaryDirectory(prefix="docproc-s3-") as tmp:
            path = Path(tmp) / basename
            part = Path(tmp) / "download.part"
            self._read(
                "download",
                key,
                lambda ssec: self._client.fget_object(
                    self.bucket, name, str(path), ssec=ssec, tmp_file_path=str(part)
                ),
            )
            yield path

    def delete(self, key: str) -> None:
        name = self._object_name(key)
        self._call("delete", key, lambda: self._client.remove_object(self.bucket, name))
