"""One settings object for docproc, built at an entry point and passed down.

Every field reads from a ``DOCPROC_``-prefixed environment variable. Nothing else in
docproc reads ``os.environ``. Credentials are ``SecretStr`` so they never print.
"""

from __future__ import annotations

import enum
import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, StringConstraints, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from docproc import __version__

EngineName = Literal["easyocr", "easyocr-torch", "rapidocr", "tesseract"]
ENGINE_PLUGIN = r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$"


class Scope(enum.Enum):
    """What a setting changes. Every field is annotated with exactly one (checked at import),
    so a new field cannot be added without deciding whether it belongs in the fingerprint."""

    RESULT = "result"
    """Changes what a result contains: part of the fingerprint, so a changed value gives a new
    result key instead of a stale cache hit; workers use the flow's value."""
    OUTCOME = "outcome"
    """Changes whether a document is processed or quarantined (limits), not the content of a
    result: not in the fingerprint, but workers use the flow's value."""
    LOCAL = "local"
    """Where and how the work runs (connections, credentials, threads, retries): per process."""


RESULT, OUTCOME, LOCAL = Scope.RESULT, Scope.OUTCOME, Scope.LOCAL


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="DOCPROC_", extra="forbid", validate_default=True, frozen=True
    )

    # -- extraction
    engine: Annotated[EngineName | Annotated[str, StringConstraints(pattern=ENGINE_PLUGIN)], RESULT] = Field(
        "easyocr",
        description=(
            "OCR engine: easyocr (default: easyocr's models on OpenVINO), easyocr-torch "
            "(the same models on torch, the reference), rapidocr, tesseract, or a plugin's "
            "import path 'package.module:EngineClass' (an OcrEngine subclass taking the languages)."
        ),
    )
    languages: Annotated[tuple[str, ...], NoDecode, RESULT] = Field(
        ("en",),
        description="OCR languages as ISO 639-1 codes, comma-separated (en,de,fr), or auto: "
        "detect each page's language from a first English reading and read it again with that language.",
    )
    gpu: Annotated[bool, LOCAL] = Field(
        False,
        description=(
            "Run OCR on a GPU when one is present: the easyocr engines use torch on CUDA, rapidocr "
            "ONNX Runtime's CUDA provider; without a device they stay on the CPU."
        ),
    )
    model_cache_dir: Annotated[Path, LOCAL] = Field(
        default_factory=lambda: Path.home() / ".cache" / "docproc" / "models",
        description=(
            "Where models converted from the installed weights are kept, by the weights' hash "
            "(the image converts them at build time into a read-only copy)."
        ),
    )
    dpi: Annotated[int, RESULT] = Field(
        200, ge=50, le=600, description="Rasterization DPI for PDF pages without text."
    )
    ocr_min_side: Annotated[int, RESULT] = Field(
        640, ge=100, description="Pages whose longer side is shorter are upscaled to it before OCR."
    )
    ocr_max_side: Annotated[int, RESULT] = Field(
        2600, ge=500, description="Pages whose longer side is longer are downscaled to it before OCR."
    )
    detect_orientation: Annotated[bool, RESULT] = Field(
        True, description="Detect and undo 90/180/270 page rotation."
    )
    deskew: Annotated[bool, RESULT] = Field(True, description="Detect and undo small skew angles.")
    min_confidence: Annotated[float, RESULT] = Field(
        0.5, ge=0, le=1, description="Mean OCR confidence under which a document needs review."
    )
    min_text_layer_chars: Annotated[int, RESULT] = Field(
        16, ge=1, description="A PDF page with at least this many text-layer characters is not OCRed."
    )

    nlp_max_chars: Annotated[int, RESULT] = Field(
        1_000_000,
        ge=1000,
        description=(
            "Entities and document type are found in the first this many characters of a document's"
            " text (bounds NLP time on huge text); the full text is still in the result, and a longer"
            " one is flagged nlp_truncated."
        ),
    )

    # -- outputs besides the result JSON and the plain text
    searchable_pdf: Annotated[bool, RESULT] = Field(
        True, description="Write pdf/<id>-<settings>.pdf: the document's pages with the OCR text over them."
    )
    pdfa: Annotated[bool, RESULT] = Field(
        False, description="Make the searchable PDF a PDF/A-2b file (archival)."
    )
    markdown: Annotated[bool, RESULT] = Field(
        True,
        description="Write markdown/<id>-<settings>.md: headings, paragraphs and lists in reading order.",
    )

    # -- limits (decompression bombs and runaway inputs end as quarantine `too_large`)
    max_document_bytes: Annotated[int, OUTCOME] = Field(
        200 * 2**20, description="Largest accepted document, bytes."
    )
    max_pages: Annotated[int, OUTCOME] = Field(1000, ge=1, description="Most pages accepted in one document.")
    max_page_pixels: Annotated[int, OUTCOME] = Field(
        90_000_000, ge=1, description="Most pixels in one page image (before scaling)."
    )
    max_page_bytes: Annotated[int, OUTCOME] = Field(
        360_000_000,
        ge=1,
        description=(
            "Most memory one decoded page image may take: its pixels times the bytes per pixel"
            " it is decoded with (1 for gray and palette, 2 for 16-bit, 4 for color, 32-bit and"
            " float), so the page limit depends on bit depth. Lower it for small workers."
        ),
    )

    # -- execution
    workers: Annotated[int, LOCAL] = Field(2, ge=1, description="Dask worker processes of the local cluster.")
    threads_per_worker: Annotated[int, LOCAL] = Field(1, ge=1, description="Threads per local Dask worker.")
    batch_size: Annotated[int, LOCAL] = Field(
        8, ge=1, description="Pages per OCR batch (one Dask task each)."
    )
    dask_address: Annotated[str | None, LOCAL] = Field(
        None, description="Address of an existing Dask scheduler (tcp://host:8786)."
    )
    dask_cluster_class: Annotated[str | None, LOCAL] = Field(
        None, description="Import path of a Dask cluster class (e.g. dask_kubernetes.operator.KubeCluster)."
    )
    dask_cluster_kwargs: Annotated[dict[str, Any], LOCAL] = Field(
        default_factory=dict, description="Keyword arguments for dask_cluster_class."
    )
    dask_adapt_max: Annotated[int | None, LOCAL] = Field(
        None, ge=1, description="With dask_cluster_class: adapt between 1 and this many workers."
    )
    units_in_flight: Annotated[int | None, LOCAL] = Field(
        None,
        ge=1,
        description=(
            "Units of work (inspection chunks, page batches) a run keeps submitted to Dask at once;"
            " the rest wait in the flow, so its memory does not grow with the document count."
            " Default: 3 per thread of the cluster (re-read as it scales), at least 8."
        ),
    )
    compute_threads: Annotated[int | None, LOCAL] = Field(
        None, ge=1, description="Torch threads per worker process (default: cores / local workers)."
    )
    force: Annotated[bool, LOCAL] = Field(
        False, description="Reprocess documents that already have a result."
    )
    retry_quarantined: Annotated[bool, OUTCOME] = Field(
        False, description="Process documents again that an earlier run quarantined."
    )
    document_timeout_seconds: Annotated[float, OUTCOME] = Field(
        300.0,
        gt=0,
        description="Time limit of one attempt at a document or slice, plus page_timeout_seconds a page.",
    )
    page_timeout_seconds: Annotated[float, OUTCOME] = Field(
        120.0, ge=0, description="Time limit added to an attempt for each of its pages."
    )
    attempt_memory_bytes: Annotated[int | None, OUTCOME] = Field(
        None,
        ge=1,
        description="Worker memory (RSS) past which a document attempt is ended "
        "(default: 90% of the Dask worker's memory limit).",
    )
    worker_memory_limit: Annotated[str | None, LOCAL] = Field(
        None,
        description="Memory limit of each local Dask worker process, e.g. '4GiB' (default: Dask's share).",
    )
    report_limit: Annotated[int, LOCAL] = Field(
        100, ge=1, description="Documents and problems listed in a run report; all are in its outcomes files."
    )
    copy_cache_bytes: Annotated[int, LOCAL] = Field(
        2 * 2**30,
        ge=0,
        description="Downloaded documents each worker process keeps on local disk, bytes, so the "
        "slices of a long document download it once per worker (0: off). Folders are read in place.",
    )
    retries: Annotated[int, LOCAL] = Field(3, ge=0, description="Retries of a batch on transient errors.")
    retry_delay_seconds: Annotated[float, LOCAL] = Field(
        2.0, ge=0, description="First retry delay; doubles each time."
    )

    # -- storage
    s3_endpoint: Annotated[str, LOCAL] = Field("127.0.0.1:9000", description="MinIO/S3 endpoint, host:port.")
    s3_access_key: Annotated[SecretStr, LOCAL] = Field(SecretStr(""), description="S3 access key.")
    s3_secret_key: Annotated[SecretStr, LOCAL] = Field(SecretStr(""), description="S3 secret key.")
    s3_secure: Annotated[bool, LOCAL] = Field(False, description="Use TLS to reach the S3 endpoint.")
    s3_ca_bundle: Annotated[Path | None, LOCAL] = Field(
        None, description="CA bundle to verify the S3 endpoint's TLS."
    )
    s3_region: Annotated[str | None, LOCAL] = Field(None, description="S3 region.")
    s3_sse: Annotated[Literal["none", "s3", "c"], LOCAL] = Field(
        "none", description="Server-side encryption: none, s3 (SSE-S3/KMS) or c (SSE-C)."
    )
    s3_sse_c_key: Annotated[SecretStr | None, LOCAL] = Field(
        None, description="SSE-C key: 32 bytes, base64 encoded (with s3_sse=c)."
    )

    # -- alerts
    alert_webhook_url: Annotated[SecretStr | None, LOCAL] = Field(
        None, description="Webhook notified when a run fails or quarantines too much."
    )
    alert_quarantine_share: Annotated[float, LOCAL] = Field(
        0.5, ge=0, le=1, description="Quarantined share of a run above which an alert is sent."
    )

    # -- events
    events_token: Annotated[SecretStr | None, LOCAL] = Field(
        None, description="Bearer token the MinIO webhook must present to `docproc events serve`."
    )

    @field_validator("languages", mode="before")
    @classmethod
    def _split_languages(cls, value: Any) -> Any:
        if isinstance(value, str):
            # en,de,fr from a person; ["en", "de"] from the Helm chart, which writes lists as JSON.
            value = json.loads(value) if value.strip().startswith("[") else value.split(",")
        if isinstance(value, list | tuple):
            codes = tuple(str(code).strip().lower() for code in value if str(code).strip())
            if not codes:
                raise ValueError("languages must name at least one language, or auto")
            if "auto" in codes and len(codes) > 1:
                raise ValueError("languages=auto cannot be combined with other languages")
            return codes
        return value

    @classmethod
    def scope(cls, name: str) -> Scope:
        return next(m for m in cls.model_fields[name].metadata if isinstance(m, Scope))

    @classmethod
    def fields_of(cls, *scopes: Scope) -> tuple[str, ...]:
        return tuple(name for name in cls.model_fields if cls.scope(name) in scopes)

    def fingerprint(self) -> str:
        """Hash of the pipeline version and every setting that changes a result (``Scope.RESULT``)."""
        material = {"pipeline": __version__, **{f: getattr(self, f) for f in self.fields_of(RESULT)}}
        blob = json.dumps(material, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def overrides(self) -> dict[str, Any]:
        """The explicitly set, non-secret fields: what a remote worker needs to rebuild these settings.

        Secrets are left out on purpose; workers read them from their own environment.
        """
        return {
            name: getattr(self, name)
            for name in self.model_fields_set
            if not isinstance(getattr(self, name), SecretStr)
        }

    def for_workers(self) -> dict[str, Any]:
        """JSON-ready values that make a worker's settings agree with these on every result and
        outcome: all ``RESULT`` and ``OUTCOME`` fields, set or default, plus the explicitly set
        non-secret ``LOCAL`` ones. Rebuild with :meth:`from_flow`; a ``DOCPROC_*`` variable set
        only on a worker can then no longer change its results behind the flow's back."""
        names = set(self.fields_of(RESULT, OUTCOME)) | set(self.overrides())
        return self.model_dump(mode="json", include=names)

    @classmethod
    def from_flow(cls, values: dict[str, Any]) -> Settings:
        """A worker's settings: the flow's :meth:`for_workers` values win over the worker's own
        environment, which still supplies credentials and connection details."""
        return cls(**values)


def _check_scopes(cls: type[BaseSettings]) -> None:
    for name, field in cls.model_fields.items():
        scopes = [m for m in field.metadata if isinstance(m, Scope)]
        if len(scopes) != 1:
            raise TypeError(
                f"{cls.__name__}.{name} needs exactly one Scope annotation (RESULT, OUTCOME or LOCAL)"
            )


_check_scopes(Settings)
