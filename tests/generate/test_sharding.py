"""Seeds independent of world size: 1 vs 2 torchrun processes give identical PNGs."""

import hashlib
import os
import subprocess
import sys

import pytest

from cdm_bench.generate import generate, read_records

pytestmark = pytest.mark.dist
SPEC = {"generator": "toy", "preset": "tiny", "nfe": 3, "guidance": 2.0}


def _hashes(d):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((d / "images").glob("*.png"))}


@pytest.fixture(scope="module")
def tiny_teacher():
    from cdm_bench.toy.artifacts import get_teacher

    return get_teacher("tiny")


def test_batch_size_and_world_size_do_not_change_images(tmp_path, tiny_teacher):
    one = generate(SPEC, "toy-small", tmp_path / "one", samples_per_prompt=2, batch_size=1, limit=6,
                   progress=False)
    four = generate(SPEC, "toy-small", tmp_path / "four", samples_per_prompt=2, batch_size=4, limit=6,
                    progress=False)
    assert _hashes(one) == _hashes(four) and len(_hashes(one)) == 12
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text("generator: toy\npreset: tiny\nnfe: 3\nguidance: 2.0\n")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29531",
           "-m", "cdm_bench", "generate", "--generator", str(spec_file), "--prompts", "toy-small",
           "--limit", "6", "--samples-per-prompt", "2", "--batch-size", "3", "--out", str(tmp_path / "two")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _hashes(tmp_path / "two") == _hashes(one)
    recs = read_records(tmp_path / "two")
    assert len(recs) == 12 and len({(r["prompt_id"], r["k"]) for r in recs}) == 12  # no padding duplicates
