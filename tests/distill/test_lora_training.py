"""LoRA students and fake teachers on one frozen base (cdm_bench/distill/lora.py): the paper's LoRA
recipes (recipes/{sd3_medium,longcat}/*_lora.yaml) on tiny SD3 / LongCat pipelines train, resume
exactly, run under 2-process torchrun FSDP2, export as diffusers LoRAs that reload with diffusers'
own loaders, and generate the in-memory student's images; the views switch adapters without leaks
and a hand merge ``W + alpha/r * B @ A`` is the student."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from distill_helpers import tiny_overrides

from cdm_bench.distill import export, train
from cdm_bench.distill.checkpoint import load_state
from cdm_bench.distill.config import load_recipe
from cdm_bench.errors import RecipeError
from cdm_bench.generator import build_generator

ROOT = Path(__file__).resolve().parents[2]
LORA_RECIPES = [f"{m}/{r}_lora" for m in ("sd3_medium", "longcat") for r in ("cdm", "ddmd", "dmd")]
TOY_LORA = {"student.lora": {"rank": 4, "alpha": 8}, "fake.lora": {"rank": 4, "alpha": 8}}


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def tiny(path: Path, steps: int = 2, **extra) -> dict:
    """The recipe's own keys, tiny sizes; a constant lr large enough that the adapters move."""
    return {"model.pretrained": str(path), "model.prompts": "smoke", "model.resolution": 32,
            "train.batch_size": 2, "train.steps": steps, "train.checkpoint_every": 1,
            "train.keep_checkpoints": 0, "train.progress": False, "train.tensorboard": False,
            "student.optim.warmup_steps": 0, "fake.optim.warmup_steps": 0, "student.optim.lr": 1e-2,
            "fake.optim.lr": 1e-2, **extra}


def _model_dir(recipe: str, request) -> Path:
    return request.getfixturevalue("tiny_sd3_dir" if recipe.startswith("sd3") else "tiny_longcat_dir")


def _assert_same(a: dict, b: dict):
    for key in ("student", "fake", "ema"):
        assert a[key].keys() == b[key].keys()
        for name in a[key]:
            torch.testing.assert_close(a[key][name], b[key][name], atol=1e-6, rtol=0, msg=lambda m: f"{key}.{name}: {m}")
    for opt in ("optim_student", "optim_fake"):
        for name, st in a[opt]["state"].items():
            torch.testing.assert_close(st["exp_avg_sq"], b[opt]["state"][name]["exp_avg_sq"], atol=1e-9, rtol=0)


@pytest.mark.parametrize("recipe", LORA_RECIPES)
def test_lora_recipes_have_the_reference_values(recipe):
    cfg = load_recipe(recipe)
    for lora in (cfg.student.lora, cfg.fake.lora):
        assert (lora.rank, lora.alpha, lora.ffn, lora.dropout, lora.init) == (64, 128.0, True, 0.0, "gaussian")
    assert cfg.student.optim.lr == cfg.fake.optim.lr == 2e-5
    full = load_recipe(recipe.removesuffix("_lora"))
    assert cfg.losses.keys() == full.losses.keys() and cfg.train == full.train and cfg.schedule == full.schedule


