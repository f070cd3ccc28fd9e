"""The diffusers generators on tiny *real* pipelines (tests/tiny_pipelines.py), driven through
``cdm_bench.generate``: SD3 with and without T5 and LongCat-Image at 4 NFE with the turbo
sigmas, a student transformer folder, batch-size independence and what generation.json records."""

import hashlib
import json
import math
import shutil

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")

from cdm_bench.generate import generate  # noqa: E402
from cdm_bench.generator import build_generator  # noqa: E402
from cdm_bench.prompts import PromptSet  # noqa: E402

NO_T5 = {"text_encoder_3": None, "tokenizer_3": None}


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _prompts(n=4):
    return PromptSet("t", "1", [{"id": f"p{i}", "prompt": f"a photo of a red car number {i}"} for i in range(n)])


def _run(spec, out, batch_size=4, n=4):
    out = generate(spec, _prompts(n), out, batch_size=batch_size, progress=False)
    return out, json.loads((out / "generation.json").read_text())


def _pngs(out):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((out / "images").glob("*.png"))}


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_sd3_turbo_with_t5_records_shifted_sigmas_and_weights(tiny_sd3_dir, tmp_path):
    out, ident = _run({"generator": "sd3-medium-turbo", "model": str(tiny_sd3_dir), "resolution": 32}, tmp_path / "g")
    prov = ident["provenance"]
    # SD3-Medium's shift 3: s -> 3s / (1 + 2s); [1, .75, .5, .25] -> [1, .9, .75, .5], then the end point 0
    assert prov["effective_sigmas"] == pytest.approx([1.0, 0.9, 0.75, 0.5, 0.0], abs=1e-6)
    assert prov["pipeline_class"] == "StableDiffusion3Pipeline" and prov["model_source"] == "folder"
    assert prov["dtype"] == "float32" and prov["device"] == "cpu"  # dtype auto on CPU
    assert ident["weights_sha256"] == _sha(tiny_sd3_dir / "transformer" / "diffusion_pytorch_model.safetensors")
    g = ident["generator"]
    assert (g["steps"], g["guidance"], g["nfe_total"], g["recipe"]) == (4, 1.0, 4, "cdm")
    assert g["sigmas"] == [1.0, 0.75, 0.5, 0.25] and g["name"] == "sd3-medium-turbo-nfe4"
    images = [np.asarray(__import__("PIL.Image").Image.open(out / "images" / f"p{i}_0.png")) for i in range(4)]
    assert all(im.shape == (32, 32, 3) for im in images) and len({im.tobytes() for im in images}) == 4


def test_sd3_without_t5_loads_with_null_components(tiny_sd3_no_t5_dir, tmp_path):
    spec = {"generator": "sd3-medium-turbo", "model": str(tiny_sd3_no_t5_dir), "resolution": 32,
            "pretrained_kwargs": NO_T5}
    out, ident = _run(spec, tmp_path / "g")
    assert ident["provenance"]["effective_sigmas"] == pytest.approx([1.0, 0.9, 0.75, 0.5, 0.0], abs=1e-6)
    assert ident["generator"]["pretrained_kwargs"] == NO_T5 and len(_pngs(out)) == 4
    gen, _ = build_generator(spec)
    assert gen.pipe.text_encoder_3 is None and gen.pipe.tokenizer_3 is None


def test_sd3_without_t5_and_without_null_components_is_one_line_error(tiny_sd3_no_t5_dir, tmp_path):
    from cdm_bench.errors import SpecError

    with pytest.raises(SpecError, match="text_encoder_3: null") as err:
        _run({"generator": "sd3-medium-turbo", "model": str(tiny_sd3_no_t5_dir), "resolution": 32}, tmp_path / "g")
    assert "\n" not in str(err.value)


