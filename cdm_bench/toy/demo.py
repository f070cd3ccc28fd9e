"""The demo: the whole flow on the embedded world, offline, on a CPU.

1. train (or load cached) the world's scorer and teacher;
2. distil students from the teacher (``dmd``, ``ddmd``, ``cdm``; ``--ablations`` adds two more);
3. ``run`` the world's benchmark spec (``recipes/benchmarks/toy-world.yaml``) plus the students:
   generate -> evaluate (``toy_fid``, ``toy_align``) -> leaderboard, with a ``reference`` row of
   real world images;
4. check the result: finite numbers, scorer accuracy >= 95 %, alignment above chance; the full
   demo also checks that teacher@50+CFG beats the teacher's fewest-step row without CFG on both
   metrics by more than the noise.

``--quick`` (CI's health check) uses the ``quick`` presets and the small prompt set, and
asserts no ordering.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from cdm_bench.paths import recipes_dir
from cdm_bench.rundir import RunDir
from cdm_bench.runfind import leaderboard_paths
from cdm_bench.specfile import load_mapping

log = logging.getLogger(__name__)

SPEC_PATH = recipes_dir() / "benchmarks" / "toy-world.yaml"
STUDENT_RECIPES = ["dmd", "ddmd", "cdm"]
ABLATION_RECIPES = ["cdm_no_offtraj", "cdm_fixed_schedule"]
# held-out exact attribute-set accuracy the world's scorer must reach; the quick preset's
# scorer trains for ~1 min and only has to be a working health check
MIN_SCORER_ACCURACY = {"demo": 0.95, "quick": 0.80}
# students at a demo-sized budget (the distillation benchmark trains them to convergence)
STUDENT_BUDGET = {"quick": {"train.steps": 3, "train.batch_size": 8, "train.checkpoint_every": 3},
                  "demo": {"train.steps": 60, "train.batch_size": 16, "train.checkpoint_every": 20}}
FID_NOISE = 0.25  # toy FID varies ~±12 % between sampling seeds (benchmarks/results/world_validation.md)


@dataclass
class DemoReport:
    out: Path
    checks: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(c["ok"] for c in self.checks.values())


def demo_spec(quick: bool) -> dict:
    spec = load_mapping(SPEC_PATH, "benchmark spec")
    if quick:
        spec = _retarget(spec, "quick")
        spec.update(prompts=["toy-small"], samples_per_prompt=2, name="toy-world-quick")
    return spec


def _retarget(spec: dict, preset: str) -> dict:
    spec = copy.deepcopy(spec)
    for g in spec["generators"]:
        if isinstance(g, dict) and "preset" in g:
            g["preset"] = preset
    for m in spec["metrics"]:
        if isinstance(m, dict) and "scorer" in m:
            m["scorer"] = preset
    return spec


def run_demo(out_dir, quick: bool = False, retrain: bool = False, students: bool = True,
             ablations: bool = False, student_steps: int | None = None) -> DemoReport:
    from cdm_bench.benchmark import BenchmarkSpec, run_benchmark
    from cdm_bench.toy.artifacts import get_scorer, get_teacher, scorer_report

    out = Path(out_dir)
    preset = "quick" if quick else "demo"
    report = DemoReport(out)
    t0 = time.perf_counter()
    get_scorer(preset, retrain=retrain)
    accuracy = float(scorer_report(preset)["exact_accuracy"])
    t1 = time.perf_counter()
    get_teacher(preset, retrain=retrain)
    t2 = time.perf_counter()
    spec, student_specs = demo_spec(quick), []
    if students:
        recipes = STUDENT_RECIPES + (ABLATION_RECIPES if ablations else [])
        student_specs = distil_students(out / "students", recipes, preset, student_steps)
        spec["generators"] += student_specs
    t3 = time.perf_counter()
    run_benchmark(BenchmarkSpec.from_dict(spec), out)
    t4 = time.perf_counter()
    report.timings = {"scorer_s": t1 - t0, "teacher_s": t2 - t1, "students_s": t3 - t2,
                      "benchmark_s": t4 - t3, "total_s": t4 - t0,
                      "student_gen_s": generation_seconds(out, [s["name"] for s in student_specs])}
    report.checks = check_results(out, preset, accuracy, ordering=not quick)
    (out / "demo.json").write_text(json.dumps(
        {"preset": preset, "timings": report.timings, "checks": report.checks}, indent=2, default=str))
    return report


def generation_seconds(out: Path, names: list[str]) -> float:
    """Seconds the named generators' runs spent generating and waiting for PNG writes (which
    overlap generation on a writer thread; from their generation.json)."""
    total = 0.0
    for name in names:
        for run in _runs_of(out, name):
            for entry in run.read_identity().get("timing", []):
                total += sum(r["model_s"] + r.get("wait_s", r["write_s"]) for r in entry["ranks"])
    return total


def _runs_of(out: Path, generator: str) -> list[RunDir]:
    """The run directories the benchmark wrote for one generator (one per prompt set)."""
    root = out / "runs" / generator
    return [RunDir(d) for d in sorted(root.iterdir()) if RunDir(d).has_identity()] if root.is_dir() else []


def distil_students(root: Path, recipes: list[str], preset: str, steps: int | None) -> list[dict]:
    """Distil one student per recipe from the world teacher (demo-sized budget; resumable);
    return 4-NFE generator specs for their exported EMA weights."""
    from cdm_bench.distill import export, train

    budget = dict(STUDENT_BUDGET[preset])
    if steps is not None:
        budget["train.steps"] = int(steps)
    specs = []
    for recipe in recipes:
        overrides = {"model.teacher": preset, **budget}
        checkpoint = train(recipe, overrides, root / recipe / "run", resume=True)
        model_dir = export(checkpoint, root / recipe / "student", ema=True)
        specs.append({"generator": "toy", "name": f"{recipe}-4", "recipe": recipe, "preset": preset,
                      "model": str(model_dir), "nfe": 4, "guidance": 1.0})
    return specs


def check_results(out: Path, preset: str, accuracy: float, ordering: bool) -> dict:
    paths = leaderboard_paths(out)
    wide = pd.read_csv(paths["csv"]).set_index("generator")
    long = pd.read_csv(paths["long_csv"], keep_default_na=False, na_values=[""])
    long = long[long["sub"].isna()] if "sub" in long else long  # main values, not sub-values
    metrics = ["toy_fid", "toy_align"]
    checks = {
        "finite": {"ok": bool(all(math.isfinite(v) for v in wide[metrics].to_numpy().ravel())),
                   "detail": "every metric value is finite"},
        "scorer_accuracy": {"ok": accuracy >= MIN_SCORER_ACCURACY[preset],
                            "detail": f"held-out accuracy {accuracy:.3f} (>= {MIN_SCORER_ACCURACY[preset]})"},
    }
    chance = chance_alignment(out, preset)
    # quick: the quick teacher is barely trained, so the pipeline is checked on the real-image row
    row = "teacher-50-cfg" if ordering else "reference"
    best = wide.loc[row, "toy_align"]
    checks["align_above_chance"] = {"ok": bool(best > chance + 0.1),
                                    "detail": f"{row} {best:.3f} vs chance {chance:.3f} (real images, wrong prompts)"}
    if ordering:
        checks["teacher_order"] = _order_check(wide, long)
    return checks


def _order_check(wide: pd.DataFrame, long: pd.DataFrame) -> dict:
    """teacher@50+CFG beats the fewest-step teacher row without CFG, beyond the noise."""
    teachers = wide[(wide["recipe"] == "teacher") & (wide["cfg"].fillna(1.0) == 1.0)]
    worst = teachers["nfe"].idxmin()
    fid_best, fid_worst = wide.loc["teacher-50-cfg", "toy_fid"], wide.loc[worst, "toy_fid"]
    ci = long[long["metric"] == "toy_align"].set_index("generator")
    align_ok = ci.loc["teacher-50-cfg", "ci_low"] > ci.loc[worst, "ci_high"]
    fid_ok = fid_worst > fid_best * (1 + FID_NOISE)
    return {"ok": bool(align_ok and fid_ok),
            "detail": (f"toy_fid {fid_best:.3g} (teacher-50-cfg) vs {fid_worst:.3g} ({worst}), needs "
                       f">{FID_NOISE:.0%} margin; toy_align CI [{ci.loc['teacher-50-cfg', 'ci_low']:.3f}, ...] vs "
                       f"[..., {ci.loc[worst, 'ci_high']:.3f}]")}


def chance_alignment(out: Path, preset: str) -> float:
    """toy_align of real images scored against the wrong prompts (rolled by one)."""
    import numpy as np

    from metrics.toy import ToyAlign

    run = next(r for r in _runs_of(out, "reference") if r.is_complete())
    recs = run.read_manifest()
    images = run.load_images(recs)
    prompts = [r["prompt"] for r in recs]
    rolled = prompts[len(prompts) // 2:] + prompts[: len(prompts) // 2]
    return float(np.mean(ToyAlign(scorer=preset).score(images, rolled, recs)))
