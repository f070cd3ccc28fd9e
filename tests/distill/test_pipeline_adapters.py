"""The SD3 and LongCat distillation adapters on tiny real pipelines (random weights, offline).

Known answer: Euler sampling with the adapter's velocities (its conditions, position ids, timestep
scaling, packing and CFG) along its effective sigmas reproduces the diffusers pipeline itself.
"""

import pytest
import torch

from cdm_bench.distill.adapter import build_adapter
from cdm_bench.distill.init import build_working_copies
from cdm_bench.errors import MissingWeightsError

TURBO = [1.0, 0.75, 0.5, 0.25]
NO_T5 = {"text_encoder_3": None, "tokenizer_3": None}


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(params=["sd3", "sd3-no-t5", "longcat"])
def case(request, tiny_sd3_dir, tiny_sd3_no_t5_dir, tiny_longcat_dir):
    path, name, extra = {"sd3": (tiny_sd3_dir, "sd3", {}),
                         "sd3-no-t5": (tiny_sd3_no_t5_dir, "sd3", {"pretrained_kwargs": NO_T5}),
                         "longcat": (tiny_longcat_dir, "longcat", {})}[request.param]
    adapter = build_adapter(name, pretrained=str(path), prompts="smoke", resolution=32, **extra)
    return request.param, path, adapter, extra


def _pipeline(name, path, extra):
    from diffusers import LongCatImagePipeline, StableDiffusion3Pipeline

    cls = LongCatImagePipeline if name == "longcat" else StableDiffusion3Pipeline
    pipe = cls.from_pretrained(str(path), local_files_only=True, **extra.get("pretrained_kwargs", {}))
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.parametrize("guidance", [1.0, 3.0])
def test_adapter_sampling_equals_the_pipeline(case, guidance):
    name, path, adapter, extra = case
    teacher = adapter.load_teacher()
    prompts = ["a red cube on a table", "two cats"]
    noise = adapter.sample_noise(2, torch.Generator().manual_seed(3), teacher)
    sigmas = adapter.effective_sigmas(torch.tensor(TURBO))
    cond = adapter.encode_prompts(prompts)
    x = noise.clone()
    with torch.no_grad():
        for i, s in enumerate(sigmas):
            nxt = sigmas[i + 1] if i + 1 < len(sigmas) else torch.tensor(0.0)
            v = adapter.velocity(teacher, x, s.repeat(2), cond, guidance=guidance)
            x = x + (nxt - s) * v
    kwargs = {"enable_cfg_renorm": False, "enable_prompt_rewrite": False} if name == "longcat" else {}
    out = _pipeline(name, path, extra)(prompt=prompts, latents=noise, sigmas=TURBO, num_inference_steps=4,
                                       guidance_scale=guidance, height=32, width=32, output_type="latent",
                                       **kwargs).images
    assert out.shape == x.shape
    assert torch.allclose(out.float(), x, atol=2e-5), float((out.float() - x).abs().max())
    assert float(x.std()) > 0.1  # not a trivially zero model


def test_effective_sigmas_are_the_schedulers(case):
    name, _, adapter, _ = case
    got = adapter.effective_sigmas(torch.tensor(TURBO))
    s = torch.tensor(TURBO)
    if name.startswith("sd3"):
        assert adapter.shift == 3.0
        assert torch.allclose(got, torch.tensor([1.0, 0.9, 0.75, 0.5]), atol=1e-6)
    else:  # LongCat: dynamic shift exp(mu) / (exp(mu) + (1 / s - 1)), mu from the 8 x 8 token grid
        cfg = adapter.scheduler.config
        slope = (cfg["max_shift"] - cfg["base_shift"]) / (cfg["max_image_seq_len"] - cfg["base_image_seq_len"])
        mu = cfg["base_shift"] + slope * (64 - cfg["base_image_seq_len"])
        want = torch.exp(torch.tensor(mu)) / (torch.exp(torch.tensor(mu)) + (1 / s - 1))
        assert torch.allclose(got, want, atol=1e-5)


def test_prompt_embeddings_are_cached_per_prompt(case, monkeypatch):
    _, _, adapter, _ = case
    adapter.prompt_cache = 2
    first = adapter.encode_prompts(["a", "b"])
    calls = []
    real = adapter._encode
    monkeypatch.setattr(adapter, "_encode", lambda ps: calls.append(list(ps)) or real(ps))
    again = adapter.encode_prompts(["b", "a", "b"])
    assert calls == []
    for key in first:
        assert torch.equal(again[key][1], first[key][0]) and torch.equal(again[key][0], first[key][1])
    adapter.encode_prompts(["c"])  # evicts the least recently used ("a")
    adapter.encode_prompts(["a"])
    assert calls == [["c"], ["a"]]


def test_working_copies_load_the_teacher_once(case, monkeypatch):
    _, _, adapter, _ = case
    loads = []
    real = adapter.load_teacher_state
    monkeypatch.setattr(adapter, "load_teacher_state", lambda: loads.append(1) or real())
    spec = adapter.teacher_spec()
    models = build_working_copies(adapter, spec, rank=0, world=1, device=torch.device("cpu"),
                                  gradient_checkpointing=True)
    assert loads == [1]
    reference = adapter.load_teacher().state_dict()
    assert {p.dtype for p in models["teacher"].parameters()} == {torch.bfloat16}
    for role in ("student", "fake", "ema"):
        state = models[role].state_dict()
        assert all(torch.equal(state[k], v) for k, v in reference.items()), role
        assert all(p.dtype == torch.float32 for p in models[role].parameters())
    assert all(p.requires_grad for p in models["student"].parameters())
    assert not any(p.requires_grad for p in models["teacher"].parameters())
    assert models["student"].is_gradient_checkpointing and not models["teacher"].is_gradient_checkpointing
    assert not any(p.is_meta for m in models.values() for p in m.parameters())


@pytest.mark.parametrize("name", ["sd3", "longcat"])
def test_missing_weights_is_one_line_naming_the_repo(name, tmp_path):
    adapter = build_adapter(name, pretrained="someone/not-in-the-cache")
    with pytest.raises(MissingWeightsError) as err:
        adapter.teacher_spec()
    msg = str(err.value)
    assert "\n" not in msg and "someone/not-in-the-cache" in msg and "--local-dir" in msg
    with pytest.raises(MissingWeightsError):
        build_adapter(name, pretrained=str(tmp_path / "missing")).encode_prompts(["x"])
