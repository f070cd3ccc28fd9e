"""FSDP2 on CPU: 2 torchrun processes (gloo) run 2 student steps of the cdm recipe; the saved
full state dict loads strictly into an unsharded model, and export works on it."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from distill_helpers import tiny_overrides

from cdm_bench.distill import export
from cdm_bench.distill.checkpoint import load_meta, load_state

pytestmark = pytest.mark.dist
ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(out: Path, steps: int, *extra: str) -> None:
    sets = []
    for key, value in tiny_overrides(steps=steps, batch=2).items():
        sets += ["--set", f"{key}={json.dumps(value)}"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
           "-m", "cdm_bench.cli.train", "cdm", *sets, "--out", str(out), *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]


def test_torchrun_fsdp2_two_student_steps(tmp_path):
    """Step 1, then a sharded resume (full model + optimizer state dicts) for step 2."""
    from cdm_bench.toy.adapter import ToyAdapter

    _torchrun(tmp_path / "run", 1)
    _torchrun(tmp_path / "run", 2, "--resume")
    ckpt = tmp_path / "run" / "checkpoint-000002"
    _, meta = load_meta(ckpt)
    assert meta["world_size"] == 2
    lines = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2] and all("loss/cdm_offtraj" in r for r in lines)

    state = load_state(ckpt)
    teacher = ToyAdapter(teacher="random", model_config=tiny_overrides()["model.model_config"]).load_teacher()
    for key in ("student", "ema", "fake"):
        model = ToyAdapter(teacher="random", model_config=tiny_overrides()["model.model_config"]).load_teacher()
        model.load_state_dict(state[key], strict=True)  # full, unsharded, every parameter present
    moved = max((state["student"][k] - v).abs().max().item() for k, v in teacher.state_dict().items())
    assert 0 < moved < 1.0 and all(torch.isfinite(t).all() for t in state["student"].values())
    out = export(ckpt, tmp_path / "student")
    assert (out / "config.json").is_file() and (out / "generator.yaml").is_file()
