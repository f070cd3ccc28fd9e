"""PNG bytes -> uint8 (H, W, 3): the one decoder every scored image goes through.

The images generate writes are 8-bit truecolour PNGs. Those are decoded with libspng (pyspng),
which takes about half PIL's time at 512-1024 px and a tenth for tiny images, where PIL's
per-file set-up dominates (measured in benchmarks/results/eval_overhead.md). Every other PNG
(grey, palette, alpha, 16-bit) and any file pyspng cannot read goes through PIL's
``convert("RGB")``, so the pixels are PIL's in every case (a generated-input test holds the two
paths equal). libspng does not stop on a bad chunk CRC: callers decode only bytes whose sha256
matched the manifest, or that PIL's ``verify`` accepted (evaluate's input check).
"""

from __future__ import annotations

import io

import numpy as np

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

try:  # an optional speed-up: without it every image takes the PIL path
    import pyspng as _spng
except ImportError:  # pragma: no cover - pyspng is a core dependency where it has a wheel
    _spng = None


def is_rgb8_png(data: bytes) -> bool:
    """True for a PNG whose header says 8-bit truecolour without alpha (colour type 2)."""
    return (len(data) >= 33 and data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR"
            and data[24] == 8 and data[25] == 2)


def decode_pil(data: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))


def decode_rgb(data: bytes) -> np.ndarray:
    """uint8 (H, W, 3) of an image file's bytes (PNG fast path; any format PIL reads otherwise)."""
    if _spng is not None and is_rgb8_png(data):
        try:
            arr = _spng.load(data, format="RGB")
        except Exception:  # noqa: BLE001 - let PIL decode it, or raise its own error for a broken file
            return decode_pil(data)
        if arr.ndim == 3 and arr.shape[2] == 3 and arr.dtype == np.uint8:
            return arr
    return decode_pil(data)
