"""The dry run and evaluate make one check: for every metric of both paper specs, in the
interpreter the spec sends it to (this env, the HPSv3 env), the dry run's "ready there" verdict
is what evaluate does with that metric there (refuses it in one line naming the same problem, or
gets past its checks)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cdm_bench.benchmark import BenchmarkSpec, metric_groups
from cdm_bench.cli.run import _spec_path
from cdm_bench.metric_plans import parse_metrics, readiness, readiness_in

ROOT = Path(__file__).resolve().parent.parent


def _entries():
    seen = {}
    for name in ("sd3-medium-paper", "longcat-image-paper"):
        spec = BenchmarkSpec.from_yaml(_spec_path(name))
        for entry in spec.prompts:
            for python, group in metric_groups(entry["metrics"], spec.eval_python).items():
                for m in group:
                    seen[(python, json.dumps(m, sort_keys=True))] = (python, m)
    return list(seen.values())


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from cdm_bench.generate import generate
    from cdm_bench.prompts import PromptSet

    ps = PromptSet("p", "1", [{"id": "a", "prompt": 'a sign that says "cdm"'}, {"id": "b", "prompt": "a cat"}])
    return generate({"generator": "dummy", "name": "d", "size": 32}, ps, tmp_path_factory.mktemp("run") / "r",
                    progress=False)


@pytest.mark.parametrize("python,entry", _entries(), ids=lambda v: v if isinstance(v, str) else json.dumps(v))
def test_dry_run_and_evaluate_agree(python, entry, run_dir, tmp_path):
    interpreter = str(ROOT / python) if python else sys.executable
    if python and not Path(interpreter).exists():
        pytest.skip(f"{python} not built here (make eval-env-hpsv3 builds it)")
    verdict = (readiness_in(python, [entry]) if python else readiness([entry]))
    (instance, name, opts), = parse_metrics([entry])
    proc = subprocess.run([interpreter, "-m", "cdm_bench", "evaluate", "--images", str(run_dir), "--metrics",
                           f"{instance}={name}", "--metric-options", json.dumps({instance: opts}),
                           "--out", str(tmp_path / "res")], capture_output=True, text=True, timeout=600, cwd=ROOT)
    refused = proc.returncode == 2 and "needs" in proc.stderr and not (tmp_path / "res" / "results.json").exists()
    said = verdict[instance]
    if said is None:  # "yes": evaluate gets past the checks (it scores, or fails later for another reason)
        assert not refused, proc.stderr[-2000:]
    else:
        assert refused and said.removeprefix("no: ") in proc.stderr, (said, proc.stderr[-2000:])
