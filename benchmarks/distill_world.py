r"""Distillation benchmark on the embedded world: every recipe, same teacher, same step budget.

For each recipe (dmd, ddmd, cdm and the two ablations), guidance value and seed, train from the
same teacher, evaluate the EMA student every ``--eval-every`` student steps at 1, 2 and 4 NFE
(toy_fid, toy_align), and report the mean over the last ``--last`` evaluations. Training proceeds
in segments with exact resume (a segmented run equals an uninterrupted one), so evaluating along
the way changes nothing. Teacher rows: 1, 2, 4, 50 NFE without CFG (recipe ``teacher``) and 50
NFE over the ``--teacher-cfg`` sweep (``teacher_cfg``), for each of ``--teacher-seeds`` (sampling
noise sets; ``--teacher-only`` computes just these).

Guidance sweeps (``--guidance RECIPE=v1,v2``, repeatable) vary each method's own guidance key:
``losses.dmd2.real_guidance`` (the real score's CFG) for a recipe with a ``dmd2`` loss, else
``losses.ca.guidance`` (the CA weight). Recipes without a sweep run at their own value. Every run
(recipe x guidance x seed) has its own resumable directory ``<work>/<label>-g<value>-seed<seed>``
whose ``world_evals.json`` caches its evaluations: re-running the same command skips finished
runs and continues longer ``--steps`` from the last checkpoint. Every sampling (teacher and
students) uses ``--shift`` (default: the teacher preset's, bench 3.0, else 1.0); students are
trained with the same shift.

Output: ``--out`` (default ``benchmarks/results/distill_world.csv``) with columns
``recipe, nfe, seed, steps, guidance, toy_fid, toy_align`` (guidance: the method's guidance value
for students, the CFG for teacher rows), one row per (recipe, guidance, nfe, seed); every
evaluation (the convergence curves) goes to ``<out stem>_evals.csv``. The frontier report:
``python benchmarks/distill_frontier.py --evals <out stem>_evals.csv``.

A reduced run::

    python benchmarks/distill_world.py --teacher quick --steps 40 --eval-every 20 --seeds 0 \
        --prompts 64 --recipes ddmd,cdm --guidance cdm=1,2 --teacher-cfg 1.5,3
"""

from __future__ import annotations

import argparse
import csv
import functools
import json
import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np
import torch
import yaml

ROOT = Path(__file__).resolve().parent.parent
RECIPES = ["dmd", "ddmd", "cdm", "cdm_no_offtraj", "cdm_fixed_schedule"]
FIELDS = ["recipe", "nfe", "seed", "steps", "guidance", "toy_fid", "toy_align"]
EVAL_PROMPT_SEED = 987_654  # evaluation prompts; training prompts come from the run seeds
TEACHER_SEED_STRIDE = 10_000_000  # noise seeds of teacher sampling set s: the eval seeds + s * this


def make_metrics(scorer: str) -> list:
    from cdm_bench.evaluate import build_metric

    return [build_metric(name, {"scorer": scorer}) for name in ("toy_fid", "toy_align")]


def score(model, prompts: list[str], seeds: list[int], nfe: int, guidance: float, scorer: str,
          shift: float = 1.0, batch: int = 64) -> dict:
    """Sample ``model`` at ``nfe`` and score the images with fresh toy_fid / toy_align metrics."""
    from cdm_bench.metric import convert_images
    from cdm_bench.toy.sampling import sample_images

    metrics = make_metrics(scorer)
    for start in range(0, len(prompts), batch):
        p, s = prompts[start:start + batch], seeds[start:start + batch]
        images = sample_images(model, p, s, nfe=nfe, guidance=guidance, shift=shift)
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


# -- guidance ----------------------------------------------------------------------------------
def guidance_setting(recipe: str, overrides: dict | None = None) -> tuple[str, float]:
    """The recipe's own guidance key and value: the real score's CFG of a ``dmd2`` loss, else the
    CA weight ``losses.ca.guidance``."""
    from cdm_bench.distill.config import load_recipe

    losses = load_recipe(recipe, overrides or {}).losses
    if "dmd2" in losses:
        return "losses.dmd2.real_guidance", float(losses["dmd2"].params.real_guidance)
    if "ca" in losses:
        return "losses.ca.guidance", float(losses["ca"].params.guidance)
    raise ValueError(f"recipe {recipe!r} has neither a 'dmd2' nor a 'ca' loss, so it has no guidance "
                     f"key to sweep (losses: {', '.join(losses) or 'none'})")


