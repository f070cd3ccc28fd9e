"""Start-up imports nothing a command does not use: ``ls`` no torch, evaluate (toy metric) no
diffusers / transformers / training or report code, train no export code and no
torch.distributed.checkpoint of its own before its first step in one process (it is imported when
a checkpoint is first saved; peft, which diffusers imports when it is installed, imports it too)."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _modules(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600,
                         env={**__import__("os").environ, "PYTHONPATH": str(ROOT / "tests")})
    assert out.returncode == 0, out.stderr[-3000:]
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


DUMP = "import json, sys; print(json.dumps(sorted(sys.modules)))"


def test_ls_imports_no_torch():
    mods = _modules(f"from cdm_bench.cli import main; main(['ls', 'metrics']); {DUMP}")
    assert not {"torch", "numpy", "pandas", "yaml"} & mods


def test_evaluate_imports_only_what_the_metric_needs(tmp_path):
    code = f"""
from dummy import DummyGenerator
from cdm_bench.generate import generate
from cdm_bench.prompts import PromptSet
import sys
ps = PromptSet("p", "1", [{{"id": "a", "prompt": "a red circle"}}])
from cdm_bench.registry import GENERATORS
GENERATORS.register("dummy", DummyGenerator, overwrite=True)
generate({{"generator": "dummy"}}, ps, {str(tmp_path / "r")!r}, progress=False)
before = set(sys.modules)
from cdm_bench.cli import main
main(["evaluate", "--images", {str(tmp_path / "r")!r}, "--metrics", "toy_align", "--metric-options",
      '{{"toy_align": {{"scorer": "tiny"}}}}'])
import json
print(json.dumps(sorted(set(sys.modules) - before)))
"""
    new = _modules(code)
    heavy = {"diffusers", "transformers", "open_clip", "timm", "matplotlib", "jinja2", "scipy", "sklearn",
             "torch.distributed.checkpoint", "cdm_bench.distill", "cdm_bench.leaderboard", "cdm_bench.report"}
    assert not {m for m in new if m in heavy or m.split(".")[0] in heavy - {"torch.distributed.checkpoint"}}


def test_train_start_imports_no_export_and_no_checkpoint_code(tmp_path):
    code = f"""
import json, sys
sys.path.insert(0, "tests/distill")
from distill_helpers import tiny_overrides
from cdm_bench.distill import trainer
def first_step(self, *a, **k):
    print(json.dumps(sorted(sys.modules)))
    raise SystemExit(0)
trainer.Trainer.run_iteration = first_step
from cdm_bench.distill import train
train("dmd", tiny_overrides(steps=1), {str(tmp_path / "run")!r}, resume=False)
"""
    mods = _modules(code)
    assert "cdm_bench.distill.export" not in mods
    assert "cdm_bench.distill.trainer" in mods  # (the hook ran at the first step)
    # with peft installed ([gen], for LoRA) diffusers imports it at start, and peft imports
    # torch.distributed.checkpoint: what is checked is that cdm-bench's own code does not
    lean = _modules("import sys; sys.modules['peft'] = None\n" + code)
    assert "torch.distributed.checkpoint" not in lean and "cdm_bench.distill.trainer" in lean
