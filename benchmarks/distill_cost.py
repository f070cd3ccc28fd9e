"""Cost of one student step per distillation recipe: network evaluations and wall time.

Units: one network evaluation = one forward pass over a full batch (B samples); a backward
counts 2 (3 with gradient checkpointing). Counted per student step, i.e. including the
``update_ratio`` fake-teacher steps and the backward simulations of those iterations.

For each recipe this prints (and writes to ``benchmarks/results/distill_cost.csv``):

* ``evals_expected``: the analytic expectation from the recipe (schedule length distribution,
  step-index draws, loss queries), see :func:`expected_evals`;
* ``evals_measured``: what the trainer actually counted (its ``evals`` log field);
* ``sec_per_step``: measured wall time per student step (recipes interleaved round-robin so
  that background load hits all of them alike).

It then checks the claim that the backend is "evaluation-bound": the measured cdm/ddmd
step-time ratio must be within 1.10x of their evaluation-count ratio.

    python benchmarks/distill_cost.py --teacher quick --batch-size 32 --steps 20
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parent.parent
RECIPES = ["dmd", "ddmd", "cdm", "cdm_no_offtraj", "cdm_fixed_schedule"]


def _sim_rows(k: int, draws: int) -> float:
    """E[max of ``draws`` step indices ~ U{0..k-1}] + 1 = rows simulated per sample."""
    return sum(1 - (m / k) ** draws for m in range(k))


def expected_evals(cfg) -> dict:
    """Analytic evaluations per student step for a recipe config (see module docstring)."""
    from cdm_bench.distill.losses import LOSSES

    ratio, bwd = cfg.train.update_ratio, 3 if cfg.train.gradient_checkpointing else 2
    p = cfg.schedule.params
    ks = list(range(p.min_steps, p.max_steps + 1)) if cfg.schedule.kind == "random_continuous" else [len(p.sigmas)]
    sim_fake_only = sum(_sim_rows(k, 1) for k in ks) / len(ks)
    sim_student = sum(_sim_rows(k, 2) for k in ks) / len(ks)
    sim = (ratio - 1) * sim_fake_only + sim_student
    fake_train = ratio * (1 + bwd)
    inputs = {"on"}
    real = fake = 0
    for name, spec in cfg.losses.items():
        cls = LOSSES.get(spec.type)
        if hasattr(spec.params, "extrapolate_range"):
            inputs.add(name)
        if cls.__name__ == "CFGAugmentationLoss":
            real += 2
        else:
            real += 1 + (spec.params.real_guidance != 1.0)
            fake += 1
    student = len(inputs) * (1 + bwd)
    fake_offtraj = ratio * getattr(cfg.fake.loss.params, "offtraj_fraction", 0.0)
    parts = {"simulation": sim, "fake_offtraj": fake_offtraj, "fake_train": fake_train, "student": student,
             "real": real, "fake": fake}
    return {**parts, "total": sum(parts.values())}


def build_trainers(recipes, teacher, batch, out_root, extra: dict):
    from cdm_bench.distill.config import load_recipe
    from cdm_bench.distill.trainer import Trainer

    trainers = {}
    for name in recipes:
        cfg = load_recipe(name, {"model.teacher": teacher, "train.batch_size": batch, "train.progress": False,
                                 **extra})
        trainers[name] = Trainer(cfg, Path(out_root) / name)
    return trainers


def student_step(trainer) -> tuple[float, float]:
    """Run iterations until one student step completes; (seconds, evaluations counted)."""
    t0, record, fake_logs = time.perf_counter(), None, []
    while record is None:
        record = trainer.run_iteration(fake_logs)
    trainer.step += 1
    return time.perf_counter() - t0, record["evals"]


def measure(trainers: dict, steps: int, warmup: int) -> dict:
    for t in trainers.values():
        for _ in range(warmup):
            student_step(t)
    times = {n: [] for n in trainers}
    evals = {n: [] for n in trainers}
    for _ in range(steps):  # round-robin: background load affects every recipe alike
        for name, t in trainers.items():
            sec, ev = student_step(t)
            times[name].append(sec)
            evals[name].append(ev)
    return {n: (sum(times[n]) / steps, sum(evals[n]) / steps) for n in trainers}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher", default="quick", help="toy preset or teacher directory (default quick)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=20, help="measured student steps per recipe")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1 is robust on shared CPUs)")
    ap.add_argument("--recipes", default=",".join(RECIPES))
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="recipe override for all")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "distill_cost.csv"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    recipes = args.recipes.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        extra = {k.strip(): yaml.safe_load(v) for k, v in (kv.split("=", 1) for kv in args.set)}
        trainers = build_trainers(recipes, args.teacher, args.batch_size, tmp, extra)
        results = measure(trainers, args.steps, args.warmup)
        expected = {n: expected_evals(t.cfg) for n, t in trainers.items()}
    rows = []
    for name in recipes:
        sec, ev = results[name]
        rows.append({"recipe": name, "teacher": args.teacher, "batch_size": args.batch_size,
                     "steps": args.steps, "threads": args.threads,
                     "evals_expected": round(expected[name]["total"], 3), "evals_measured": round(ev, 3),
                     "sec_per_step": round(sec, 4), "ms_per_eval": round(1000 * sec / ev, 2)})
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    for r in rows:
        print(", ".join(f"{k}={v}" for k, v in r.items()))
    ok = True
    if "cdm" in results and "ddmd" in results:
        t_ratio = results["cdm"][0] / results["ddmd"][0]
        e_ratio = results["cdm"][1] / results["ddmd"][1]
        rel = t_ratio / e_ratio
        ok = 1 / 1.10 <= rel <= 1.10
        print(f"cdm/ddmd: time ratio {t_ratio:.3f}, evaluation ratio {e_ratio:.3f} "
              f"(expected {expected['cdm']['total'] / expected['ddmd']['total']:.3f}); "
              f"time/evals = {rel:.3f} -> {'OK' if ok else 'OUTSIDE'} the 1.10x band")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