@pytest.mark.parametrize("recipe", ["sd3_medium/cdm_lora", "longcat/dmd_lora"])
def test_two_steps_resume_exactly_and_one_base_is_built(recipe, request, tmp_path, monkeypatch):
    from cdm_bench.distill.adapter import ModelAdapter

    built = []
    original = ModelAdapter.build_model
    monkeypatch.setattr(ModelAdapter, "build_model", lambda self, spec: built.append(1) or original(self, spec))
    model_dir = _model_dir(recipe, request)
    straight = train(recipe, tiny(model_dir, steps=2), tmp_path / "a")
    assert len(built) == 1  # one frozen base carries the student, the fake teacher and the EMA (full: 4)
    train(recipe, tiny(model_dir, steps=1), tmp_path / "b")
    resumed = train(recipe, tiny(model_dir, steps=2), tmp_path / "b", resume=True)
    a, b = load_state(straight), load_state(resumed)
    _assert_same(a, b)
    for role in ("student", "fake", "ema"):  # adapter weights only, each role its own adapter
        assert a[role] and all(f".lora_A.{role}." in k or f".lora_B.{role}." in k for k in a[role])
    assert max(float(v.abs().max()) for k, v in a["student"].items() if ".lora_B." in k) > 1e-4
    lines = [json.loads(x) for x in (tmp_path / "a" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2] and all(np.isfinite(r["loss/total"]) for r in lines)


def test_full_training_still_builds_four_copies(tmp_path, monkeypatch):
    from cdm_bench.distill.adapter import ModelAdapter

    built = []
    original = ModelAdapter.build_model
    monkeypatch.setattr(ModelAdapter, "build_model", lambda self, spec: built.append(1) or original(self, spec))
    train("cdm", tiny_overrides(steps=1), tmp_path / "run")
    assert len(built) == 4


def _hand_merged(base_state: dict, adapter: dict, name: str, scaling: float) -> dict:
    """The teacher's weights with ``scaling * B @ A`` added to every adapted layer's weight."""
    out = {k: v.clone().float() for k, v in base_state.items()}
    for key, a in adapter.items():
        if f".lora_A.{name}." in key:
            prefix = key.split(".lora_A.")[0]
            b = adapter[key.replace(".lora_A.", ".lora_B.")]
            out[f"{prefix}.weight"] += scaling * (b.float() @ a.float())
    return out


def test_views_switch_adapters_without_leaks_and_equal_a_hand_merge(tiny_sd3_dir, tmp_path):
    from cdm_bench.distill.config import load_recipe
    from cdm_bench.distill.trainer import Trainer

    over = tiny(tiny_sd3_dir, steps=2, **{"student.lora.rank": 4, "student.lora.alpha": 12,
                                          "fake.lora.rank": 4, "fake.lora.alpha": 12, "model.teacher_dtype": "float32"})
    trainer = Trainer(load_recipe("sd3_medium/cdm_lora", over), tmp_path / "run")
    trainer.train()
    assert trainer.student.shared_base is trainer.fake.shared_base is trainer.teacher.shared_base is trainer.ema.model.shared_base
    adapter = trainer.adapter
    teacher = adapter.load_teacher().eval()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn((2, *adapter.latent_shape(teacher)), generator=gen)
    sigma = torch.tensor([0.3, 0.8])
    cond = adapter.encode_prompts(["a red cube", "two cats"])
    with torch.no_grad():
        ref = adapter.forward(teacher, x, sigma, cond)
        outs = {r: adapter.forward(m, x, sigma, cond) for r, m in
                (("teacher", trainer.teacher), ("student", trainer.student), ("fake", trainer.fake), ("ema", trainer.ema.model))}
        again = adapter.forward(trainer.teacher, x, sigma, cond)
    torch.testing.assert_close(outs["teacher"], ref, atol=1e-6, rtol=0)  # the base is frozen, adapters off
    torch.testing.assert_close(again, ref, atol=1e-6, rtol=0)  # switching back leaks nothing
    assert float((outs["student"] - ref).abs().max()) > 1e-3 and float((outs["fake"] - outs["student"]).abs().max()) > 1e-4
    for role, view in (("student", trainer.student), ("ema", trainer.ema.model)):
        state = _hand_merged(teacher.state_dict(), view.full_state(), role, 12 / 4)
        plain = adapter.build_model(trainer.model_spec)
        plain.load_state_dict(state, strict=True)
        with torch.no_grad():
            torch.testing.assert_close(adapter.forward(plain.eval(), x, sigma, cond), outs[role], atol=1e-5, rtol=1e-5)
    merged = trainer.student.merged_state()  # what validation and --fuse use
    hand = _hand_merged(teacher.state_dict(), trainer.student.full_state(), "student", 3.0)
    assert merged.keys() == hand.keys()
    assert all(torch.allclose(merged[k].float(), hand[k], atol=1e-6) for k in hand)


@pytest.mark.parametrize("recipe", ["sd3_medium/cdm_lora", "longcat/cdm_lora"])
def test_export_reloads_with_diffusers_loaders_and_generates_the_students_images(recipe, request, tmp_path, monkeypatch):
    import diffusers
    from safetensors.torch import load_file

    model_dir = _model_dir(recipe, request)
    ckpt = train(recipe, tiny(model_dir, steps=2), tmp_path / "run")
    lora_dir = export(ckpt, tmp_path / "lora")
    fused_dir = export(ckpt, tmp_path / "fused", fuse=True)
    assert (lora_dir / "pytorch_lora_weights.safetensors").is_file() and not (lora_dir / "transformer").exists()
    assert (fused_dir / "transformer").is_dir()
    pipe_cls = "StableDiffusion3Pipeline" if recipe.startswith("sd3") else "LongCatImagePipeline"
    pipe = getattr(diffusers, pipe_cls).from_pretrained(str(model_dir))
    if hasattr(pipe, "load_lora_weights"):  # SD3: the pipeline's own loader
        pipe.load_lora_weights(str(lora_dir))
    else:  # LongCat-Image's pipeline has no LoRA mixin: the transformer's (ModelMixin) loader
        pipe.transformer.load_lora_adapter(str(lora_dir), weight_name="pytorch_lora_weights.safetensors",
                                           prefix="transformer" if all(
            k.startswith("transformer.") for k in load_file(str(lora_dir / "pytorch_lora_weights.safetensors"))) else None)
    fused = type(pipe.transformer).from_pretrained(str(fused_dir / "transformer"))
    state = load_state(ckpt)["ema"]
    assert max(float(v.abs().max()) for k, v in state.items() if ".lora_B." in k) > 1e-4
    from cdm_bench.distill.adapter import build_adapter

    adapter = build_adapter(recipe.split("/")[0].replace("sd3_medium", "sd3"), pretrained=str(model_dir),
                            prompts="smoke", resolution=32)
    x = torch.randn((2, *adapter.latent_shape(fused)), generator=torch.Generator().manual_seed(1))
    cond = adapter.encode_prompts(["a red cube", "two cats"])
    sigma = torch.tensor([0.5, 0.9])
    with torch.no_grad():
        via_lora = adapter.forward(pipe.transformer.float(), x, sigma, cond)
        via_fused = adapter.forward(fused.float(), x, sigma, cond)
    torch.testing.assert_close(via_lora, via_fused, atol=1e-5, rtol=1e-5)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")  # the generator.yaml's lora path is relative to itself
    prompts, seeds = ["a red cube", "two cats"], [11, 12]
    images = {name: build_generator(str(d / "generator.yaml"))[0].generate(prompts, seeds)
              for name, d in (("lora", lora_dir), ("fused", fused_dir))}
    teacher = build_generator({"generator": "sd3-medium" if recipe.startswith("sd3") else "longcat-image",
                               "model": str(model_dir), "nfe": 4, "guidance": 1.0, "resolution": 32,
                               "sigmas": [1.0, 0.75, 0.5, 0.25]})[0].generate(prompts, seeds)
    assert np.abs(images["lora"].astype(int) - images["fused"]).max() <= 1
    assert np.abs(images["lora"].astype(int) - teacher).max() > 1  # the adapter does something


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(recipe: str, overrides: dict, out: Path, *extra: str) -> None:
    sets = []
    for key, value in overrides.items():
        sets += ["--set", f"{key}={json.dumps(value)}"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), "-m", "cdm_bench.cli.train", recipe, *sets, "--out", str(out), *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    out_text = proc.stdout + proc.stderr
    assert out_text.count("loaded the teacher's state dict into one shared LoRA base") == 1 and "rank 0: loaded" in out_text


@pytest.mark.dist
@pytest.mark.parametrize("recipe", ["sd3_medium/cdm_lora", "longcat/cdm_lora"])
def test_torchrun_fsdp2_lora_resumes_exactly_and_exports(recipe, request, tmp_path):
    """bf16 + gradient checkpointing + FSDP2 (base and adapters sharded together) on 2 processes."""
    over = lambda steps: tiny(_model_dir(recipe, request), steps=steps)  # noqa: E731
    _torchrun(recipe, over(2), tmp_path / "a")
    _torchrun(recipe, over(1), tmp_path / "b")
    _torchrun(recipe, over(2), tmp_path / "b", "--resume")
    a, b = load_state(tmp_path / "a" / "checkpoint-000002"), load_state(tmp_path / "b" / "checkpoint-000002")
    _assert_same(a, b)
    assert all(".lora_" in k for k in a["student"])
    out = export(tmp_path / "a", tmp_path / "lora")
    assert build_generator(str(out / "generator.yaml"))[0].generate(["a red cube"], [3]).shape == (1, 32, 32, 3)


def test_toy_lora_validates_during_training_and_exports_fused(tmp_path):
    """A model family without a LoRA loader (the toy model) exports the merged model."""
    validate = {"every": 1, "prompts": "toy-small", "limit": 4, "samples_per_prompt": 1, "nfe": [2],
                "metrics": [{"name": "toy_align", "scorer": "tiny"}], "chunk_size": 4, "bootstrap": 10}
    ckpt = train("cdm", {**tiny_overrides(steps=2, **TOY_LORA), "validate": validate}, tmp_path / "run")
    rows = (tmp_path / "run" / "validation.csv").read_text().splitlines()
    assert len(rows) > 1 and any(",toy_align," in r for r in rows)
    out = export(ckpt, tmp_path / "student")
    assert (out / "config.json").is_file()
    img = build_generator(str(out / "generator.yaml"))[0].generate(["a red circle"], [1])
    assert img.dtype == np.uint8 and img.std() > 0


@pytest.mark.parametrize("override, message", [
    ({"student.lora": {"rank": 4}}, "needs both student.lora and fake.lora"),
    ({**TOY_LORA, "fake.lora": {"rank": 8}}, "same rank"),
    ({**TOY_LORA, "student.lora.rnak": 4}, "rnak"),
    ({**TOY_LORA, "student.lora.rank": 0}, "rank must be >= 1"),
    ({**TOY_LORA, "student.lora.target_modules": ["no_such_layer"], "fake.lora.target_modules": ["no_such_layer"]},
     "lora: .*no_such_layer"),
])
def test_lora_recipe_errors_name_the_key(override, message, tmp_path):
    with pytest.raises(RecipeError, match=message):
        train("cdm", tiny_overrides(steps=1, **override), tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoint-000001").exists()


def test_export_fuse_refuses_a_full_run(tmp_path):
    ckpt = train("cdm", tiny_overrides(steps=1), tmp_path / "run")
    with pytest.raises(RecipeError, match="--fuse merges a LoRA student"):
        export(ckpt, tmp_path / "out", fuse=True)
