"""Spine performance: generate/evaluate overhead vs bare model calls, 2-process speed-up, demo time.

    python benchmarks/spine_overhead.py [--preset demo] [--demo | --demo-dir runs/demo]

``--demo`` times a full demo from an empty cache (~12 min); ``--demo-dir`` instead records the
timings of a demo that was already run from an empty cache (its ``demo.json``).

Targets (from the spine and evaluate-phase issues): generate and evaluate wall time within
10 % of the bare model/metric time on the same inputs (evaluate on >= 2,000 images, best of 5);
2-process generate >= 1.7x faster than 1 process; the 2-process evaluate speed-up recorded;
the spine's part of the demo <= 8 min from an empty cache (the whole demo <= 15 min).
``--parts`` re-measures some parts and keeps the others' recorded values.
Writes benchmarks/results/spine_overhead.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"
ROOT = Path(__file__).resolve().parent.parent


def bare_generate(spec: dict, prompts: list[dict], seeds: list[int], batch: int) -> float:
    from cdm_bench.generator import build_generator

    gen, _ = build_generator(spec)
    gen.generate([prompts[0]["prompt"]], [seeds[0]])  # warm-up (load weights)
    t0 = time.perf_counter()
    for i in range(0, len(prompts), batch):
        gen.generate([p["prompt"] for p in prompts[i:i + batch]], seeds[i:i + batch])
    return time.perf_counter() - t0


def timed_generate(spec, ps, out: Path, batch: int, samples: int) -> float:
    from cdm_bench.generate import generate
    from cdm_bench.generator import build_generator

    build_generator(spec)[0].generate(["a red circle"], [0])  # same warm-up as the bare run
    t0 = time.perf_counter()
    generate(spec, ps, out, samples, batch, progress=False)
    return time.perf_counter() - t0


def bare_evaluate(run: Path, metrics: list[dict], batch: int, repeats: int) -> float:
    """The metrics' forward passes alone: images decoded and models loaded before the timer."""
    from cdm_bench.evaluate import build_plans
    from cdm_bench.metric import convert_images
    from cdm_bench.rundir import RunDir

    rd = RunDir(run)
    recs = rd.read_manifest()
    images = rd.load_images(recs)
    plans = build_plans(metrics, batch, "cpu", "float32")
    for p in plans:
        p.metric.setup()
    best = float("inf")
    for _ in range(repeats):  # the first pass warms up (allocator, lazy buffers); keep the best
        t0 = time.perf_counter()
        for p in plans:
            m = p.metric
            m.reset()
            for i in range(0, len(recs), batch):
                b = recs[i:i + batch]
                m.update(convert_images(images[i:i + batch], m.input_format), [r["prompt"] for r in b], b)
            m.compute()
        best = min(best, time.perf_counter() - t0)
    return best


def decode_time(run: Path) -> float:
    """Reading and decoding every PNG once (work evaluate does that the bare run skips)."""
    from cdm_bench.rundir import RunDir

    rd = RunDir(run)
    recs = rd.read_manifest()
    t0 = time.perf_counter()
    rd.load_images(recs)
    return time.perf_counter() - t0


def timed_evaluate(run: Path, metrics: list[dict], batch: int, repeats: int) -> float:
    """``evaluate`` end to end (manifest, hash checks, decode, setup, chunks, files), no cache."""
    from cdm_bench.evaluate import evaluate

    best = float("inf")
    for _ in range(repeats):  # same protocol as the bare run; force=True: no score cache
        t0 = time.perf_counter()
        evaluate(run, metrics, batch_size=batch, force=True, progress=False)
        best = min(best, time.perf_counter() - t0)
    return best


