"""One settings object for docproc, built at an entry point and passed down.

Every field reads from a ``DOCPROC_``-prefixed environment variable. Nothing else in
docproc reads ``os.environ``. Credentials are ``SecretStr`` so they never print.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from docproc import __version__

EngineName = Literal["easyocr", "easyocr-torch", "rapidocr", "tesseract"]

# Fields whose value changes what a result contains; they go into the result fingerprint
# so that a changed setting produces a new result key instead of a stale cache hit.
RESULT_FIELDS: tuple[str, ...] = (
    "engine",
    "languages",
    "dpi",
    "ocr_min_side",
    "ocr_max_side",
    "detect_orientation",
    "deskew",
    "min_confidence",
)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="DOCPROC_", extra="forbid", validate_default=True, frozen=True
    )

    # -- extraction
    engine: EngineName = Field(
        "easyocr",
        description=(
            "OCR engine: easyocr (default: easyocr's models on OpenVINO), easyocr-torch "
            "(the same models on torch, the reference), rapidocr or tesseract."
        ),
    )
    languages: tuple[str, ...] = Field(("en",), description="OCR languages (easyocr codes).")
    gpu: bool = Field(
        False,
        description=(
            "Run OCR on a GPU when one is present: the easyocr engines use torch on CUDA, rapidocr "
            "ONNX Runtime's CUDA provider; without a device they stay on the CPU."
        ),
    )
    model_cache_dir: Path = Field(
        default_factory=lambda: Path.home() / ".cache" / "docproc" / "models",
        description=(
            "Where models converted from the installed weights are kept, by the weights' hash "
            "(the image converts them at build time into a read-only copy)."
        ),
    )
    dpi: int = Field(200, ge=50, le=600, description="Rasterization DPI for PDF pages without text.")
    ocr_min_side: int = Field(
        640, ge=100, description="Pages whose longer side is shorter are upscaled to it before OCR."
    )
    ocr_max_side: int = Field(
        2600, ge=500, description="Pages whose longer side is longer are downscaled to it before OCR."
    )
    detect_orientation: bool = Field(True, description="Detect and undo 90/180/270 page rotation.")
    deskew: bool = Field(True, description="Detect and undo small skew angles.")
    min_confidence: float = Field(
        0.5, ge=0, le=1, description="Mean OCR confidence under which a document needs review."
    )
    min_text_layer_chars: int = Field(
        16, ge=1, description="A PDF page with at least this many text-layer characters is not OCRed."
    )

    # -- limits (decompression bombs and runaway inputs end as quarantine `too_large`)
    max_document_bytes: int = Field(200 * 2**20, description="Largest accepted document, bytes.")
    max_pages: int = Field(1000, ge=1, description="Most pages accepted in one document.")
    max_page_pixels: int = Field(
        90_000_000, ge=1, description="Most pixels in one page image (before scaling)."
    )

    # -- execution
    workers: int = Field(2, ge=1, description="Dask worker processes of the local cluster.")
    threads_per_worker: int = Field(1, ge=1, description="Threads per local Dask worker.")
    batch_size: int = Field(8, ge=1, description="Pages per OCR batch (one Dask task each).")
    dask_address: str | None = Field(
        None, description="Address of an existing Dask scheduler (tcp://host:8786)."
    )
    dask_cluster_class: str | None = Field(
        None, description="Import path of a Dask cluster class (e.g. dask_kubernetes.operator.KubeCluster)."
    )
    dask_cluster_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="Keyword arguments for dask_cluster_class."
    )
    dask_adapt_max: int | None = Field(
        None, ge=1, description="With dask_cluster_class: adapt between 1 and this many workers."
    )
    compute_threads: int | None = Field(
        None, ge=1, description="Torch threads per worker process (default: cores / local workers)."
    )
    force: bool = Field(False, description="Reprocess documents that already have a result.")
    retries: int = Field(3, ge=0, description="Retries of a batch on transient errors.")
    retry_delay_seconds: float = Field(2.0, ge=0, description="First retry delay; doubles each time.")

    # -- storage
    s3_endpoint: str = Field("127.0.0.1:9000", description="MinIO/S3 endpoint, host:port.")
    s3_access_key: SecretStr = Field(SecretStr(""), description="S3 access key.")
    s3_secret_key: SecretStr = Field(SecretStr(""), description="S3 secret key.")
    s3_secure: bool = Field(False, description="Use TLS to reach the S3 endpoint.")
    s3_ca_bundle: Path | None = Field(None, description="CA bundle to verify the S3 endpoint's TLS.")
    s3_region: str | None = Field(None, description="S3 region.")
    s3_sse: Literal["none", "s3", "c"] = Field(
        "none", description="Server-side encryption: none, s3 (SSE-S3/KMS) or c (SSE-C)."
    )
    s3_sse_c_key: SecretStr | None = Field(
        None, description="SSE-C key: 32 bytes, base64 encoded (with s3_sse=c)."
    )

    # -- alerts
    alert_webhook_url: SecretStr | None = Field(
        None, description="Webhook notified when a run fails or quarantines too much."
    )
    alert_quarantine_share: float = Field(
        0.5, ge=0, le=1, description="Quarantined share of a run above which an alert is sent."
    )

    # -- events
    events_token: SecretStr | None = Field(
        None, description="Bearer token the MinIO webhook must present to `docproc events serve`."
    )

    def fingerprint(self) -> str:
        """Hash of the pipeline version and every setting that changes a result."""
        material = {"pipeline": __version__, **{f: getattr(self, f) for f in RESULT_FIELDS}}
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
