"""The paper's recipes (recipes/sd3_medium/*, recipes/longcat/*) with their real keys on tiny
SD3 / LongCat pipelines: 2 student steps each, a 2-process torchrun FSDP2 run for SD3, export, and
generation from the export through the generator registry."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from cdm_bench.distill import export, train
from cdm_bench.distill.checkpoint import load_meta, load_state
from cdm_bench.generator import build_generator

ROOT = Path(__file__).resolve().parents[2]
RECIPES = [f"{m}/{r}" for m in ("sd3_medium", "longcat") for r in ("cdm", "ddmd", "dmd")]


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def tiny(path: Path, steps: int = 2) -> dict:
    """Only sizes change: the model folder, the prompt set, 32 px, batch 2, 2 steps."""
    return {"model.pretrained": str(path), "model.prompts": "smoke", "model.resolution": 32,
            "train.batch_size": 2, "train.steps": steps, "train.checkpoint_every": 1,
            "train.keep_checkpoints": 0, "train.progress": False, "train.tensorboard": False}


def _model_dir(recipe: str, request) -> Path:
    return request.getfixturevalue("tiny_sd3_dir" if recipe.startswith("sd3") else "tiny_longcat_dir")


@pytest.mark.parametrize("recipe", RECIPES)
def test_two_steps_of_each_paper_recipe(recipe, request, tmp_path):
    from cdm_bench.distill.config import load_recipe

    cfg = load_recipe(recipe, tiny(_model_dir(recipe, request)))
    assert cfg.train.precision == "bf16" and cfg.train.gradient_checkpointing  # the recipe's own keys
    assert cfg.student.optim.warmup_steps == 100 and cfg.fake.optim.warmup_steps == 100
    ckpt = train(recipe, tiny(_model_dir(recipe, request)), tmp_path / "run")
    lines = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2]
    assert all(np.isfinite(r["loss/total"]) for r in lines)
    state = load_state(ckpt)
    moved = max(float((state["student"][k] - state["ema"][k]).abs().max()) for k in state["student"])
    assert moved > 0  # the student took steps (lr > 0 after the first warm-up tick)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.dist
@pytest.mark.parametrize("recipe", ["sd3_medium/cdm", "longcat/cdm"])
def test_torchrun_fsdp2_loads_the_teacher_on_rank0_only(recipe, request, tmp_path):
    """bf16 + gradient checkpointing + FSDP2 on 2 processes; a full state dict comes back."""
    model_dir = _model_dir(recipe, request)
    sets = []
    for key, value in tiny(model_dir).items():
        sets += ["--set", f"{key}={json.dumps(value)}"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), "-m", "cdm_bench.cli.train", recipe, *sets,
           "--out", str(tmp_path / "run")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    out = proc.stdout + proc.stderr
    assert out.count("loaded the teacher's state dict") == 1 and "rank 0: loaded" in out
    ckpt = tmp_path / "run" / "checkpoint-000002"
    state = load_state(ckpt)
    import diffusers

    cls = getattr(diffusers, "SD3Transformer2DModel" if recipe.startswith("sd3") else "LongCatImageTransformer2DModel")
    teacher = cls.from_pretrained(str(model_dir), subfolder="transformer")
    for key in ("student", "fake", "ema"):
        cls.from_config(teacher.config).load_state_dict(state[key], strict=True)  # full, unsharded
    moved = max(float((state["student"][k] - v).abs().max()) for k, v in teacher.state_dict().items())
    assert 0 < moved < 1.0
    assert load_meta(ckpt)[1]["world_size"] == 2


@pytest.mark.parametrize("recipe", ["sd3_medium/cdm", "longcat/cdm"])
def test_export_reloads_and_generates_at_4_nfe(recipe, request, tmp_path, monkeypatch):
    import json

    from cdm_bench.generate import generate
    from cdm_bench.prompts import PromptSet

    ckpt = train(recipe, tiny(_model_dir(recipe, request), steps=1), tmp_path / "run")
    out = export(ckpt, tmp_path / "student")
    spec = yaml.safe_load((out / "generator.yaml").read_text())
    assert spec["nfe"] == 4 and spec["sigmas"] == [1.0, 0.75, 0.5, 0.25] and spec["guidance"] == 1.0
    assert spec["transformer"] == "transformer"  # relative to the yaml's folder
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    run = generate(str(out / "generator.yaml"), PromptSet("p", "1", [{"id": "a", "prompt": "a red cube"}]), "gen",
                   progress=False)
    assert json.loads((run / "generation.json").read_text())["provenance"]["nfe_measured"] == 4
    saved = load_state(ckpt)["ema"]
    cls = "SD3Transformer2DModel" if recipe.startswith("sd3") else "LongCatImageTransformer2DModel"
    import diffusers

    reloaded = getattr(diffusers, cls).from_pretrained(str(out / "transformer")).state_dict()
    assert all(torch.equal(reloaded[k], v) for k, v in saved.items())
    gen, _ = build_generator(str(out / "generator.yaml"))
    prompts, seeds = ["a red cube", "two cats", "a tree", "a boat"], [11, 12, 13, 14]
    batch = gen.generate(prompts, seeds)
    single = np.concatenate([gen.generate([p], [s]) for p, s in zip(prompts, seeds)])
    assert batch.shape == (4, 32, 32, 3) and batch.dtype == np.uint8 and batch.std() > 1
    assert np.array_equal(batch, single)  # batch 1 vs 4: identical images


def test_export_with_copy_base_is_a_whole_pipeline(tiny_sd3_dir, tmp_path):
    from diffusers import StableDiffusion3Pipeline

    ckpt = train("sd3_medium/cdm", tiny(tiny_sd3_dir, steps=1), tmp_path / "run")
    pointer = build_generator(str(export(ckpt, tmp_path / "a") / "generator.yaml"))[0]
    whole_dir = export(ckpt, tmp_path / "b", copy_base=True)
    spec = yaml.safe_load((whole_dir / "generator.yaml").read_text())
    assert spec["model"] == "." and "transformer" not in spec
    StableDiffusion3Pipeline.from_pretrained(str(whole_dir), local_files_only=True)  # loads alone
    whole = build_generator(str(whole_dir / "generator.yaml"))[0]
    assert np.array_equal(pointer.generate(["a red cube"], [5]), whole.generate(["a red cube"], [5]))


@pytest.mark.parametrize("recipe", ["sd3_medium/cdm", "longcat/dmd"])
def test_training_without_weights_is_one_line_and_writes_nothing(recipe, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "cdm_bench", "train", recipe, "--set", "model.prompts=smoke",
                           "--out", str(tmp_path / "run")],
                          capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    repo = "stabilityai/stable-diffusion-3-medium-diffusers" if recipe.startswith("sd3") else "meituan-longcat/LongCat-Image"
    assert repo in lines[0] and "--local-dir" in lines[0] and "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists()


def test_a_missing_training_prompt_set_fails_before_any_weights_load(tiny_sd3_dir, tmp_path, monkeypatch):
    from cdm_bench.distill.models.sd3 import SD3Adapter
    from cdm_bench.errors import SpecError

    monkeypatch.setattr(SD3Adapter, "load_teacher_state", lambda self: pytest.fail("weights loaded"))
    with pytest.raises(SpecError, match="prompt file not found"):
        train("sd3_medium/cdm", {**tiny(tiny_sd3_dir), "model.prompts": str(tmp_path / "missing.txt")},
              tmp_path / "run")
    assert not (tmp_path / "run").exists()