def torchrun_evaluate(run: Path, nproc: int, preset: str, batch: int, repeats: int) -> float:
    """Best wall time of ``torchrun --nproc_per_node nproc -m cdm_bench evaluate`` (1 thread/rank)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    opts = json.dumps({"toy_fid": {"scorer": preset}, "toy_align": {"scorer": preset}})
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
           "--master_port", str(29650 + nproc), "-m", "cdm_bench", "evaluate", "--images", str(run),
           "--metrics", "toy_fid,toy_align", "--metric-options", opts, "--batch-size", str(batch), "--force"]
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, env=env)
        best = min(best, time.perf_counter() - t0)
    return best


def torchrun_generate(spec_file: Path, prompts: str, limit: int, out: Path, nproc: int, batch: int,
                      threads: int | None = 1, samples: int = 4) -> float:
    """Wall time of ``torchrun --nproc_per_node nproc -m cdm_bench generate`` (start-up included).

    ``threads=1`` pins every rank to one thread (torchrun's own default for nproc > 1), so the
    1- vs 2-process comparison measures process scaling, as one GPU vs two would; ``None``
    lets a single process use every core (the toy sampler runs chunks concurrently).
    """
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
           "--master_port", str(29600 + nproc), "-m", "cdm_bench", "generate", "--generator", str(spec_file),
           "--prompts", prompts, "--limit", str(limit), "--samples-per-prompt", str(samples),
           "--batch-size", str(batch), "--out", str(out)]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, env=env)
    return time.perf_counter() - t0


def demo_time(tmp: Path) -> dict:
    env = {**os.environ, "CDM_BENCH_CACHE": str(tmp / "cache")}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "cdm_bench", "demo", "--out", str(tmp / "demo")], env=env, check=False)
    total = time.perf_counter() - t0
    info = json.loads((tmp / "demo" / "demo.json").read_text())
    return {**{f"demo_{k}": v for k, v in info["timings"].items()}, "demo_total_s": total}


def demo_from_dir(path: Path) -> dict:
    info = json.loads((path / "demo.json").read_text())
    return {f"demo_{k}": v for k, v in info["timings"].items()}


TARGETS = [("generate_overhead", "<=", 0.10), ("evaluate_overhead", "<=", 0.10), ("speedup_2proc", ">=", 1.7),
           ("evaluate_speedup_2proc", ">=", None), ("demo_spine_s", "<=", 480), ("demo_total_s", "<=", 900)]


def write_markdown(res: dict, path: Path) -> None:
    cmds = res.get("commands") or {"all parts": res.get("argv", [])}
    lines = ["# Spine overhead", "", f"Preset `{res['preset']}`, {res['images']} images at {res['nfe']} NFE "
             f"({res.get('torchrun_images', 512)} in the torchrun part, "
             f"{res.get('eval_images', res['images'])} in the evaluate part), {res['cores']} cores. Each part as last "
             "measured: " + "; ".join(f"{part}: `{' '.join(['python benchmarks/spine_overhead.py', *argv])}`"
                                      for part, argv in cmds.items()) + ".", "",
             "| measure | value | target | met |", "|---|---|---|---|"]
    for key, op, bound in TARGETS:
        if key in res and bound is None:
            lines.append(f"| {key} | {res[key]:.3f} | recorded | — |")
        elif key in res:
            met = res[key] <= bound if op == "<=" else res[key] >= bound
            lines.append(f"| {key} | {res[key]:.3f} | {op} {bound} | {'yes' if met else 'NO'} |")
    lines += ["", "speedup_2proc: `torchrun` with 1 vs 2 processes, every rank pinned to 1 thread (process scaling,",
              "as 1 vs 2 GPUs); `torchrun_1proc_all_cores_s` is one process left to use both cores. Overheads compare",
              "the pipeline with bare model/metric calls on the same inputs. Evaluate: best of N runs, bare and",
              "pipeline interleaved; the bare run has its images decoded and its models loaded before the timer,",
              "`decode_s` is what decoding every PNG once costs (work the pipeline must do).",
              *([f"The demo_* timings were recorded at {res['demo_recorded_at']} (carried over when a run",
                 "does not time a demo)."] if "demo_recorded_at" in res else []),
              *(["", "Notes (kept in the json's `notes`, written by hand with a run):", ""]
                + [f"- {n}" for n in res.get("notes", [])] if res.get("notes") else []),
              "", "Raw timings (seconds):", ""]
    lines += [f"- {k}: {v:.2f}" for k, v in res.items() if k.endswith("_s") and isinstance(v, float)]
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--preset", default="demo")
    ap.add_argument("--prompts", default="toy")
    ap.add_argument("--nfe", type=int, default=8)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--samples", type=int, default=1, help="images per prompt in the overhead part")
    ap.add_argument("--torchrun-samples", type=int, default=4, help="images per prompt in the torchrun part")
    ap.add_argument("--eval-samples", type=int, default=16,
                    help="images per prompt in the evaluate part (toy: 128 prompts -> 2,048 images)")
    ap.add_argument("--repeats", type=int, default=5, help="evaluate timings: best of N")
    ap.add_argument("--parts", default="generate,evaluate,torchrun",
                    help="which parts to (re-)measure; the others keep their recorded values")
    ap.add_argument("--demo", action="store_true", help="also time a full demo from an empty cache")
    ap.add_argument("--demo-dir", type=Path, help="record the timings of a demo already run from an empty cache")
    args = ap.parse_args()

    from cdm_bench.prompts import load_prompt_set
    from cdm_bench.provenance import environment, sample_seed

    spec = {"generator": "toy", "preset": args.preset, "nfe": args.nfe, "guidance": 1.5}
    metrics = [{"name": "toy_fid", "scorer": args.preset}, {"name": "toy_align", "scorer": args.preset}]
    ps = load_prompt_set(args.prompts)
    jobs = [(p, k) for p in ps.prompts for k in range(args.samples)]  # generate()'s job order
    seeds = [sample_seed(0, p["id"], k) for p, k in jobs]
    tmp = Path(tempfile.mkdtemp(prefix="spine-bench-"))
    parts = set(args.parts.split(","))
    res: dict = {"preset": args.preset, "nfe": args.nfe, "batch": args.batch,
                 "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()}
    if RESULTS.joinpath("spine_overhead.json").exists():  # parts not re-measured keep their values
        old = json.loads((RESULTS / "spine_overhead.json").read_text())
        res.update({k: v for k, v in old.items() if k not in res and k != "environment"})
    commands = res.setdefault("commands", {p: res.get("argv", []) for p in ("generate", "evaluate", "torchrun")})
    for part in parts:  # the command line each part was last measured with
        commands[part] = sys.argv[1:]
    if "generate" in parts or "images" not in res:
        res["images"] = len(jobs)
    if "torchrun" in parts:
        res["torchrun_images"] = 128 * args.torchrun_samples
    if "generate" in parts:
        res["bare_generate_s"] = bare_generate(spec, [p for p, _ in jobs], seeds, args.batch)
        res["generate_s"] = timed_generate(spec, ps, tmp / "g", args.batch, args.samples)
        res["generate_overhead"] = res["generate_s"] / res["bare_generate_s"] - 1
    if "evaluate" in parts:
        from cdm_bench.generate import generate

        gen_spec = {**spec, "nfe": 1, "guidance": 1.0}  # images to score; their quality is irrelevant here
        generate(gen_spec, ps, tmp / "e", args.eval_samples, 128, progress=False)
        res["eval_images"] = len(ps) * args.eval_samples
        bare_evaluate(tmp / "e", metrics, 128, 1)  # warm-up (allocator, page cache)
        bare, timed = [], []
        for _ in range(args.repeats):  # interleaved, so drifts of the machine hit both alike
            bare.append(bare_evaluate(tmp / "e", metrics, 128, 1))
            timed.append(timed_evaluate(tmp / "e", metrics, 128, 1))
        res["bare_evaluate_s"], res["evaluate_s"] = min(bare), min(timed)
        res["bare_evaluate_median_s"], res["evaluate_median_s"] = float(np.median(bare)), float(np.median(timed))
        res["evaluate_overhead"] = res["evaluate_s"] / res["bare_evaluate_s"] - 1
        res["decode_s"] = decode_time(tmp / "e")
        res["torchrun_evaluate_1proc_s"] = torchrun_evaluate(tmp / "e", 1, args.preset, 128, 3)
        res["torchrun_evaluate_2proc_s"] = torchrun_evaluate(tmp / "e", 2, args.preset, 128, 3)
        res["evaluate_speedup_2proc"] = res["torchrun_evaluate_1proc_s"] / res["torchrun_evaluate_2proc_s"]
    spec_file = tmp / "spec.yaml"
    spec_file.write_text(json.dumps(spec))
    n = args.torchrun_samples
    if "torchrun" in parts:
        t1 = torchrun_generate(spec_file, args.prompts, 128, tmp / "t1", 1, 32, samples=n)
        t2 = torchrun_generate(spec_file, args.prompts, 128, tmp / "t2", 2, 32, samples=n)
        t1all = torchrun_generate(spec_file, args.prompts, 128, tmp / "t1all", 1, 32, threads=None, samples=n)
        res.update(torchrun_1proc_s=t1, torchrun_2proc_s=t2, speedup_2proc=t1 / t2, torchrun_1proc_all_cores_s=t1all)
    if args.demo or args.demo_dir:
        res.update(demo_time(tmp) if args.demo else demo_from_dir(args.demo_dir))
        res["demo_recorded_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    if "demo_total_s" in res:  # the spine's part: everything but distilling and sampling the students
        res["demo_spine_s"] = res["demo_total_s"] - res.get("demo_students_s", 0.0) - res.get("demo_student_gen_s", 0.0)
    res["environment"] = environment()
    shutil.rmtree(tmp, ignore_errors=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "spine_overhead.json").write_text(json.dumps(res, indent=2, default=str))
    write_markdown(res, RESULTS / "spine_overhead.md")
    print(json.dumps({k: v for k, v in res.items() if k != "environment"}, indent=2, default=str))


if __name__ == "__main__":
    main()
