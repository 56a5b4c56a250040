"""Storage on a local folder."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from docproc.errors import AccessDeniedError, ConfigurationError, ObjectNotFoundError
from docproc.storage.base import ObjectInfo, Storage, clean_key

MAX_NAME_BYTES = 255
_COPY_CHUNK = 1 << 20


def _fsync_dir(folder: Path) -> None:
    """Make a rename or a new entry in ``folder`` durable (POSIX needs the folder fsynced too)."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _info(key: str, st: os.stat_result) -> ObjectInfo:
    # What git's index compares to tell a changed file without reading it: a rewrite changes
    # the modification time, a replace (rename over it) the inode, and both the change time.
    return ObjectInfo(key, st.st_size, f"{st.st_mtime_ns}.{st.st_ctime_ns}.{st.st_ino}")


class LocalStorage(Storage):
    copies_on_read = False  # local_copy yields the file in place

    def __init__(self, root: Path) -> None:
        self.root = root.expanduser().resolve()

    @property
    def url(self) -> str:
        return str(self.root)

    def _path(self, key: str) -> Path:
        key = clean_key(key)
        if any(len(part.encode()) > MAX_NAME_BYTES for part in key.split("/")):
            raise ConfigurationError(f"a path component of {key[:60]!r}... exceeds {MAX_NAME_BYTES} bytes")
        path = self.root / key
        # clean_key refuses '..'; this also catches a symlinked folder pointing outside the root.
        if not path.resolve().is_relative_to(self.root):
            raise ConfigurationError(f"key resolves outside {self.root}: {key!r}")
        return path

    def iter_objects(self, prefix: str = "") -> Iterator[ObjectInfo]:
        base = self._path(prefix) if prefix else self.root
        if not base.exists():
            return
        if base.is_file():
            yield _info(base.relative_to(self.root).as_posix(), base.stat())
            return
        found: list[ObjectInfo] = []
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for name in filenames:
                path = Path(dirpath) / name
                if name.startswith(".") or not path.is_file():
                    continue
                if not path.resolve().is_relative_to(self.root):
                    continue  # a symlink out of the source tree is not part of it
                found.append(_info(path.relative_to(self.root).as_posix(), path.stat()))
        yield from sorted(found, key=lambda o: o.key)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def read_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError as exc:
            raise ObjectNotFoundError(key) from exc
        except PermissionError as exc:
            raise AccessDeniedError(f"cannot read {key}: permission denied") from exc

    def _make_dirs(self, folder: Path) -> None:
        """Create ``folder`` and its missing parents, each made durable in its own parent."""
        missing: list[Path] = []
        current = folder
        while not current.is_dir():
            missing.append(current)
            current = current.parent
        for path in reversed(missing):
            try:
                path.mkdir()
            except FileExistsError:
                continue  # a concurrent writer made it
            _fsync_dir(path.parent)

    @contextmanager
    def _atomic_target(self, key: str) -> Iterator[BinaryIO]:
        """A temporary file beside the target: written, fsynced, renamed over the target, and
        the rename fsynced in the folder, so that after a crash the key holds the old content
        or the whole new content, never an empty or partial file."""
        path = self._path(key)
        self._make_dirs(path.parent)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as fh:
                yield fh
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
            _fsync_dir(path.parent)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def write_bytes(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        with self._atomic_target(key) as fh:
            fh.write(data)

    def write_file(self, key: str, path: Path, content_type: str = "application/octet-stream") -> None:
        with self._atomic_target(key) as fh, path.open("rb") as src:
            shutil.copyfileobj(src, fh, _COPY_CHUNK)

    @contextmanager
    def local_copy(self, key: str) -> Iterator[Path]:
        path = self._path(key)
        if not path.is_file():
            raise ObjectNotFoundError(key)
        try:
            # Opened once here so that an unreadable file is a per-document error at the door.
            path.open("rb").close()
        except FileNotFoundError as exc:
            raise ObjectNotFoundError(key) from exc
        except PermissionError as exc:
            raise AccessDeniedError(f"cannot read {key}: permission denied") from exc
        yield path

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)