@functools.lru_cache(maxsize=None)
def default_guidance(label: str) -> float | None:
    """Guidance of a row from a CSV written before the guidance column existed: 1 for teacher
    rows, the recipe file's value for students (recipes/ or recipes/experiments/), else None."""
    if label == "teacher":
        return 1.0
    if label == "teacher_cfg":
        return None  # the CFG of old teacher_cfg rows is not recorded (the script's default was 1.5)
    from cdm_bench.errors import CdmBenchError
    from cdm_bench.paths import recipes_dir

    for candidate in (label, recipes_dir() / "experiments" / f"{label}.yaml"):
        try:
            return guidance_setting(str(candidate))[1]
        except (CdmBenchError, OSError, ValueError):
            continue
    return None


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v.strip()]


def parse_sweeps(items: list[str], recipes: list[str]) -> dict[str, list[float]]:
    """``RECIPE=v1,v2`` items -> {recipe as given in --recipes: values}."""
    out = {}
    for item in items:
        name, sep, values = item.partition("=")
        match = [r for r in recipes if name.strip() in (r, Path(r).stem)]
        try:
            ok = bool(sep and match and _floats(values))
        except ValueError:
            ok = False
        if not ok:
            raise ValueError(f"--guidance {item!r}: expected RECIPE=v1,v2,... with RECIPE one of --recipes "
                             f"({', '.join(recipes)})")
        out[match[0]] = _floats(values)
    return out


def plan_runs(args) -> list[dict]:
    """recipe x guidance value x seed, in --recipes order (the order --jobs starts them in)."""
    recipes = [r.strip() for r in args.recipes.split(",") if r.strip()]
    sweeps = parse_sweeps(args.guidance, recipes)
    runs = []
    for recipe in recipes:
        key, own = guidance_setting(recipe, args.set)
        for g in sweeps.get(recipe, [own]):
            runs += [{"recipe": recipe, "label": Path(recipe).stem, "key": key, "guidance": g, "seed": s}
                     for s in args.seeds]
    return runs


def run_name(label: str, guidance: float, seed: int) -> str:
    return f"{label}-g{guidance:g}-seed{seed}"


# -- evaluation cache (what makes a re-run skip finished work) ---------------------------------
class EvalCache:
    """Evaluations stored next to a run as JSON, valid only for the same evaluation settings."""

    def __init__(self, path: Path, key: dict):
        self.path, self.key, self.values = Path(path), key, {}
        if self.path.is_file():
            data = json.loads(self.path.read_text())
            if data.get("key") == key:
                self.values = data["values"]

    def get(self, ident: str) -> dict | None:
        return self.values.get(ident)

    def put(self, ident: str, vals: dict) -> None:
        self.values[ident] = vals
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps({"key": self.key, "values": self.values}, indent=1))
        os.replace(tmp, self.path)


def eval_key(args) -> dict:
    return {"teacher": args.teacher, "scorer": args.scorer, "shift": args.shift, "prompts": args.prompts,
            "samples": args.samples, "prompt_seed": EVAL_PROMPT_SEED}


def eval_points(steps: int, every: int) -> list[int]:
    points = list(range(every, steps + 1, every))
    if not points or points[-1] != steps:
        points.append(steps)
    return points


# -- runs ----------------------------------------------------------------------------------------
def run_recipe(run: dict, args, prompts, seeds, work: Path) -> list[dict]:
    """Train one (recipe, guidance, seed) run to each evaluation point and evaluate it there."""
    from cdm_bench.distill import export, train
    from cdm_bench.distill.checkpoint import PREFIX
    from cdm_bench.toy.model import ToyFlowModel

    label, g, seed = run["label"], run["guidance"], run["seed"]
    run_dir = work / run_name(label, g, seed)
    cache = EvalCache(run_dir / "world_evals.json", eval_key(args))
    rows, tag = [], f"{label} g={g:g} seed={seed}"
    for step in eval_points(args.steps, args.eval_every):
        todo = [n for n in args.nfe if cache.get(f"{step}/{n}") is None]
        if todo:
            t0 = time.perf_counter()
            overrides = {"model.teacher": args.teacher, "model.shift": args.shift, "train.steps": step,
                         "train.seed": seed, "train.checkpoint_every": args.eval_every,
                         "train.keep_checkpoints": 1, "train.progress": args.progress, **args.set,
                         run["key"]: g}
            ckpt = train(run["recipe"], overrides, run_dir, resume=True)
            if int(ckpt.name[len(PREFIX):]) != step:  # the run went past it before (older settings)
                print(f"{tag} step={step} nfe={todo}: not evaluated (the run is already at {ckpt.name})",
                      flush=True)
            else:
                student = ToyFlowModel.from_pretrained(str(export(ckpt, run_dir / "export", ema=True))).eval()
                train_s = time.perf_counter() - t0
                for nfe in todo:
                    cache.put(f"{step}/{nfe}", score(student, prompts, seeds, nfe, 1.0, args.scorer, args.shift))
                    print(f"{tag} step={step} nfe={nfe} " + _fmt(cache.get(f"{step}/{nfe}"))
                          + f" (train {train_s:.0f}s)", flush=True)
        rows += [{"recipe": label, "nfe": nfe, "seed": seed, "steps": step, "guidance": g, **cache.get(f"{step}/{nfe}")}
                 for nfe in args.nfe if cache.get(f"{step}/{nfe}") is not None]
    return rows


