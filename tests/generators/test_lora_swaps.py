"""LoRA, scheduler and VAE keys of the diffusers generator on a tiny random SD3 pipeline, with
known answers: a LoRA at scale s gives the same images fused and unfused, equal to merging
``s * (alpha / r) * B @ A`` into the weights by hand, in the diffusers and the peft layout; the
scheduler and VAE swaps give the images of the same pipeline built by hand; the named baselines
fail offline in one line naming every missing repo and file."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

diffusers = pytest.importorskip("diffusers")
peft = pytest.importorskip("peft")

from cdm_bench.generator import build_generator  # noqa: E402
from cdm_bench.generators.diffusers_generic import DiffusersGenerator  # noqa: E402

TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
R, ALPHA = 2, 4


def _pipe(folder):
    return diffusers.StableDiffusion3Pipeline.from_pretrained(folder).to("cpu")


def _images(pipe) -> np.ndarray:
    pipe.set_progress_bar_config(disable=True)
    with torch.inference_mode():
        return pipe(prompt=["a red circle", "two blue squares"], num_inference_steps=2, guidance_scale=1.0,
                    height=32, width=32, output_type="np",
                    generator=[torch.Generator().manual_seed(s) for s in (0, 1)]).images


@pytest.fixture(scope="module")
def lora_files(tiny_sd3_dir, tmp_path_factory):
    """A random LoRA on the tiny transformer, saved in the diffusers and the peft layout, and its
    (module name -> A, B) weights."""
    from peft import LoraConfig, get_peft_model_state_dict
    from safetensors.torch import save_file

    out = tmp_path_factory.mktemp("lora")
    pipe = _pipe(tiny_sd3_dir)
    torch.manual_seed(7)
    cfg = LoraConfig(r=R, lora_alpha=ALPHA, target_modules=TARGETS, init_lora_weights=False)
    pipe.transformer.add_adapter(cfg, adapter_name="x")
    state = get_peft_model_state_dict(pipe.transformer, adapter_name="x")
    state = {k: v * 0.5 for k, v in state.items()}
    meta = {"r": R, "lora_alpha": ALPHA, "target_modules": TARGETS}  # (without it diffusers reads alpha = r)
    diffusers.StableDiffusion3Pipeline.save_lora_weights(out / "diffusers", transformer_lora_layers=state,
                                                         transformer_lora_adapter_metadata=meta)
    (out / "peft").mkdir()
    save_file({f"base_model.model.{k}": v.contiguous() for k, v in state.items()}, str(out / "peft" / "adapter_model.safetensors"))
    conf = cfg.to_dict()
    conf["target_modules"] = sorted(conf["target_modules"])
    (out / "peft" / "adapter_config.json").write_text(json.dumps(conf, default=str))
    ab = {}
    for k, v in state.items():
        mod, _, rest = k.rpartition(".lora_")
        ab.setdefault(mod, {})[rest.split(".")[0]] = v
    return out, ab


def _by_hand(folder, ab: dict, scale: float):
    pipe = _pipe(folder)
    mods = dict(pipe.transformer.named_modules())
    with torch.no_grad():
        for name, w in ab.items():
            mods[name].weight += scale * (ALPHA / R) * w["B"] @ w["A"]
    return pipe


def _gen(folder, **keys):
    gen, _ = build_generator({"generator": "diffusers", "model": str(folder), "nfe": 2, "guidance": 1.0,
                              "resolution": 32, **keys})
    return gen


@pytest.mark.parametrize("layout", ["diffusers", "peft"])
def test_a_lora_fused_and_unfused_equals_the_hand_merged_weights(tiny_sd3_dir, lora_files, layout):
    out, ab = lora_files
    scale = 0.7
    entry = {"path": str(out / layout), "scale": scale, "format": layout}
    want = _images(_by_hand(tiny_sd3_dir, ab, scale))
    base = _images(_pipe(tiny_sd3_dir))
    assert np.abs(want - base).max() > 1e-3  # the LoRA changes the images
    for fuse in (False, True):
        gen = _gen(tiny_sd3_dir, lora=[{**entry, "fuse": fuse}])
        got = _images(gen.pipe)
        np.testing.assert_allclose(got, want, atol=1e-5)
        has_lora = any("lora" in n for n, _ in gen.pipe.transformer.named_parameters())
        assert has_lora is not fuse  # fused: the LoRA layers are gone, the weights hold it


def test_two_loras_one_fused_one_live_and_the_files_hashes_are_recorded(tiny_sd3_dir, lora_files, tmp_path):
    from cdm_bench.generate import generate

    out, ab = lora_files
    loras = [{"path": str(out / "diffusers"), "scale": 0.3, "fuse": True, "adapter_name": "a"},
             {"path": str(out / "peft"), "format": "peft", "scale": 0.4, "adapter_name": "b"}]
    want = _images(_by_hand(tiny_sd3_dir, ab, 0.7))
    np.testing.assert_allclose(_images(_gen(tiny_sd3_dir, lora=loras).pipe), want, atol=1e-5)
    run = generate({"generator": "diffusers", "model": str(tiny_sd3_dir), "nfe": 2, "guidance": 1.0,
                    "resolution": 32, "lora": loras}, "smoke", tmp_path / "g", limit=1, progress=False)
    gen = json.loads((run / "generation.json").read_text())
    assert set(gen["provenance"]["swap_sha256"]) == {"lora:a", "lora:b"}
    assert gen["generator"]["lora"][0]["scale"] == 0.3 and len(gen["generator"]["swap_sha256"]["lora:b"]) == 64


def test_scheduler_and_vae_swaps_equal_the_pipeline_built_by_hand(tiny_sd3_dir, tmp_path):
    sys_path = str(tiny_sd3_dir.parent.parent)  # noqa: F841 (tiny_pipelines is on sys.path via conftest)
    from tiny_pipelines import _vae

    other = _vae(seed=99)
    other.save_pretrained(tmp_path / "vae")
    sched_dir = tmp_path / "sched"
    diffusers.DPMSolverMultistepScheduler(use_flow_sigmas=True, prediction_type="flow_prediction",
                                          flow_shift=2.0).save_pretrained(sched_dir / "scheduler")
    gen = _gen(tiny_sd3_dir, scheduler={"class": "DPMSolverMultistepScheduler", "from": str(sched_dir),
                                         "config": {"flow_shift": 6}},
               vae={"class": "AutoencoderKL", "path": str(tmp_path / "vae"), "config": {"shift_factor": 0.25}})
    hand = _pipe(tiny_sd3_dir)
    hand.scheduler = diffusers.DPMSolverMultistepScheduler.from_config(
        {**diffusers.DPMSolverMultistepScheduler.load_config(str(sched_dir / "scheduler")), "flow_shift": 6})
    hand.vae = diffusers.AutoencoderKL.from_pretrained(tmp_path / "vae")
    hand.vae.register_to_config(shift_factor=0.25)
    got = _images(gen.pipe)
    assert type(gen.pipe.scheduler).__name__ == "DPMSolverMultistepScheduler" and gen.pipe.scheduler.config.flow_shift == 6
    assert gen.pipe.vae.config.shift_factor == 0.25
    np.testing.assert_allclose(got, _images(hand), atol=1e-6)
    assert np.abs(got - _images(_pipe(tiny_sd3_dir))).max() > 1e-3


@pytest.mark.parametrize("bad,match", [
    ({"lora": [{"scale": 1}]}, "path"), ({"lora": [{"path": "x", "fuse": "yes"}]}, "fuse"),
    ({"lora": [{"path": "x", "sacle": 1}]}, "unknown keys"), ({"lora": [{"path": "x", "format": "kohya"}]}, "format"),
    ({"lora": [{"path": "a", "adapter_name": "n"}, {"path": "b", "adapter_name": "n"}]}, "twice"),
    ({"scheduler": {"config": {}}}, "scheduler.class"), ({"vae": {"class": "AutoencoderTiny"}}, "vae.path"),
])
def test_bad_swap_keys_are_one_line_errors(tiny_sd3_dir, bad, match):
    from cdm_bench.errors import SpecError

    with pytest.raises(SpecError, match=match):
        _gen(tiny_sd3_dir, **bad)


def test_an_unknown_scheduler_class_says_where_it_comes_from(tiny_sd3_dir):
    from cdm_bench.errors import SpecError

    gen = _gen(tiny_sd3_dir, scheduler={"class": "FlashFlowMatchEulerDiscreteScheduler"})
    with pytest.raises(SpecError, match="not in diffusers .*module:Class"):
        gen.pipe  # noqa: B018


@pytest.mark.parametrize("name,files", [
    ("sd3-hypersd", ["ByteDance/Hyper-SD: Hyper-SD3-8steps-CFG-lora.safetensors"]),
    ("sd3-tdm", ["Luo-Yihong/TDM_sd3_lora", "madebyollin/taesd3", "Efficient-Large-Model/Sana_1600M_1024px_BF16_diffusers"]),
    ("sd3-flash", ["jasperai/flash-sd3: adapter_config.json"]),
])
def test_the_named_baselines_fail_offline_in_one_line_naming_every_file(name, files, tmp_path, monkeypatch):
    from cdm_bench.errors import MissingWeightsError

    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    gen, spec = build_generator(name)
    with pytest.raises(MissingWeightsError) as err:
        gen.check_ready()
    text = str(err.value)
    assert "\n" not in text and "stabilityai/stable-diffusion-3-medium-diffusers" in text
    assert all(f in text for f in files), text
    assert isinstance(gen, DiffusersGenerator) and gen.lora
