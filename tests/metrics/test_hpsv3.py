"""hpsv3: its own environment (.venv-hpsv3, made by scripts/make_hpsv3_env.sh).

In the main environment (no hpsv3): ``check()`` is one line naming the extra, the env command
and the weights, and the module imports nothing heavy. The real checks (a tiny random-weight
HPSv3 in the published layout vs the package's own inferencer, and the metric kit) run inside
.venv-hpsv3: ``hpsv3_env_checks.py`` is launched there with that env's pytest.
"""

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from cdm_bench.errors import MissingDependencyError
from metrics.hpsv3 import HPSv3

ROOT = Path(__file__).resolve().parents[2]
ENV_PYTHON = ROOT / ".venv-hpsv3" / "bin" / "python"
ENV_CHECKS = Path(__file__).with_name("hpsv3_env_checks.py")
N_ENV_CHECKS = 6


def _test_count(path: Path) -> int:
    return len(re.findall(r"^def test_", path.read_text(), flags=re.M))


@pytest.mark.skipif(not ENV_PYTHON.exists(),
                    reason="no .venv-hpsv3: run `bash scripts/make_hpsv3_env.sh` (CI creates it)")
def test_hpsv3_env_checks_pass_inside_its_env(tmp_path):
    assert _test_count(ENV_CHECKS) == N_ENV_CHECKS
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "TOKENIZERS_PARALLELISM": "false"}
    cmd = [str(ENV_PYTHON), "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", "--basetemp", str(tmp_path / "t"),
           str(ENV_CHECKS)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    assert re.search(rf"\b{N_ENV_CHECKS} passed\b", out) and "skipped" not in out, out[-3000:]


@pytest.mark.skipif(importlib.util.find_spec("hpsv3") is not None, reason="hpsv3 is installed in this env")
def test_check_without_the_package_is_one_line_naming_extra_env_and_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    with pytest.raises(MissingDependencyError) as info:
        HPSv3().check()
    msg = str(info.value)
    assert len(msg.splitlines()) == 1
    for needle in ("package(s) hpsv3", "cdm-bench[hpsv3]", "make eval-env-hpsv3", ".venv-hpsv3/bin/cdm-bench",
                   "`huggingface-cli download MizzenAI/HPSv3 HPSv3.safetensors`",
                   "`huggingface-cli download Qwen/Qwen2-VL-7B-Instruct`",
                   "option 'checkpoint'", "option 'base_model'"):
        assert needle in msg, (needle, msg)


def test_another_transformers_than_hpsv3_pins_is_a_one_line_error(monkeypatch):
    import importlib.metadata as md

    pins = {"hpsv3": ["torch>=2.0.0", "transformers==4.45.2"]}
    monkeypatch.setattr(md, "requires", lambda name: pins[name])
    monkeypatch.setattr(md, "version", lambda name: "5.24.0")
    with pytest.raises(MissingDependencyError, match=r"needs transformers==4\.45\.2 .*found transformers 5\.24\.0: "
                                                     r"use the eval env \(make eval-env-hpsv3"):
        HPSv3()._check_transformers_pin()
    monkeypatch.setattr(md, "version", lambda name: "4.45.2")
    HPSv3()._check_transformers_pin()


def test_local_paths_are_named_when_missing(tmp_path):
    m = HPSv3(checkpoint=str(tmp_path / "HPSv3.safetensors"), base_model=str(tmp_path / "qwen2-vl"))
    with pytest.raises(MissingDependencyError) as info:
        m.check()
    msg = str(info.value)
    assert f"{tmp_path / 'HPSv3.safetensors'} (not found)" in msg
    assert f"{tmp_path / 'qwen2-vl' / 'config.json'} (not found)" in msg
    assert "huggingface-cli" not in msg  # local paths: no hub hint


def test_identity_covers_checkpoint_base_and_dtype(tmp_path):
    a = HPSv3().describe()
    assert (a["weights"][0]["repo_id"], a["weights"][0]["filename"]) == ("MizzenAI/HPSv3", "HPSv3.safetensors")
    ckpt = tmp_path / "HPSv3.safetensors"
    ckpt.write_bytes(b"one")
    first = HPSv3(checkpoint=str(ckpt)).describe()
    ckpt.write_bytes(b"two")
    assert first != a and HPSv3(checkpoint=str(ckpt)).describe() != first  # the file's content counts
    assert HPSv3(base_model=str(tmp_path)).describe() != a
    assert HPSv3(dtype="bfloat16").describe() != a
    assert (a["name"], a["input_format"], a["higher_is_better"]) == ("hpsv3", "pil", True)


def test_module_imports_nothing_heavy():
    # (describe() looks the weights up in the local Hugging Face cache to hash their content, as
    # check() does before any scoring: huggingface_hub itself is light and allowed)
    code = ("import sys, metrics.hpsv3; m = metrics.hpsv3.HPSv3(); m.weights(); m.describe();"
            "print([k for k in ('torch', 'transformers', 'hpsv3') if k in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
