"""The scored images' decoder: libspng where the PNG is 8-bit truecolour, PIL otherwise, the
pixels PIL's ``convert("RGB")`` in every case (generated inputs over modes, sizes, encoder
options), and broken files still refused."""

import io

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from cdm_bench import imagecodec
from cdm_bench.imagecodec import decode_pil, decode_rgb, is_rgb8_png

MODES = ["RGB", "RGBA", "L", "LA", "P", "I;16", "1"]


def encode(arr: np.ndarray, mode: str, **options) -> bytes:
    im = Image.fromarray(arr, "RGB")
    if mode == "I;16":
        im = Image.fromarray(arr[..., 0].astype(np.uint16) * 257)
    elif mode != "RGB":
        im = im.convert(mode)
    buf = io.BytesIO()
    im.save(buf, format="PNG", **options)
    return buf.getvalue()


@st.composite
def pngs(draw):
    h, w = draw(st.integers(1, 40)), draw(st.integers(1, 40))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    smooth = draw(st.booleans())  # photo-like (compresses) or noise
    if smooth:
        arr = np.clip(np.linspace(0, 255, h * w * 3).reshape(h, w, 3) + rng.integers(-4, 5, (h, w, 3)), 0, 255)
    else:
        arr = rng.integers(0, 256, (h, w, 3))
    mode = draw(st.sampled_from(MODES))
    options = {"compress_level": draw(st.integers(0, 9)), "optimize": draw(st.booleans())}
    if draw(st.booleans()):  # ancillary chunks that must not change the pixels: text and a gAMA of 1/2.2
        info = PngInfo()
        info.add_text("prompt", "a cat")
        info.add(b"gAMA", (45455).to_bytes(4, "big"))
        options["pnginfo"] = info
    if mode == "RGB" and draw(st.booleans()):
        options["transparency"] = tuple(int(v) for v in arr[0, 0])  # a tRNS chunk, which convert("RGB") ignores
    return encode(arr.astype(np.uint8), mode, **options), mode


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pngs())
def test_decoded_pixels_are_pils_for_every_kind_of_png(case):
    data, mode = case
    got, want = decode_rgb(data), decode_pil(data)
    assert got.dtype == np.uint8 and got.shape == want.shape and got.shape[2] == 3
    assert np.array_equal(got, want)
    assert is_rgb8_png(data) == (mode == "RGB")


def test_the_fast_path_is_taken_for_what_generate_writes(tmp_path, monkeypatch):
    from cdm_bench.rundir import RunDir

    if imagecodec._spng is None:
        pytest.skip("pyspng is not installed: every image takes the PIL path")
    rd = RunDir(tmp_path)
    img = np.random.default_rng(0).integers(0, 256, (24, 17, 3), dtype=np.uint8)
    data = rd.write_png("a.png", img)
    assert is_rgb8_png(data)
    calls = []
    monkeypatch.setattr(imagecodec, "decode_pil", lambda d: calls.append(d) or decode_pil(d))
    assert np.array_equal(decode_rgb(data), img) and calls == []
    monkeypatch.setattr(imagecodec, "_spng", None)  # without pyspng: PIL, same pixels
    assert np.array_equal(decode_rgb(data), img) and len(calls) == 1


@pytest.mark.parametrize("keep", [0.02, 0.3, 0.9])
def test_a_png_cut_inside_its_pixels_is_an_error_not_an_image(keep):
    img = np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    data = encode(img, "RGB", compress_level=0)
    with pytest.raises(Exception):
        decode_rgb(data[:int(len(data) * keep)])


def test_other_formats_go_through_pil():
    img = np.random.default_rng(2).integers(0, 256, (8, 9, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="BMP")
    assert not is_rgb8_png(buf.getvalue())
    assert np.array_equal(decode_rgb(buf.getvalue()), img)