def _fmt(vals: dict) -> str:
    return " ".join(f"{k}={v:.4f}" for k, v in vals.items())


def teacher_rows(args, prompts, seeds) -> list[dict]:
    """1/2/4/50 NFE without CFG and 50 NFE over --teacher-cfg, per sampling-noise set."""
    from cdm_bench.toy.adapter import ToyAdapter

    cache = EvalCache(Path(args.work) / "teacher_evals.json", eval_key(args))
    points = [("teacher", n, 1.0) for n in (1, 2, 4, 50)] + [("teacher_cfg", 50, c) for c in args.teacher_cfg]
    teacher, rows = None, []
    for tseed in args.teacher_seeds:
        noise = [s + TEACHER_SEED_STRIDE * tseed for s in seeds]
        for recipe, nfe, g in points:
            ident = f"{recipe}/{nfe}/{g:g}/{tseed}"
            if cache.get(ident) is None:
                if teacher is None:
                    teacher = ToyAdapter(teacher=args.teacher).load_teacher()
                cache.put(ident, score(teacher, prompts, noise, nfe, g, args.scorer, args.shift))
                print(f"{recipe} nfe={nfe} cfg={g:g} seed={tseed} " + _fmt(cache.get(ident)), flush=True)
            rows.append({"recipe": recipe, "nfe": nfe, "seed": tseed, "steps": 0, "guidance": g,
                         **cache.get(ident)})
    return rows


def summarise(evals: list[dict], last: int) -> list[dict]:
    """Mean over each (recipe, guidance, nfe, seed)'s last ``last`` evaluations; steps = the final step."""
    groups: dict[tuple, list[dict]] = {}
    for r in evals:
        groups.setdefault((r["recipe"], r.get("guidance"), r["nfe"], r["seed"]), []).append(r)
    out = []
    for (recipe, guidance, nfe, seed), rs in groups.items():
        tail = sorted(rs, key=lambda r: r["steps"])[-last:]
        out.append({"recipe": recipe, "nfe": nfe, "seed": seed, "steps": tail[-1]["steps"], "guidance": guidance,
                    "toy_fid": float(np.mean([r["toy_fid"] for r in tail])),
                    "toy_align": float(np.mean([r["toy_align"] for r in tail]))})
    return out


