"""A 16-bit page of 88 megapixels (legal under max_page_pixels) is read and prepared for OCR
within a memory cap, and the page budget in bytes depends on bit depth.

The preparation runs in a fresh process under RLIMIT_AS (its address space after imports plus
1.5 GiB), so a conversion that multiplies memory fails there instead of swapping the machine,
and its peak resident memory is measured with getrusage. Issue 9 measured 3.75 GB for one such
page (the old conversion took 26 bytes per pixel); the bound here is 1 GiB.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from docproc import loader
from docproc.errors import TooLargeError
from docproc.settings import Settings

WIDTH, HEIGHT = 8000, 11000  # 88 megapixels, 176 MB of 16-bit samples
CAP_BYTES = int(1.5 * 2**30)
PEAK_BOUND = 2**30

PREPARE = r"""
import json, resource, sys
from pathlib import Path

from docproc import imaging, loader
from docproc.settings import Settings

def vm_size() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmSize")

cap = vm_size() + int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
settings = Settings(detect_orientation=False)
path = Path(sys.argv[1])
info = loader.inspect(path, settings)
[page] = loader.iter_pages(path, info.media_type, settings)
mode = page.image.mode
prepared = imaging.prepare_page(page.image, settings)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({
    "mode": mode,
    "shape": list(prepared.image.shape),
    "dtype": str(prepared.image.dtype),
    "ink": float((prepared.image < 128).mean()),
    "paper": int(prepared.image.max()),
    "peak_growth": peak - before,
}))
"""


@pytest.fixture(scope="module")
def deep_page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Light paper (16-bit 60000) with dark 'text lines' (16-bit 3000)."""
    samples = np.full((HEIGHT, WIDTH), 60000, dtype=np.uint16)
    for top in range(600, HEIGHT - 600, 180):
        samples[top : top + 60, 600 : WIDTH - 600 : 2] = 3000
    path = tmp_path_factory.mktemp("deep") / "scan-16bit.png"
    Image.fromarray(samples).save(path, format="PNG", compress_level=1)
    return path


def test_a_16_bit_90_megapixel_page_is_prepared_within_a_memory_cap(deep_page: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-c", PREPARE, str(deep_page), str(CAP_BYTES)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert run.returncode == 0, f"failed under a {CAP_BYTES / 2**30:.1f} GiB cap: {run.stderr[-2000:]}"
    facts = json.loads(run.stdout)
    print(f"peak resident growth preparing the page: {facts['peak_growth'] / 2**20:.0f} MiB")
    assert facts["mode"] == "I;16"
    assert facts["dtype"] == "uint8"
    assert max(facts["shape"]) == Settings().ocr_max_side
    assert facts["paper"] == round(60000 / 257)  # 16-bit samples scaled, not clipped at 255
    assert 0.02 < facts["ink"] < 0.5
    assert facts["peak_growth"] < PEAK_BOUND, f"peak grew by {facts['peak_growth'] / 2**20:.0f} MiB"


def test_the_page_budget_in_bytes_depends_on_bit_depth(deep_page: Path, tmp_path: Path) -> None:
    pixels = WIDTH * HEIGHT
    # The same pixel count passes at 8 bits and is refused at 16 bits under the same budget.
    budget = Settings(max_page_bytes=pixels * 2 - 1)
    with pytest.raises(TooLargeError, match=r"mode I;16 \(2 bytes per pixel\).*max_page_bytes") as info:
        loader.inspect(deep_page, budget)
    assert info.value.reason == "too_large"
    assert info.value.page == 1
    with Image.open(deep_page) as image:
        image.convert("L").save(tmp_path / "scan-8bit.png", format="PNG", compress_level=1)
    assert loader.inspect(tmp_path / "scan-8bit.png", budget).page_count == 1
    assert loader.bytes_per_pixel("RGB") == 4
    assert loader.bytes_per_pixel("F") == 4
    assert loader.bytes_per_pixel("1") == 1
