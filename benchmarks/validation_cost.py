"""What validation during training costs: validation time against training time.

    python benchmarks/validation_cost.py [--teacher bench] [--steps 400] [--sd3]

The world recipes (recipes/world/{dmd,ddmd,cdm}) with the world benchmark's validation: every
200 student steps (and at step 0 and the end), 128 prompts x 2 samples at 1, 2 and 4 NFE, toy_fid
(with its chunk-bootstrap interval) and toy_align. Training time is the sum of the logged step
times (a step's time excludes any validation); validation time is each validation's own wall
time (``validated.json``). With ``--sd3``: the tiny SD3 CDM recipe (tests/tiny_pipelines.py,
32 px) validating every step at 2 NFE with a tiny random CLIP scorer. Writes
benchmarks/results/validation_cost.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).parent / "results"
WORLD_VALIDATION = {"every": 200, "prompts": "toy", "samples_per_prompt": 2, "nfe": [1, 2, 4],
                    "metrics": ["toy_fid", "toy_align"], "select": {"metric": "toy_fid", "nfe": 4}}


def cost(run: Path) -> dict:
    steps = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    vals = [json.loads(p.read_text()) for p in sorted((run / "validation").glob("step-*/validated.json"))]
    # the log holds every log_every-th step, each with its own time (validation excluded): the
    # training time is their mean times the steps run
    per_step = sum(r["step_time"] for r in steps) / max(len(steps), 1)
    n_steps = max((r["step"] for r in steps), default=0)
    train_s = per_step * n_steps
    val_s = sum(v["seconds"] for v in vals)
    per_val = val_s / max(len(vals), 1)
    return {"steps": n_steps, "logged_steps": len(steps), "train_s": train_s, "validations": len(vals), "validation_s": val_s,
            "per_validation_s": per_val, "overhead": val_s / train_s,
            "projected_1000": 6 * per_val / (1000 * per_step)}  # the benchmark's run: 1,000 steps, every 200


def world(recipe: str, teacher: str, steps: int, out: Path) -> dict:
    from cdm_bench.distill import train

    overrides = {"model.teacher": teacher, "train.steps": steps, "train.progress": False, "train.log_every": 1,
                 "train.checkpoint_every": steps, "validate": WORLD_VALIDATION}
    t0 = time.perf_counter()
    train(recipe, overrides, out / recipe.replace("/", "-"))
    return {"recipe": recipe, "teacher": teacher, "wall_s": time.perf_counter() - t0,
            **cost(out / recipe.replace("/", "-"))}


def sd3(out: Path) -> dict:
    sys.path.insert(0, str(ROOT / "tests"))
    sys.path.insert(0, str(ROOT / "tests" / "metrics"))
    sys.path.insert(0, str(ROOT))  # the project's `metrics` package before tests/metrics
    from clip_fixtures import tiny_clip
    from tiny_pipelines import save_tiny_sd3

    from cdm_bench.distill import train

    model = save_tiny_sd3(out / "tiny-sd3", t5=True, seed=0)
    clip = tiny_clip(out / "clip")
    overrides = {"model.pretrained": str(model), "model.prompts": "smoke", "model.resolution": 32,
                 "train.batch_size": 2, "train.steps": 4, "train.checkpoint_every": 4, "train.progress": False, "train.log_every": 1,
                 "validate": {"every": 1, "prompts": "smoke", "nfe": [2], "batch_size": 4,
                              "metrics": [{"name": "clipscore", "model": str(clip)}]}}
    t0 = time.perf_counter()
    train("sd3_medium/cdm", overrides, out / "sd3")
    return {"recipe": "sd3_medium/cdm (tiny, 32 px)", "teacher": "tiny random SD3", "wall_s": time.perf_counter() - t0,
            **cost(out / "sd3")}


def write_md(res: dict, path: Path) -> None:
    lines = ["# Validation during training: its cost", "",
             f"`python benchmarks/validation_cost.py {' '.join(res['argv'])}` on {res['cores']} cores, "
             f"{res['environment']['time']}{' (' + res['note'] + ')' if res.get('note') else ''}.", "",
             "World recipes: validation every 200 student steps (and at step 0 and the end), 128 prompts x 2 samples "
             "at 1/2/4 NFE, toy_fid (chunk-bootstrap interval, 200 resamples) + toy_align. Target: validation <= 15 % "
             "of the training time.", "",
             "| recipe | teacher | student steps | training (s) | validations | validation (s) | per validation (s) | "
             "validation / training (this run) | projected: 1,000 steps, 6 validations |", "|---|---|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        lines.append(f"| {r['recipe']} | {r['teacher']} | {r['steps']} | {r['train_s']:.0f} | {r['validations']} | "
                     f"{r['validation_s']:.1f} | {r['per_validation_s']:.1f} | {100 * r['overhead']:.1f} % | "
                     f"{100 * r['projected_1000']:.1f} % |")
    lines += ["", "Training time: the per-step times logged at every step (train.log_every 1; each excludes any validation), summed; validation time: "
              "each validation's own wall time (sampling every model x NFE entry through `generate`, scoring through "
              "`evaluate`, the CSV, TensorBoard scalars and grid, best/)."]
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipes", nargs="*", default=["world/dmd", "world/ddmd", "world/cdm"])
    ap.add_argument("--teacher", default="bench")
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--sd3", action="store_true")
    ap.add_argument("--note", default="")
    ap.add_argument("--out", type=Path, default=RESULTS / "validation_cost.md")
    args = ap.parse_args()
    from cdm_bench.provenance import environment

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    rows = []
    with tempfile.TemporaryDirectory(prefix="validation-cost-") as tmp:
        for recipe in args.recipes:
            rows.append(world(recipe, args.teacher, args.steps, Path(tmp)))
            print(json.dumps(rows[-1]), flush=True)
        if args.sd3:
            rows.append(sd3(Path(tmp)))
            print(json.dumps(rows[-1]), flush=True)
    res = {"argv": sys.argv[1:], "cores": os.cpu_count(), "note": args.note, "rows": rows, "environment": environment()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(res, indent=1))
    write_md(res, args.out)
    print(args.out.read_text())


if __name__ == "__main__":
    main()