def _read_evals(path: Path) -> list[dict]:
    """Per-evaluation rows; a CSV without (or with an empty) guidance column gets default_guidance."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    out = []
    for r in rows:
        g = r.get("guidance")
        out.append({"recipe": r["recipe"], "nfe": int(r["nfe"]), "seed": int(r["seed"]), "steps": int(r["steps"]),
                    "guidance": float(g) if g not in (None, "") else default_guidance(r["recipe"]),
                    "toy_fid": float(r["toy_fid"]), "toy_align": float(r["toy_align"])})
    return out


def _ident(row: dict) -> tuple:
    return tuple(row.get(k) for k in ("recipe", "guidance", "nfe", "seed", "steps"))


def write_csv(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS, extrasaction="ignore")
        w.writeheader()
        w.writerows([{**r, "guidance": "" if r.get("guidance") is None else r["guidance"]} for r in rows])


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher", default="demo", help="toy preset (demo, bench, ...) or teacher directory")
    ap.add_argument("--scorer", default=None, help="toy scorer preset (default: the teacher's, else demo)")
    ap.add_argument("--recipes", default=",".join(RECIPES), help="recipe names or YAML files")
    ap.add_argument("--guidance", action="append", default=[], metavar="RECIPE=V1,V2",
                    help="sweep RECIPE's own guidance key over these values (repeatable)")
    ap.add_argument("--steps", type=int, default=300, help="student steps per run (the budget)")
    ap.add_argument("--seeds", default="0,1", help="comma-separated training seeds")
    ap.add_argument("--eval-every", type=int, default=50)
    ap.add_argument("--last", type=int, default=3, help="average over the last N evaluations")
    ap.add_argument("--nfe", default="1,2,4")
    ap.add_argument("--prompts", type=int, default=256, help="evaluation prompts")
    ap.add_argument("--samples", type=int, default=2, help="images per evaluation prompt")
    ap.add_argument("--teacher-cfg", "--cfg", dest="teacher_cfg", default="1.5",
                    help="comma-separated CFG values of the 50-step teacher_cfg rows")
    ap.add_argument("--teacher-seeds", default="0", help="sampling-noise sets of the teacher rows")
    ap.add_argument("--shift", type=float, default=None,
                    help="sampler shift for every sampling and training (default: the teacher preset's)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="recipe override for all runs")
    ap.add_argument("--work", default=None, help="run directories (default: runs/distill_world/<teacher>)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--jobs", type=int, default=1,
                    help="runs in parallel (1 thread each), started in --recipes order: list the ones you need first")
    ap.add_argument("--progress", action="store_true")
    ap.add_argument("--no-teacher", action="store_true", help="skip the teacher rows")
    ap.add_argument("--teacher-only", action="store_true", help="only the teacher rows (no student runs)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "distill_world.csv"))
    ap.add_argument("--summarise", nargs="+", type=Path, metavar="EVALS_CSV",
                    help="only rebuild --out and its _evals.csv from these per-evaluation CSVs (e.g. of "
                         "runs made in parts; duplicate evaluations are kept once)")
    return ap


def resolve_args(ap: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
    from cdm_bench.toy.train import preset_shift

    args = ap.parse_args(argv)
    args.scorer = args.scorer or (args.teacher if args.teacher in ("demo", "quick", "tiny") else "demo")
    args.shift = float(preset_shift(args.teacher) if args.shift is None else args.shift)
    args.work = args.work or str(ROOT / "runs" / "distill_world" / Path(args.teacher).name)
    args.recipes = "" if args.teacher_only else args.recipes
    args.nfe = [int(n) for n in args.nfe.split(",")]
    args.seeds = [int(s) for s in args.seeds.split(",")]
    args.teacher_seeds = [int(s) for s in args.teacher_seeds.split(",")]
    args.teacher_cfg = _floats(args.teacher_cfg)
    args.set = {k.strip(): yaml.safe_load(v) for k, v in (kv.split("=", 1) for kv in args.set)}
    return args


def train_all(runs: list[dict], args, prompts, seeds, evals: list[dict], evals_csv: Path) -> list[dict]:
    work = Path(args.work)
    if args.jobs <= 1:
        for run in runs:
            evals += run_recipe(run, args, prompts, seeds, work)
            write_csv(evals_csv, evals)
        return evals
    ctx = multiprocessing.get_context("spawn")  # one process per run, 1 thread each: 2 cores used better
    with ProcessPoolExecutor(args.jobs, mp_context=ctx, initializer=torch.set_num_threads, initargs=(1,)) as pool:
        futures = [pool.submit(run_recipe, run, args, prompts, seeds, work) for run in runs]
        for fut in as_completed(futures):
            evals += fut.result()
            write_csv(evals_csv, evals)
    return evals


def main(argv=None) -> int:
    ap = build_parser()
    args = resolve_args(ap, argv)
    if args.summarise:
        evals = list({_ident(r): r for f in args.summarise for r in _read_evals(f)}.values())
        write_csv(Path(args.out).with_name(Path(args.out).stem + "_evals.csv"), evals)
        write_csv(Path(args.out), summarise(evals, args.last))
        print(f"wrote {args.out} from {len(evals)} evaluations")
        return 0
    try:
        runs = plan_runs(args)
    except ValueError as e:
        ap.error(str(e))
    if args.threads:
        torch.set_num_threads(args.threads)
    prompts, seeds = eval_set(args.prompts, args.samples)
    evals = [] if args.no_teacher else teacher_rows(args, prompts, seeds)
    evals_csv = Path(args.out).with_name(Path(args.out).stem + "_evals.csv")
    evals = train_all(runs, args, prompts, seeds, evals, evals_csv)
    write_csv(evals_csv, evals)
    write_csv(Path(args.out), summarise(evals, args.last))
    print(f"wrote {args.out} and {evals_csv} ({len(runs)} runs, shift {args.shift:g})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