def test_longcat_turbo_sigmas_follow_its_dynamic_shift(tiny_longcat_dir, tmp_path):
    out, ident = _run({"generator": "longcat-image-turbo", "model": str(tiny_longcat_dir), "resolution": 32},
                      tmp_path / "g")
    cfg = json.loads((tiny_longcat_dir / "scheduler" / "scheduler_config.json").read_text())
    assert cfg["use_dynamic_shifting"] is True
    # mu interpolates base_shift..max_shift over the image's token count (32 px, VAE /2, 2x2 packing: 64)
    tokens = (32 // 2 // 2) ** 2
    slope = (cfg["max_shift"] - cfg["base_shift"]) / (cfg["max_image_seq_len"] - cfg["base_image_seq_len"])
    mu = cfg["base_shift"] + slope * (tokens - cfg["base_image_seq_len"])
    want = [math.exp(mu) / (math.exp(mu) + (1 / s - 1)) for s in (1.0, 0.75, 0.5, 0.25)] + [0.0]
    assert mu == pytest.approx(1.15)  # LongCat-Image's base_shift == max_shift: the same at every size
    assert ident["provenance"]["effective_sigmas"] == pytest.approx(want, abs=1e-6)
    assert ident["provenance"]["effective_sigmas"][1] == pytest.approx(0.904531, abs=1e-6)
    assert ident["generator"]["call_kwargs"] == {"enable_prompt_rewrite": False}
    assert ident["weights_sha256"] == _sha(tiny_longcat_dir / "transformer" / "diffusion_pytorch_model.safetensors")
    assert len(_pngs(out)) == 4


def test_longcat_text_is_padded_to_512_tokens(tiny_longcat_dir):
    gen, _ = build_generator({"generator": "longcat-image-turbo", "model": str(tiny_longcat_dir), "resolution": 32})
    seen = []
    gen.pipe.transformer.register_forward_pre_hook(
        lambda m, args, kw: seen.append(tuple(kw["encoder_hidden_states"].shape)), with_kwargs=True)
    images = gen.generate(['a sign that says "hello world"', "a cat"], [1, 2])
    assert images.shape == (2, 32, 32, 3) and images.dtype == np.uint8
    assert set(seen) == {(1, 512, 32)} and len(seen) == 2 * 4  # micro_batch 1: one call per sample


def test_student_transformer_folder_matches_a_pipeline_saved_with_it(tiny_sd3_dir, tmp_path):
    from diffusers import SD3Transformer2DModel, StableDiffusion3Pipeline

    base = SD3Transformer2DModel.from_pretrained(tiny_sd3_dir / "transformer")
    torch.manual_seed(7)
    student = SD3Transformer2DModel.from_config(base.config).eval()  # different weights, same config
    student.save_pretrained(tmp_path / "student")
    pipe = StableDiffusion3Pipeline.from_pretrained(tiny_sd3_dir, transformer=student)
    pipe.save_pretrained(tmp_path / "merged")
    common = {"generator": "sd3-medium-turbo", "resolution": 32}
    a, ident = _run({**common, "model": str(tiny_sd3_dir), "transformer": str(tmp_path / "student")}, tmp_path / "a")
    b, _ = _run({**common, "model": str(tmp_path / "merged")}, tmp_path / "b")
    c, _ = _run({**common, "model": str(tiny_sd3_dir)}, tmp_path / "c")
    assert _pngs(a) == _pngs(b) and len(_pngs(a)) == 4
    assert set(_pngs(a).values()).isdisjoint(_pngs(c).values())  # the student really was used
    assert ident["weights_sha256"] == _sha(tmp_path / "student" / "diffusion_pytorch_model.safetensors")
    assert ident["provenance"]["transformer"] == str(tmp_path / "student")


@pytest.mark.parametrize("which", ["sd3-cfg", "sd3-no-t5", "longcat-cfg", "longcat-turbo"])
def test_images_do_not_depend_on_batch_size(which, tiny_sd3_dir, tiny_sd3_no_t5_dir, tiny_longcat_dir, tmp_path):
    spec = {"sd3-cfg": {"generator": "sd3-medium", "model": str(tiny_sd3_dir), "nfe": 4},
            "sd3-no-t5": {"generator": "sd3-medium", "model": str(tiny_sd3_no_t5_dir), "nfe": 4,
                          "pretrained_kwargs": NO_T5},
            "longcat-cfg": {"generator": "longcat-image", "model": str(tiny_longcat_dir), "nfe": 4},
            "longcat-turbo": {"generator": "longcat-image-turbo", "model": str(tiny_longcat_dir)}}[which]
    spec["resolution"] = 32
    one, _ = _run(spec, tmp_path / "b1", batch_size=1, n=5)
    four, _ = _run(spec, tmp_path / "b4", batch_size=4, n=5)
    assert _pngs(one) == _pngs(four) and len(set(_pngs(one).values())) == 5


def test_fixed_micro_batch_pads_the_last_chunk(tiny_longcat_dir):
    gen, spec = build_generator({"generator": "longcat-image", "model": str(tiny_longcat_dir), "nfe": 2,
                                 "resolution": 32, "micro_batch": 4})
    calls = []
    real = gen._call
    gen._call = lambda p, s: calls.append(len(p)) or real(p, s)
    prompts, seeds = [f"thing {i}" for i in range(5)], [3, 1, 4, 1, 5]
    together = gen.generate(prompts, seeds)
    alone = np.concatenate([gen.generate([p], [s]) for p, s in zip(prompts, seeds)])
    assert calls == [4, 4] + [4] * 5 and spec["micro_batch"] == 4
    assert np.array_equal(together, alone)


def test_model_from_the_hf_cache_records_its_commit(tiny_sd3_dir, tmp_path):
    """A hub id resolved in a (local) HF cache: the snapshot's commit is recorded, and the weights
    hash is the cache's blob name (the cache stores each LFS file under its sha256)."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "cache" / "models--org--tiny-sd3"
    snap = repo / "snapshots" / commit
    for f in sorted(p for p in tiny_sd3_dir.rglob("*") if p.is_file()):
        blob = repo / "blobs" / _sha(f)
        blob.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f, blob)
        link = snap / f.relative_to(tiny_sd3_dir)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(blob)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    spec = {"generator": "sd3-medium-turbo", "model": "org/tiny-sd3", "resolution": 32,
            "pretrained_kwargs": {"cache_dir": str(tmp_path / "cache")}}
    out, ident = _run(spec, tmp_path / "g", n=2)
    assert ident["provenance"]["model_source"] == "hf-cache" and ident["provenance"]["model_commit"] == commit
    assert ident["weights_sha256"] == _sha(tiny_sd3_dir / "transformer" / "diffusion_pytorch_model.safetensors")
    direct, _ = _run({"generator": "sd3-medium-turbo", "model": str(tiny_sd3_dir), "resolution": 32},
                     tmp_path / "d", n=2)
    assert _pngs(out) == _pngs(direct)


def test_attention_backend_is_set_on_the_transformer(tiny_longcat_dir, tiny_sd3_dir):
    from cdm_bench.errors import SpecError

    spec = {"generator": "longcat-image-turbo", "model": str(tiny_longcat_dir), "resolution": 32}
    native, _ = build_generator({**spec, "attention_backend": "native"})
    default, _ = build_generator(spec)
    backends = {str(getattr(m.processor, "_attention_backend", None)) for m in native.pipe.transformer.modules()
                if getattr(m, "processor", None) is not None}
    assert backends == {"AttentionBackendName.NATIVE"}
    assert np.array_equal(native.generate(["a cat"], [5]), default.generate(["a cat"], [5]))
    sd3, _ = build_generator({"generator": "sd3-medium-turbo", "model": str(tiny_sd3_dir),
                              "attention_backend": "native"})
    with pytest.raises(SpecError, match=r"JointAttnProcessor2_0.*leave attention_backend unset"):
        sd3.pipe
