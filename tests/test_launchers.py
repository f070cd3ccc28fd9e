"""`accelerate launch` as the README gives it: 2 processes on a CPU shard exactly like torchrun
(the same PNG hashes, the same scores), the training entry point runs under it with FSDP2, and
the one form that silently starts a single process (no --multi_gpu) is refused in one line."""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

pytestmark = pytest.mark.dist
ROOT = Path(__file__).resolve().parent.parent
ACCELERATE = str(Path(sys.executable).parent / "accelerate")
SPEC = "generator: toy\npreset: tiny\nnfe: 3\nguidance: 2.0\n"


def _hashes(d):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((d / "images").glob("*.png"))}


def _run(cmd, **env):
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT / "tests"), **env})
    return proc


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
    from cdm_bench.toy.artifacts import get_teacher

    get_teacher("tiny")  # trained once into the shared cache before the launchers start
    path = tmp_path_factory.mktemp("spec") / "toy.yaml"
    path.write_text(SPEC)
    return path


def _generate(launcher, spec, out):
    return _run(launcher + ["-m", "cdm_bench", "generate", "--generator", str(spec), "--prompts", "toy-small",
                            "--limit", "6", "--samples-per-prompt", "2", "--batch-size", "3", "--out", str(out)])


def test_accelerate_multi_gpu_on_cpu_shards_like_torchrun(spec, tmp_path):
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29641"]
    accelerate = [ACCELERATE, "launch", "--multi_gpu", "--num_processes", "2", "--main_process_port", "29642"]
    for name, launcher in (("torchrun", torchrun), ("accelerate", accelerate)):
        proc = _generate(launcher, spec, tmp_path / name)
        assert proc.returncode == 0, proc.stderr[-3000:]
        ranks = json.loads((tmp_path / name / "generation.json").read_text())["timing"][-1]["ranks"]
        assert len(ranks) == 2 and all(r["images"] == 6 for r in ranks), name  # sharded, not one process
    assert _hashes(tmp_path / "accelerate") == _hashes(tmp_path / "torchrun") and len(_hashes(tmp_path / "torchrun")) == 12
    for name, launcher in (("torchrun", torchrun), ("accelerate", accelerate)):
        proc = _run(launcher + ["-m", "cdm_bench", "evaluate", "--images", str(tmp_path / name), "--metrics",
                                "counting=dummy:CountingMetric", "--chunk-size", "4"],
                    CDM_TEST_CALL_LOG=str(tmp_path / f"{name}.log"))
        assert proc.returncode == 0, proc.stderr[-3000:]
    a, t = (pd.read_parquet(tmp_path / n / "scores.parquet") for n in ("accelerate", "torchrun"))
    assert a["counting"].tolist() == t["counting"].tolist()


def test_accelerate_without_multi_gpu_is_refused_not_run_on_one_process(spec, tmp_path):
    proc = _generate([ACCELERATE, "launch", "--num_processes", "2", "--main_process_port", "29643"], spec,
                     tmp_path / "one")
    assert proc.returncode != 0 and "use `accelerate launch --multi_gpu --num_processes N" in proc.stderr
    assert not (tmp_path / "one").exists()


def test_accelerate_launches_the_trainer_with_its_fsdp2_config(tmp_path):
    sys.path.insert(0, str(ROOT / "tests" / "distill"))
    from distill_helpers import tiny_overrides

    sets = [x for k, v in tiny_overrides(steps=1, batch=4).items() for x in ("--set", f"{k}={json.dumps(v)}")]
    proc = _run([ACCELERATE, "launch", "--config_file", "recipes/accelerate_fsdp2.yaml", "--main_process_port",
                 "29644", "-m", "cdm_bench.cli.train", "dmd", *sets, "--out", str(tmp_path / "run")])
    assert proc.returncode == 0, proc.stderr[-3000:]
    meta = json.loads(next((tmp_path / "run").glob("checkpoint-*/meta.json")).read_text())
    assert meta["world_size"] == 2
