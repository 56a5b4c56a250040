"""The default engine: easyocr's own weights and processing, with its two networks on OpenVINO.

easyocr's Python code (resizing, CRAFT's box grouping, cropping, CTC decoding) runs unchanged;
only the two torch modules it calls are swapped for OpenVINO models converted from the same
weights file:

- CRAFT, the text detector (most of easyocr's time), quantized to INT8 with NNCF on
  calibration pages that no test or benchmark evaluates (``docproc.ocr.synthetic``);
- the recognizer in float, run in BF16 where the CPU has it. Quantizing the whole recognizer
  to INT8 breaks it (its LSTM and MatMul lose too much: CER 0.9).

Conversion runs once per machine (or at image build time, ``docproc models convert``) into a
cache directory named by the hash of the weights and of the converter, and a converted set is
used only after it read a golden page correctly. Nothing is downloaded.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from docproc.errors import ConfigurationError
from docproc.ocr.easyocr_engine import EasyOcrEngine

log = logging.getLogger(__name__)

# Bump when the conversion changes: old caches are then left alone and a new one is made.
CONVERSION_VERSION = "1"
_DETECTOR_WEIGHTS = "craft_mlt_25k.pth"
_RECOGNIZER_WEIGHTS = "english_g2.pth"
_DETECTOR_XML = "craft-int8.xml"
_RECOGNIZER_XML = "recognizer.xml"
_MANIFEST = "manifest.json"
# The golden page must be read at least this well by the converted models.
_GOLDEN_MAX_CER = 0.02
# Detection canvas, longer side, chosen by measurement with the INT8 detector, one thread
# (CPU s; linn.png reference words found in order; multilingual page CER):
#   2560 px (easyocr's default): linn 10.9 s, 98.6%; multilingual 3.4 s, 0.110
#   2048 px:                     linn  7.8 s, 97.9%; multilingual 2.3 s, 0.106
#   1600 px:                     linn  5.7 s, 98.3%; multilingual 1.5 s, 0.118
# 1600 px reads the multilingual page worse (and lost words on linn in issue 11's run);
# 2048 px holds accuracy at 70% of the default's detection cost. The detector costs about
# 0.8 CPU-s per megapixel of canvas: beyond this only fewer pixels help.
_DETECT_SIDE = 2048


def weights_dir() -> Path:
    try:
        import easyocr_en_models
    except ImportError as exc:
        raise ConfigurationError(f"easyocr's model package is not installed: {exc}") from exc
    return Path(easyocr_en_models.model_dir())


def cache_key() -> str:
    """Hash of the weight files and of everything that shapes the converted models."""
    import nncf
    import openvino

    digest = hashlib.sha256()
    for name in (_DETECTOR_WEIGHTS, _RECOGNIZER_WEIGHTS):
        path = weights_dir() / name
        if not path.is_file():
            raise ConfigurationError(f"easyocr weights {path} are missing")
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    digest.update(f"{CONVERSION_VERSION}/{openvino.__version__}/{nncf.__version__}".encode())
    return digest.hexdigest()[:20]


def converted_models(cache_dir: Path) -> Path:
    """The directory holding the converted models for these weights, converting them if needed.

    Several workers may start at once on one machine: a file lock lets one convert while the
    others wait, and the finished directory appears in one rename, so nobody reads half of it.
    A read-only cache (the image's) is used as it is.
    """
    target = cache_dir / f"easyocr-openvino-{cache_key()}"
    if _complete(target):
        return target
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigurationError(f"cannot create the model cache {cache_dir}: {exc}") from exc
    with _locked(cache_dir / ".convert.lock"):
        if _complete(target):
            return target
        started = time.perf_counter()
        log.info("converting easyocr's models for OpenVINO into %s (once per machine)", target)
        work = Path(tempfile.mkdtemp(prefix=".convert-", dir=cache_dir))
        try:
            _convert(work)
            golden_cer = _validate(work)
            _write_manifest(work, golden_cer)
            # mkdtemp made the directory private (0700): the image's runtime user (not the
            # build's root) and other users' workers on a machine must be able to read it.
            for path in work.iterdir():
                path.chmod(0o644)
            work.chmod(0o755)
            os.replace(work, target)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        log.info(
            "models converted in %.0f s (golden page CER %.3f)", time.perf_counter() - started, golden_cer
        )
    return target


def _complete(target: Path) -> bool:
    manifest = target / _MANIFEST
    try:
        if not manifest.is_file():
            return False
        text = manifest.read_text()
    except PermissionError as exc:
        # Converting again would fail the same way: say whose files these are.
        raise ConfigurationError(f"the model cache {target} is not readable by this user: {exc}") from exc
    try:
        files = json.loads(text)["files"]
    except (ValueError, KeyError) as exc:
        log.warning("ignoring the unreadable model cache %s: %s", target, exc)
        return False
    return all((target / name).is_file() and _sha256(target / name) == sha for name, sha in files.items())


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _write_manifest(work: Path, golden_cer: float) -> None:
    files = {p.name: _sha256(p) for p in sorted(work.iterdir()) if p.suffix in (".xml", ".bin")}
    manifest = {"cache_key": cache_key(), "golden_cer": golden_cer, "files": files}
    (work / _MANIFEST).write_text(json.dumps(manifest, indent=2))


def _convert(work: Path) -> None:
    import easyocr
    import nncf
    import openvino as ov
    import torch
    from easyocr.imgproc import normalizeMeanVariance, resize_aspect_ratio

    from docproc.ocr.synthetic import calibration_pages

    reader = easyocr.Reader(
        ["en"],
        gpu=False,
        quantize=False,  # the float weights, not torch's own dynamic INT8 copy
        model_storage_directory=str(weights_dir()),
        download_enabled=False,
        verbose=False,
    )

    class ScoreMaps(torch.nn.Module):
        """CRAFT without its feature output, which easyocr never reads."""

        def __init__(self, craft: torch.nn.Module) -> None:
            super().__init__()
            self.craft = craft

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.craft(x)[0]  # type: ignore[no-any-return]

    class MeanOverHeight(torch.nn.Module):
        """AdaptiveAvgPool2d((None, 1)) as a mean: the same numbers, and it exports."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.mean(dim=3, keepdim=True)

    class Recognizer(torch.nn.Module):
        def __init__(self, model: torch.nn.Module) -> None:
            super().__init__()
            self.model = model

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.model(x, None)  # type: ignore[no-any-return]

    recognizer = reader.recognizer
    recognizer.AdaptiveAvgPool = MeanOverHeight()
    with torch.no_grad():
        detector = ov.convert_model(
            ScoreMaps(reader.detector).eval(),
            example_input=torch.zeros(1, 3, 320, 480),
            input=[ov.PartialShape([-1, 3, -1, -1])],
        )
        recognizer_model = ov.convert_model(
            Recognizer(recognizer).eval(),
            example_input=torch.zeros(1, 1, 64, 256),
            input=[ov.PartialShape([-1, 1, 64, -1])],
        )

    # Calibration inputs exactly as easyocr feeds CRAFT: colour page, canvas, normalisation.
    samples = []
    for page in calibration_pages():
        color = np.repeat(page[:, :, None], 3, axis=2)
        canvas, _, _ = resize_aspect_ratio(color, 2560, interpolation=1, mag_ratio=1.0)
        samples.append(np.transpose(normalizeMeanVariance(canvas), (2, 0, 1))[None].astype(np.float32))
    quantized = nncf.quantize(
        detector,
        nncf.Dataset(samples),
        preset=nncf.QuantizationPreset.MIXED,
        subset_size=len(samples),
        fast_bias_correction=True,
    )
    ov.save_model(quantized, str(work / _DETECTOR_XML))
    ov.save_model(recognizer_model, str(work / _RECOGNIZER_XML))


def _validate(work: Path) -> float:
    """Read the golden page with the converted models; refuse them if they read it badly."""
    from docproc.ocr.quality import cer
    from docproc.ocr.synthetic import validation_page

    engine = EasyOcrOpenVinoEngine(("en",), models=work, threads=None)
    image, text = validation_page()
    found = engine.read(image).text
    error = cer(found, text)
    if error > _GOLDEN_MAX_CER:
        raise ConfigurationError(
            f"the converted easyocr models read the golden page with CER {error:.3f} "
            f"(at most {_GOLDEN_MAX_CER}): {found!r}; the conversion is not used"
        )
    return error


class _Detector:
    """Stands in for CRAFT inside easyocr: torch in, torch out, OpenVINO in between."""

    def __init__(self, compiled: Any) -> None:
        self._request = compiled.create_infer_request()

    def eval(self) -> _Detector:
        return self

    def __call__(self, x: Any) -> tuple[Any, None]:
        import torch

        self._request.infer({0: x.numpy()})
        return torch.from_numpy(self._request.get_output_tensor(0).data.copy()), None


class _Recognizer:
    """Stands in for easyocr's recognizer module; easyocr's text input is unused at inference."""

    def __init__(self, compiled: Any) -> None:
        self._request = compiled.create_infer_request()

    def eval(self) -> _Recognizer:
        return self

    def __call__(self, image: Any, text: Any) -> Any:
        import torch

        self._request.infer({0: image.numpy()})
        return torch.from_numpy(self._request.get_output_tensor(0).data.copy())


class EasyOcrOpenVinoEngine(EasyOcrEngine):
    name = "easyocr"
    detect_side = _DETECT_SIDE

    def __init__(self, languages: Sequence[str], *, models: Path, threads: int | None) -> None:
        """``threads`` caps OpenVINO's inference threads (None: OpenVINO's default, every core)."""
        if tuple(languages) != ("en",):
            raise ConfigurationError(
                f"the OpenVINO easyocr engine has converted models for English only, not {list(languages)}; "
                "use engine easyocr-torch for other languages"
            )
        try:
            import openvino as ov
        except ImportError as exc:
            raise ConfigurationError(f"OpenVINO is not installed: {exc}") from exc
        # quantize=False: the torch models are replaced at once, no use quantizing them first.
        super().__init__(languages, gpu=False, quantize=False)
        core = ov.Core()
        config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        bf16 = "BF16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
        try:
            detector = core.compile_model(str(models / _DETECTOR_XML), "CPU", config)
            recognizer = core.compile_model(
                str(models / _RECOGNIZER_XML),
                "CPU",
                {**config, "INFERENCE_PRECISION_HINT": "bf16" if bf16 else "f32"},
            )
        except RuntimeError as exc:
            raise ConfigurationError(f"cannot load the converted easyocr models in {models}: {exc}") from exc
        self._reader.detector = _Detector(detector)
        self._reader.recognizer = _Recognizer(recognizer)
        self.device = "cpu"
        # The inference threads both compiled models really use (the worker's share of cores).
        self.threads = {int(m.get_property("INFERENCE_NUM_THREADS")) for m in (detector, recognizer)}
        log.info(
            "easyocr on OpenVINO: INT8 detector, %s recognizer, threads %s",
            "BF16" if bf16 else "FP32",
            threads,
        )
