"""The storage interface: a flat namespace of keys under one root (a folder or a bucket prefix)."""

from __future__ import annotations

import abc
import posixpath
from collections.abc import Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from docproc.errors import ConfigurationError, ObjectNotFoundError, SourceMissingError

MAX_KEY_BYTES = 1024  # S3's limit; local folders split it into components of at most 255 bytes


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    version: str = ""
    """What changes when the object's content may have: the ETag on S3; modification time,
    change time and inode of a local file. Empty when the storage cannot tell."""
    sha256: str | None = None
    """The content's sha256 when known without reading it: from the index of an earlier run,
    for an object whose size and version are unchanged since it was hashed."""


def clean_key(key: str) -> str:
    """Normalize a relative key and refuse anything that could escape the storage root."""
    if not key or "\x00" in key or "\\" in key:
        raise ConfigurationError(f"invalid key {key!r}")
    if key.startswith("/"):
        raise ConfigurationError(f"key must be relative: {key!r}")
    parts = [p for p in key.split("/") if p not in ("", ".")]
    if not parts or any(p == ".." for p in parts):
        raise ConfigurationError(f"key escapes its root: {key!r}")
    cleaned = posixpath.join(*parts)
    if len(cleaned.encode()) > MAX_KEY_BYTES:
        raise ConfigurationError(f"key longer than {MAX_KEY_BYTES} bytes: {cleaned[:60]!r}...")
    return cleaned


class Storage(abc.ABC):
    """Keys are '/'-separated, relative to the storage's root; see :func:`clean_key`."""

    copies_on_read: bool = True
    """Whether ``local_copy`` downloads the object (worth keeping a copy of) rather than
    handing out the stored file itself."""

    @property
    @abc.abstractmethod
    def url(self) -> str:
        """Where this storage points, without credentials (safe to log)."""

    @abc.abstractmethod
    def iter_objects(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object under ``prefix``, in key order."""

    @abc.abstractmethod
    def exists(self, key: str) -> bool: ...

    @abc.abstractmethod
    def read_bytes(self, key: str) -> bytes:
        """A small object's content (results, reports): documents go through ``local_copy``."""

    @abc.abstractmethod
    def write_bytes(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        """Write atomically: a reader sees the old object, no object, or the whole new one."""

    @abc.abstractmethod
    def write_file(self, key: str, path: Path, content_type: str = "application/octet-stream") -> None:
        """Stream a local file to ``key`` (multipart on S3), atomically."""

    @abc.abstractmethod
    def local_copy(self, key: str) -> AbstractContextManager[Path]:
        """A local path holding the object's bytes for the duration of the context."""

    @abc.abstractmethod
    def delete(self, key: str) -> None: ...


@contextmanager
def source_copy(storage: Storage, key: str) -> Iterator[Path]:
    """``storage.local_copy(key)`` for a listed source document: a source that vanished since
    the listing is :class:`~docproc.errors.SourceMissingError`, a per-document outcome."""
    with ExitStack() as stack:
        try:
            path = stack.enter_context(storage.local_copy(key))
        except ObjectNotFoundError as exc:
            raise SourceMissingError(f"{key} vanished from {storage.url} after it was listed") from exc
        yield path
