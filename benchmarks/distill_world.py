"""Distillation benchmark on the embedded world: every recipe, same teacher, same step budget.

For each recipe (dmd, ddmd, cdm and the two ablations) and seed, train from the same teacher,
evaluate the EMA student every ``--eval-every`` student steps at 1, 2 and 4 NFE (toy_fid,
toy_align), and report the mean over the last ``--last`` evaluations. Training proceeds in
segments with exact resume (a segmented run equals an uninterrupted one), so evaluating along
the way changes nothing. Teacher rows: 1, 2, 4, 50 NFE without CFG (recipe ``teacher``) and 50
NFE with CFG (``teacher_cfg``).

Output: ``benchmarks/results/distill_world.csv`` with columns
``recipe, nfe, seed, steps, toy_fid, toy_align`` (long-format per-evaluation values go to
``distill_world_evals.csv``).

The full run is long (5 recipes x 2 seeds x --steps); a reduced one::

    python benchmarks/distill_world.py --teacher quick --steps 40 --eval-every 20 --seeds 0 \
        --prompts 64 --recipes ddmd,cdm
"""

from __future__ import annotations

import argparse
import csv
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np
import torch
import yaml

ROOT = Path(__file__).resolve().parent.parent
RECIPES = ["dmd", "ddmd", "cdm", "cdm_no_offtraj", "cdm_fixed_schedule"]
EVAL_PROMPT_SEED = 987_654  # evaluation prompts; training prompts come from the run seeds


def make_metrics(scorer: str) -> list:
    from cdm_bench.evaluate import build_metric

    return [build_metric(name, {"scorer": scorer}) for name in ("toy_fid", "toy_align")]


def score(model, prompts: list[str], seeds: list[int], nfe: int, guidance: float, scorer: str,
          batch: int = 64) -> dict:
    """Sample ``model`` at ``nfe`` and score the images with fresh toy_fid / toy_align metrics."""
    from cdm_bench.metric import convert_images
    from cdm_bench.toy.sampling import sample_images

    metrics = make_metrics(scorer)
    for start in range(0, len(prompts), batch):
        p, s = prompts[start:start + batch], seeds[start:start + batch]
        images = sample_images(model, p, s, nfe=nfe, guidance=guidance)
        meta = [{"prompt_id": start + i, "k": 0, "seed": seed} for i, seed in enumerate(s)]
        for m in metrics:
            m.update(convert_images(images, m.input_format), p, meta)
    out = {}
    for m in metrics:
        out.update({k: float(v) for k, v in m.compute().items() if k in ("toy_fid", "toy_align")})
    return out


def eval_set(n_prompts: int, samples: int) -> tuple[list[str], list[int]]:
    from cdm_bench.toy import world

    base = world.sample_prompts(n_prompts, EVAL_PROMPT_SEED)
    prompts = [p for p in base for _ in range(samples)]
    seeds = [1000 * i + k for i in range(n_prompts) for k in range(samples)]
    return prompts, seeds


def run_recipe(recipe: str, seed: int, args, prompts, seeds, work: Path) -> list[dict]:
    from cdm_bench.distill import export, train
    from cdm_bench.toy.model import ToyFlowModel

    label = Path(recipe).stem  # a recipe name, or a YAML file (e.g. recipes/experiments/*.yaml)
    rows, run_dir = [], work / f"{label}-seed{seed}"
    points = list(range(args.eval_every, args.steps + 1, args.eval_every))
    if not points or points[-1] != args.steps:
        points.append(args.steps)
    for step in points:
        t0 = time.perf_counter()
        overrides = {"model.teacher": args.teacher, "train.steps": step, "train.seed": seed,
                     "train.checkpoint_every": args.eval_every, "train.keep_checkpoints": 1,
                     "train.progress": args.progress, **args.set}
        ckpt = train(recipe, overrides, run_dir, resume=True)
        student = ToyFlowModel.from_pretrained(str(export(ckpt, run_dir / "export", ema=True))).eval()
        train_s = time.perf_counter() - t0
        for nfe in args.nfe:
            vals = score(student, prompts, seeds, nfe, 1.0, args.scorer)
            rows.append({"recipe": label, "nfe": nfe, "seed": seed, "steps": step, **vals})
            print(f"{label} seed={seed} step={step} nfe={nfe} " +
                  " ".join(f"{k}={v:.4f}" for k, v in vals.items()) + f" (train {train_s:.0f}s)", flush=True)
    return rows


