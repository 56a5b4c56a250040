"""Storage: one small interface, a local-folder and an S3/MinIO implementation."""

from __future__ import annotations

from pathlib import Path

from docproc.settings import Settings
from docproc.storage.base import ObjectInfo, Storage, clean_key, source_copy
from docproc.storage.local import LocalStorage

__all__ = ["LocalStorage", "ObjectInfo", "Storage", "clean_key", "open_storage", "source_copy"]


def open_storage(location: str, settings: Settings) -> Storage:
    """``s3://bucket/prefix`` for S3/MinIO, anything else is a local folder."""
    if location.startswith("s3://"):
        from docproc.storage.s3 import S3Storage

        return S3Storage.from_url(location, settings)
    return LocalStorage(Path(location))
