"""The docproc error hierarchy.

Two families: *permanent* errors are facts about a document (corrupt, encrypted,
unsupported, too large). They are never retried; the document is quarantined with
the error's machine-readable ``reason``. *Transient* errors are facts about the
infrastructure (storage unreachable, timeouts); callers retry them with backoff.
Library exceptions are translated where they enter docproc, with ``raise ... from exc``.
"""

from __future__ import annotations

from typing import ClassVar


class DocprocError(Exception):
    """Base class of every error docproc raises on purpose."""


class ConfigurationError(DocprocError):
    """Settings or arguments that cannot work (bad URL, unknown engine, ...)."""


class PermanentDocumentError(DocprocError):
    """The document itself cannot be processed; retrying will not help."""

    reason: ClassVar[str] = "invalid"

    def __init__(self, message: str, *, page: int | None = None) -> None:
        super().__init__(message)
        self.page = page


class UnsupportedTypeError(PermanentDocumentError):
    reason = "unsupported_type"


class CorruptDocumentError(PermanentDocumentError):
    reason = "corrupt"


class EncryptedDocumentError(PermanentDocumentError):
    reason = "encrypted"


class TooLargeError(PermanentDocumentError):
    reason = "too_large"


class OcrFailedError(PermanentDocumentError):
    """The OCR engine failed on this document again when retried: quarantined, not fatal to the run."""

    reason = "ocr_failed"


class EmptyDocumentError(PermanentDocumentError):
    """The document has no content at all (a zero-byte file)."""

    reason = "empty"


class AccessDeniedError(PermanentDocumentError):
    """Storage refused access to this one object (S3 ``AccessDenied``, a local permission error).

    A fact about the object, not the run: a bucket policy or ACL can deny a single key while the
    rest of the inbox is readable, so the document is quarantined and the run goes on. A denied
    *listing* or bucket stays a :class:`ConfigurationError`, since then nothing can work.
    """

    reason = "access_denied"


class SourceMissingError(PermanentDocumentError):
    """The source document vanished between listing and processing (deleted or renamed).

    Raised by :func:`docproc.storage.source_copy` where ``local_copy`` would raise
    :class:`ObjectNotFoundError`; a per-document outcome, never a failed run.
    """

    reason = "source_missing"


class InternalDocumentError(PermanentDocumentError):
    """docproc failed on this document in a way it did not foresee (a bug): quarantined so that
    the other documents go on, and reported with the exception for the maintainers."""

    reason = "internal_error"


class WorkerCrashedError(PermanentDocumentError):
    """Every attempt at this document killed its worker process (a native crash, an OOM kill)."""

    reason = "worker_crashed"


class AttemptTimeoutError(PermanentDocumentError):
    """Every attempt at this document outlived its time limit."""

    reason = "timeout"


class TransientError(DocprocError):
    """An infrastructure failure that may succeed on retry."""


class StorageUnavailableError(TransientError):
    """Storage could not be reached or answered with a server error."""


class OcrEngineError(TransientError):
    """The OCR engine failed on a page (crashed, was killed, timed out, ran out of memory)."""


class ObjectNotFoundError(DocprocError):
    """A key that was expected in storage is not there."""


def permanent_error(reason: str, message: str, page: int | None = None) -> PermanentDocumentError:
    """Rebuild a permanent error from its reason, as stored in a part or quarantine record."""
    classes = {cls.reason: cls for cls in PermanentDocumentError.__subclasses__()}
    return classes.get(reason, PermanentDocumentError)(message, page=page)
