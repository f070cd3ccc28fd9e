"""Specs of the diffusers generators (no weights loaded): defaults, validation, the per-rank
device, and the one-line missing-weights error of every registered real generator."""

import pytest

from cdm_bench.cli import main
from cdm_bench.errors import MissingWeightsError, SpecError
from cdm_bench.generator import build_generator

pytest.importorskip("diffusers")

REAL = {"sd3-medium": "stabilityai/stable-diffusion-3-medium-diffusers",
        "sd3-medium-turbo": "byliutao/stable-diffusion-3-medium-turbo",
        "longcat-image": "meituan-longcat/LongCat-Image",
        "longcat-image-turbo": "byliutao/Longcat-Image-Turbo"}


@pytest.fixture
def empty_hf_cache(tmp_path, monkeypatch):
    """Offline, with an HF cache that holds nothing (whatever this machine has cached)."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    return tmp_path


@pytest.mark.parametrize("name", sorted(REAL))
def test_named_defaults_build_without_weights(name):
    gen, spec = build_generator(name)  # nothing is loaded or looked up
    assert spec["model"] == REAL[name] and spec["resolution"] == 1024 and spec["dtype"] == "float32"
    turbo = name.endswith("turbo")
    assert (spec["steps"], spec["guidance"]) == ((4, 1.0) if turbo else (28 if name == "sd3-medium" else 50, 4.5))
    assert spec["sigmas"] == ([1.0, 0.75, 0.5, 0.25] if turbo else None)
    assert spec["recipe"] == ("cdm" if turbo else "teacher") and spec["micro_batch"] == 1
    assert gen.pipeline_class == ("LongCatImagePipeline" if "longcat" in name else "StableDiffusion3Pipeline")
    if "longcat" in name:
        assert spec["call_kwargs"] == {"enable_prompt_rewrite": False}


def test_every_default_is_overridable():
    _, spec = build_generator({"generator": "sd3-medium", "nfe": 50, "guidance": 7.0, "resolution": 512,
                               "model": "/some/dir", "dtype": "bfloat16"})
    assert (spec["steps"], spec["nfe_total"], spec["cfg"], spec["resolution"]) == (50, 100, 7.0, 512)
    assert spec["name"] == "sd3-medium-nfe100-cfg7" and spec["dtype"] == "bfloat16"
    _, spec = build_generator({"generator": "sd3-medium-turbo", "nfe": 8, "sigmas": None})
    assert spec["steps"] == 8 and spec["sigmas"] is None
    _, spec = build_generator({"generator": "longcat-image-turbo", "enable_prompt_rewrite": True})
    assert spec["call_kwargs"] == {"enable_prompt_rewrite": True}


@pytest.mark.parametrize("spec, match", [
    ({"generator": "sd3-medium", "stepz": 4}, r"unknown key\(s\) \['stepz'\]"),
    ({"generator": "sd3-medium", "enable_prompt_rewrite": True}, r"unknown key\(s\) \['enable_prompt_rewrite'\]"),
    ({"generator": "diffusers", "model": "a/b", "offload": "gpu"}, "offload must be one of"),
    ({"generator": "diffusers", "model": "a/b", "attention_backend": "fast"}, "attention_backend must be one of"),
    ({"generator": "diffusers", "model": "a/b", "dtype": "fp8"}, "dtype must be 'auto' or one of"),
    ({"generator": "sd3-medium-turbo", "nfe": 8}, "sigmas has 4 entries but nfe is 8"),
    ({"generator": "diffusers", "model": "a/b", "sigmas": [1.0, 2.0]}, r"sigmas must be a list of numbers in \[0, 1\]"),
    ({"generator": "diffusers", "model": "a/b", "micro_batch": 0}, "micro_batch must be between 1 and 1,024"),
    ({"generator": "diffusers"}, "`model`.*is required"),
    ({"generator": "sd3-medium", "pretrained_kwargs": {"torch_dtype": "float16"}}, "use the `dtype` spec key"),
    ({"generator": "longcat-image", "enable_prompt_rewrite": "yes"}, "enable_prompt_rewrite must be true or false"),
])
def test_bad_specs_are_rejected(spec, match):
    with pytest.raises(SpecError, match=match):
        build_generator(spec)


def test_attention_backend_is_validated_and_kept():
    _, spec = build_generator({"generator": "sd3-medium", "attention_backend": "native"})
    assert spec["attention_backend"] == "native"


def test_device_follows_local_rank(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("LOCAL_RANK", "3")
    gen, spec = build_generator("sd3-medium")
    assert gen.device == "cuda:3" and spec["dtype"] == "bfloat16"  # dtype auto on CUDA
    assert build_generator({"generator": "sd3-medium", "device": "cuda"})[0].device == "cuda:3"
    assert build_generator({"generator": "sd3-medium", "device": "cuda:1"})[0].device == "cuda:1"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert build_generator("sd3-medium")[0].device == "cpu"


def test_offload_needs_cuda(tiny_sd3_dir):
    gen, _ = build_generator({"generator": "sd3-medium", "model": str(tiny_sd3_dir), "offload": "model"})
    with pytest.raises(SpecError, match="offload: model needs a CUDA device"):
        gen.generate(["a"], [0])


@pytest.mark.parametrize("name", sorted(REAL) + ["diffusers"])
def test_missing_weights_offline_is_one_line_exit_2_and_writes_nothing(name, empty_hf_cache, capsys):
    repo = REAL.get(name, "org/not-downloaded")
    gen = name if name != "diffusers" else f"{empty_hf_cache}/g.yaml"
    if name == "diffusers":
        (empty_hf_cache / "g.yaml").write_text(f"generator: diffusers\nmodel: {repo}\n")
    (empty_hf_cache / "p.txt").write_text("a cat\n")
    out = empty_hf_cache / "out"
    rc = main(["generate", "--generator", gen, "--prompts", str(empty_hf_cache / "p.txt"), "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and not out.exists()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert repr(repo) in err and f"huggingface-cli download {repo} --local-dir DIR" in err
    assert "`model: DIR`" in err and "HF_HOME" in err


def test_missing_folders_are_named(tmp_path, empty_hf_cache, monkeypatch):
    from cdm_bench.generate import generate

    monkeypatch.chdir(tmp_path.parent)  # "<tmp_path.name>/student": a relative path, not a hub id
    for spec, match in [({"generator": "sd3-medium", "model": str(tmp_path / "nope")},
                         "model folder .*nope.* does not exist"),
                        ({"generator": "sd3-medium", "model": str(tmp_path)}, "no model_index.json"),
                        ({"generator": "diffusers", "model": "./rel/dir"}, "model folder './rel/dir' does not exist"),
                        ({"generator": "diffusers", "model": f"{tmp_path.name}/student"},
                         "model folder .* does not exist")]:
        with pytest.raises(MissingWeightsError, match=match):
            generate(spec, "toy-small", tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_missing_student_folder_is_named(tiny_sd3_dir, tmp_path):
    from cdm_bench.generate import generate

    spec = {"generator": "sd3-medium-turbo", "model": str(tiny_sd3_dir), "transformer": str(tmp_path / "student")}
    with pytest.raises(MissingWeightsError, match="transformer folder .*student.* has no config.json"):
        generate(spec, "toy-small", tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