def teacher_rows(args, prompts, seeds) -> list[dict]:
    from cdm_bench.toy.adapter import ToyAdapter

    teacher, rows = ToyAdapter(teacher=args.teacher).load_teacher(), []
    for recipe, nfe, guidance in [("teacher", n, 1.0) for n in (1, 2, 4, 50)] + [("teacher_cfg", 50, args.cfg)]:
        vals = score(teacher, prompts, seeds, nfe, guidance, args.scorer)
        rows.append({"recipe": recipe, "nfe": nfe, "seed": 0, "steps": 0, **vals})
        print(f"{recipe} nfe={nfe} " + " ".join(f"{k}={v:.4f}" for k, v in vals.items()), flush=True)
    return rows


def summarise(evals: list[dict], last: int) -> list[dict]:
    """Mean over each (recipe, nfe, seed)'s last ``last`` evaluations; steps = the final step."""
    groups: dict[tuple, list[dict]] = {}
    for r in evals:
        groups.setdefault((r["recipe"], r["nfe"], r["seed"]), []).append(r)
    out = []
    for (recipe, nfe, seed), rs in groups.items():
        tail = sorted(rs, key=lambda r: r["steps"])[-last:]
        out.append({"recipe": recipe, "nfe": nfe, "seed": seed, "steps": tail[-1]["steps"],
                    "toy_fid": float(np.mean([r["toy_fid"] for r in tail])),
                    "toy_align": float(np.mean([r["toy_align"] for r in tail]))})
    return out


def _read_evals(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return [{"recipe": r["recipe"], "nfe": int(r["nfe"]), "seed": int(r["seed"]), "steps": int(r["steps"]),
                 "toy_fid": float(r["toy_fid"]), "toy_align": float(r["toy_align"])} for r in csv.DictReader(f)]


def write_csv(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["recipe", "nfe", "seed", "steps", "toy_fid", "toy_align"])
        w.writeheader()
        w.writerows(rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher", default="demo", help="toy preset or teacher directory")
    ap.add_argument("--scorer", default=None, help="toy scorer preset (default: same as --teacher)")
    ap.add_argument("--recipes", default=",".join(RECIPES))
    ap.add_argument("--steps", type=int, default=300, help="student steps per run (the budget)")
    ap.add_argument("--seeds", default="0,1", help="comma-separated training seeds (>= 2 for the real run)")
    ap.add_argument("--eval-every", type=int, default=50)
    ap.add_argument("--last", type=int, default=3, help="average over the last N evaluations")
    ap.add_argument("--nfe", default="1,2,4")
    ap.add_argument("--prompts", type=int, default=256, help="evaluation prompts")
    ap.add_argument("--samples", type=int, default=2, help="images per evaluation prompt")
    ap.add_argument("--cfg", type=float, default=1.5, help="teacher_cfg guidance (validated in world_validation)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="recipe override for all runs")
    ap.add_argument("--work", default=str(ROOT / "runs" / "distill_world"))
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--jobs", type=int, default=1,
                    help="runs in parallel (1 thread each), started in --recipes order: list the ones you need first")
    ap.add_argument("--progress", action="store_true")
    ap.add_argument("--no-teacher", action="store_true", help="skip the teacher rows")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "distill_world.csv"))
    ap.add_argument("--summarise", nargs="+", type=Path, metavar="EVALS_CSV",
                    help="only rebuild --out from these per-evaluation CSVs (e.g. of runs made in parts)")
    args = ap.parse_args(argv)
    if args.summarise:
        evals = [r for f in args.summarise for r in _read_evals(f)]
        write_csv(Path(args.out), summarise(evals, args.last))
        print(f"wrote {args.out} from {len(evals)} evaluations")
        return 0
    args.scorer = args.scorer or (args.teacher if args.teacher in ("demo", "quick", "tiny") else "demo")
    args.nfe = [int(n) for n in args.nfe.split(",")]
    args.set = {k.strip(): yaml.safe_load(v) for k, v in (kv.split("=", 1) for kv in args.set)}
    if args.threads:
        torch.set_num_threads(args.threads)
    prompts, seeds = eval_set(args.prompts, args.samples)
    evals = [] if args.no_teacher else teacher_rows(args, prompts, seeds)
    runs = [(r, int(s)) for r in args.recipes.split(",") for s in args.seeds.split(",")]
    evals_csv = Path(args.out).with_name(Path(args.out).stem + "_evals.csv")
    if args.jobs <= 1:
        for recipe, seed in runs:
            evals += run_recipe(recipe, seed, args, prompts, seeds, Path(args.work))
            write_csv(evals_csv, evals)
    else:  # one process per run, 1 thread each: small models use 2 cores better this way
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(args.jobs, mp_context=ctx, initializer=torch.set_num_threads,
                                 initargs=(1,)) as pool:
            futures = [pool.submit(run_recipe, r, s, args, prompts, seeds, Path(args.work)) for r, s in runs]
            for fut in as_completed(futures):
                evals += fut.result()
                write_csv(evals_csv, evals)
    write_csv(Path(args.out), summarise(evals, args.last))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
