"""Storage on a local folder."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from docproc.errors import ConfigurationError, ObjectNotFoundError
from docproc.storage.base import ObjectInfo, Storage, clean_key

MAX_NAME_BYTES = 255


class LocalStorage(Storage):
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
            yield ObjectInfo(base.relative_to(self.root).as_posix(), base.stat().st_size)
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
                found.append(ObjectInfo(path.relative_to(self.root).as_posix(), path.stat().st_size))
        yield from sorted(found, key=lambda o: o.key)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def read_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError as exc:
            raise ObjectNotFoundError(key) from exc

    @contextmanager
    def _atomic_target(self, key: str) -> Iterator[Path]:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        os.close(fd)
        try:
            yield Path(tmp)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def write_bytes(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        with self._atomic_target(key) as tmp:
            tmp.write_bytes(data)

    def write_file(self, key: str, path: Path, content_type: str = "application/octet-stream") -> None:
        with self._atomic_target(key) as tmp:
            shutil.copyfile(path, tmp)

    @contextmanager
    def local_copy(self, key: str) -> Iterator[Path]:
        path = self._path(key)
        if not path.is_file():
            raise ObjectNotFoundError(key)
        yield path

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)
