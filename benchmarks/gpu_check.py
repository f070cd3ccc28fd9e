"""The one-command GPU check, unattended, for a machine with one CUDA GPU (under 10 minutes).

    python benchmarks/gpu_check.py --out benchmarks/results/gpu_check.md
    python benchmarks/gpu_check.py --dry-run            (this CPU: every step at tiny size, seconds)

From a fresh clone with the README's install plus a CUDA torch (``pip install torch`` from the
PyTorch CUDA index, then ``pip install -e .[train,eval,dev]``). Steps, each in its own process
with a time limit, their reports collected into one results file:

1. SD3-Medium 1024 px latency and peak memory, the 4-NFE student vs the teacher at 28/50 steps
   + CFG 4.5, real-size random weights (``benchmarks/sd3_gpu_latency.py``);
2. evaluate vs the bare forward per scorer at full size, random weights, bf16
   (``benchmarks/scorers.py --device cuda --dtype bfloat16``);
3. two steps of the SD3 CDM recipe at real size (random weights, batch 2, gradient
   checkpointing, bf16), ``torch.cuda.max_memory_allocated`` beside the estimate of
   ``benchmarks/sd3_memory.py`` for one GPU at the same batch.

``--dry-run`` runs the same three steps on this CPU with tiny configs (so the script itself is
tested here) and writes to a temporary file unless ``--out`` is given.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

LIMITS = {"latency": 240, "scorers": 240, "train": 300}


def steps(dry: bool, tmp: Path) -> dict[str, list[str]]:
    py = sys.executable
    if dry:
        return {"latency": [py, "benchmarks/sd3_gpu_latency.py", "--device", "cpu", "--tiny", "--repeats", "1",
                            "--out", str(tmp / "latency.md")],
                "scorers": [py, "benchmarks/scorers.py", "--tiny", "--device", "cpu", "--images", "4", "--batch", "2",
                            "--scorers", "clipscore,hpsv2", "--cache", str(tmp / "scorer-cache"), "--out",
                            str(tmp / "scorers.md")],
                "train": [py, __file__, "--train-step", "--tiny", "--device", "cpu", "--out", str(tmp / "train.md")]}
    return {"latency": [py, "benchmarks/sd3_gpu_latency.py", "--out", str(tmp / "latency.md")],
            "scorers": [py, "benchmarks/scorers.py", "--device", "cuda", "--dtype", "bfloat16", "--images", "256",
                        "--batch", "32", "--cache", str(tmp / "scorer-cache"), "--out", str(tmp / "scorers.md")],
            "train": [py, __file__, "--train-step", "--device", "cuda", "--batch", "2", "--out", str(tmp / "train.md")]}


# -- step 3: two real-size SD3 CDM steps -----------------------------------------------------------------------
def random_sd3_adapter(tiny: bool, device: str):
    """The SD3 adapter over a random-weight pipeline built in memory (nothing is read from disk)."""
    import torch
    from sd3_gpu_latency import build_pipeline

    from cdm_bench.distill.models.sd3 import SD3Adapter

    pipe = build_pipeline(tiny, device, dtype=torch.bfloat16)
    transformer = pipe.transformer
    pipe.transformer = None

    class RandomSD3(SD3Adapter):
        @property
        def pipe(self):
            return pipe

        def teacher_spec(self) -> dict:
            config = {k: v for k, v in dict(transformer.config).items() if not k.startswith("_")}
            return {"class": "diffusers:SD3Transformer2DModel", "config": config}

        def load_teacher(self):
            return transformer.float().eval()

    return RandomSD3(pretrained="random", prompts="smoke", resolution=64 if tiny else 1024)


def train_step(args) -> int:
    import torch

    from cdm_bench.distill import train

    cuda = args.device.startswith("cuda")
    adapter = random_sd3_adapter(args.tiny, args.device)
    overrides = {"train.steps": 2, "train.batch_size": args.batch, "train.checkpoint_every": 1000,
                 "train.progress": False, "train.tensorboard": False, "model.resolution": 64 if args.tiny else 1024}
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        train("sd3_medium/cdm", overrides, Path(out) / "run", adapter=adapter)
    seconds = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
    estimate = None
    if cuda and not args.tiny:
        import sd3_memory

        s = sd3_memory.Setting(batch=args.batch, world=1)
        estimate = sd3_memory.estimate(sd3_memory.measure(s), s)["total"] / 2**30
    lines = ["# Two SD3 CDM steps" + (" (TINY smoke run)" if args.tiny else " at real size, random weights"), "",
             f"device {args.device}, batch {args.batch}, bf16, gradient checkpointing (the recipe's own keys); "
             f"2 student steps in {seconds:.1f} s (model build and loading included)", "",
             f"max_memory_allocated: {'n/a (cpu)' if peak is None else f'{peak:.2f} GiB'}; "
             f"estimate (benchmarks/sd3_memory.py, 1 GPU, batch {args.batch}): "
             f"{'n/a' if estimate is None else f'{estimate:.2f} GiB'}"]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(json.dumps({"seconds": seconds, "peak_gib": peak, "estimate_gib": estimate}))
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--dry-run", action="store_true", help="this CPU, tiny configs: checks the script itself")
    ap.add_argument("--train-step", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--device", default="cuda", help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, default=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.train_step:
        return train_step(args)
    out = args.out or (Path(tempfile.mkdtemp(prefix="gpu-check-")) / "gpu_check.md" if args.dry_run
                       else ROOT / "benchmarks" / "results" / "gpu_check.md")
    if not args.dry_run:
        import torch

        if not torch.cuda.is_available():
            raise SystemExit("gpu_check: no CUDA GPU here (torch.cuda.is_available() is False); --dry-run runs the "
                             "steps at tiny size on the CPU")
    sections, failed = [f"# GPU check{' (dry run, CPU, tiny sizes)' if args.dry_run else ''}", ""], []
    with tempfile.TemporaryDirectory(prefix="gpu-check-steps-") as tmp:
        for name, cmd in steps(args.dry_run, Path(tmp)).items():
            t0 = time.perf_counter()
            try:
                proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=LIMITS[name])
                code, tail = proc.returncode, proc.stderr[-1500:]
            except subprocess.TimeoutExpired:
                code, tail = "timeout", f"killed after {LIMITS[name]} s"
            report = next(Path(tmp).glob(f"{name}*.md"), None)
            sections += [f"## {name} ({time.perf_counter() - t0:.0f} s, exit {code})", "",
                         report.read_text() if report and code == 0 else f"```\n{tail}\n```", ""]
            if code != 0:
                failed.append(name)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(sections))
    print(f"wrote {out}" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
