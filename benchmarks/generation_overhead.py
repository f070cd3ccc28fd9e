"""cdm-bench generate vs the bare diffusers call, on a real (random-weight) SD3 pipeline.

    .venv/bin/python benchmarks/generation_overhead.py [--images 16] [--repeats 3] [--threads 1]

A StableDiffusion3Pipeline built from configs (tests/tiny_pipelines.py: 6-layer transformer,
4 heads x 32, two CLIPs + T5, a 3-block VAE, 256 x 256 images, 1,024 image tokens) runs the
sd3-medium-turbo recipe (4 steps, guidance 1.0, the turbo sigmas). Two paths make the same images:

* **cdm-bench**: ``generate({generator: sd3-medium-turbo, model: DIR, resolution: 256}, ...)``
  end to end (run directory, identity, pipeline load, PNG encoding + sha256 on the writer
  thread, per-rank records, manifest, generation.json), ``--batch-size 4``;
* **bare**: ``StableDiffusion3Pipeline.from_pretrained(DIR)`` then one call per image with the
  same per-sample seeds (the generator's default ``micro_batch: 1``), images kept in memory.

The PNGs must equal the bare images pixel for pixel. Both paths are timed ``--repeats`` times,
alternating, and the best of each is kept (the machine is shared). Target: cdm-bench <= 1.10x bare.
Writes benchmarks/results/generation_overhead.json and .md.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).parent / "results"
sys.path.insert(0, str(ROOT / "tests"))

SIZE = {"layers": 6, "heads": 4, "head_dim": 32, "image_size": 256, "vae_blocks": 3}


def prompt_set(n: int):
    from cdm_bench.prompts import PromptSet

    words = ["a red car", "a cat on a sofa", "a lighthouse at dusk", "two birds on a wire"]
    return PromptSet("bench", "1", [{"id": f"p{i:03d}", "prompt": f"{words[i % 4]}, photo {i}"} for i in range(n)])


def spec(folder: Path) -> dict:
    return {"generator": "sd3-medium-turbo", "model": str(folder), "resolution": SIZE["image_size"]}


def bare(folder: Path, ps, seed: int) -> tuple[float, np.ndarray]:
    """Load + one pipeline call per image; returns (seconds, uint8 images)."""
    import torch
    from diffusers import StableDiffusion3Pipeline

    from cdm_bench.provenance import sample_seed

    t0 = time.perf_counter()
    pipe = StableDiffusion3Pipeline.from_pretrained(folder, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    images = []
    for p in ps.prompts:
        g = torch.Generator("cpu").manual_seed(sample_seed(seed, p["id"], 0))
        with torch.inference_mode():
            out = pipe(prompt=[p["prompt"]], num_inference_steps=4, sigmas=[1.0, 0.75, 0.5, 0.25],
                       guidance_scale=1.0, generator=[g], output_type="np",
                       height=SIZE["image_size"], width=SIZE["image_size"]).images
        images.append((np.clip(out, 0, 1) * 255).round().astype(np.uint8))
    return time.perf_counter() - t0, np.concatenate(images)


def through_cdm_bench(folder: Path, ps, out: Path, seed: int, batch: int) -> tuple[float, np.ndarray, dict]:
    from PIL import Image

    from cdm_bench.generate import generate

    t0 = time.perf_counter()
    generate(spec(folder), ps, out, batch_size=batch, seed=seed, progress=False)
    dt = time.perf_counter() - t0
    images = np.stack([np.asarray(Image.open(out / "images" / f"{p['id']}_0.png")) for p in ps.prompts])
    return dt, images, json.loads((out / "generation.json").read_text())


def run(n_images: int, repeats: int, threads: int, batch: int, keep: Path | None) -> dict:
    import torch

    import cdm_bench  # noqa: F401  (torchvision compat hook before transformers loads)
    from tiny_pipelines import save_tiny_sd3

    torch.set_num_threads(threads)
    work = Path(tempfile.mkdtemp(prefix="gen-overhead-"))
    folder = save_tiny_sd3(work / "sd3", t5=True, seed=0, **SIZE)
    ps = prompt_set(n_images)
    bare(folder, prompt_set(1), 0)  # warm-up: imports, allocator, OS file cache
    times = {"bare_s": [], "cdm_bench_s": [], "in_run_model_s": []}
    for r in range(repeats):
        dt, ref = bare(folder, ps, 0)
        times["bare_s"].append(dt)
        dt, got, ident = through_cdm_bench(folder, ps, work / f"run{r}", 0, batch)
        times["cdm_bench_s"].append(dt)
        times["in_run_model_s"].append(ident["timing"][-1]["ranks"][0]["model_s"])
        if not np.array_equal(ref, got):
            raise SystemExit(f"repeat {r}: the PNGs differ from the bare images "
                             f"({int((ref != got).sum())} values)")
    if keep:
        keep.mkdir(parents=True, exist_ok=True)
        (keep / "example.png").write_bytes((work / "run0" / "images" / f"{ps.prompts[0]['id']}_0.png").read_bytes())
    params = _params(folder)
    shutil.rmtree(work, ignore_errors=True)
    best_bare, best_cdm = min(times["bare_s"]), min(times["cdm_bench_s"])
    timing = ident["timing"][-1]["ranks"][0]
    paired = [c / b for b, c in zip(times["bare_s"], times["cdm_bench_s"])]
    in_run = [c / m for c, m in zip(times["cdm_bench_s"], times["in_run_model_s"])]
    return {"images": n_images, "repeats": repeats, "torch_threads": threads, "batch_size": batch,
            "pipeline": {**SIZE, "t5": True, "steps": 4, "transformer_params": params},
            **{k: [round(t, 3) for t in v] for k, v in times.items()},
            "median_paired_ratio": round(float(np.median(paired)), 3),
            "in_run_ratio": round(min(in_run), 3),
            "best_bare_s": round(best_bare, 3), "best_cdm_bench_s": round(best_cdm, 3),
            "ratio": round(best_cdm / best_bare, 3),
            "last_run_split_s": {k: round(v, 3) for k, v in timing.items() if k.endswith("_s")},
            "identical_images": True, "effective_sigmas": ident["provenance"]["effective_sigmas"],
            "machine": f"{platform.processor() or platform.machine()}, shared 2-core CPU, no GPU",
            "time": time.strftime("%Y-%m-%d %H:%M")}


def _params(folder: Path) -> int:
    from safetensors import safe_open

    with safe_open(str(folder / "transformer" / "diffusion_pytorch_model.safetensors"), "pt") as f:
        return int(sum(f.get_tensor(k).numel() for k in f.keys()))


def write_markdown(res: dict, path: Path) -> None:
    p = res["pipeline"]
    lines = [
        "# Generation overhead: `cdm-bench generate` vs the bare diffusers call",
        "",
        f"Measured {res['time']} on {res['machine']} (other workers were running: numbers are noisy;",
        f"best of {res['repeats']} alternating repeats), torch threads = {res['torch_threads']}.",
        "",
        f"Pipeline: a real `StableDiffusion3Pipeline` with random weights (tests/tiny_pipelines.py): "
        f"{p['layers']}-layer SD3 transformer ({p['heads']} heads x {p['head_dim']}, "
        f"{p['transformer_params']:,} parameters), two CLIPs + T5, {p['vae_blocks']}-block VAE, "
        f"{p['image_size']} x {p['image_size']} images, the sd3-medium-turbo recipe (4 steps, guidance 1.0, "
        f"effective sigmas {res['effective_sigmas']}).",
        "",
        "| path | what is timed | best (s) | all repeats (s) |",
        "|---|---|---|---|",
        f"| bare | `from_pretrained` + one pipeline call per image, images in memory | {res['best_bare_s']} | "
        f"{', '.join(f'{t:.2f}' for t in res['bare_s'])} |",
        f"| cdm-bench | `generate()` end to end: run dir, identity, load, PNG + sha256, records, manifest | "
        f"{res['best_cdm_bench_s']} | {', '.join(f'{t:.2f}' for t in res['cdm_bench_s'])} |",
        "",
        f"**cdm-bench / bare = {res['ratio']}** for {res['images']} images (target <= 1.10); the PNGs equal the "
        f"bare images pixel for pixel. Split of the last cdm-bench run (rank 0): {res['last_run_split_s']} "
        f"(`write_s` overlaps `model_s` on the writer thread; `wait_s` is the time the model loop waited for it).",
        "",
        f"The shared machine makes wall times swing by up to 50 % between repeats, so two steadier views: "
        f"the median of the per-repeat ratios (cdm-bench run / the bare run just before it) is "
        f"**{res['median_paired_ratio']}**, and inside one cdm-bench run, its wall time over the time spent in "
        f"the generator's calls (`model_s`, which includes the pipeline load) is **{res['in_run_ratio']}** "
        f"(best repeat): everything cdm-bench adds around the model (directory, identity with git and package "
        f"versions, PNG encoding and sha256 not hidden by the writer thread, records, manifest) costs "
        f"{100 * (res['in_run_ratio'] - 1):.1f} % here.",
        "",
        "Rerun: `.venv/bin/python benchmarks/generation_overhead.py "
        f"--images {res['images']} --repeats {res['repeats']} --threads {res['torch_threads']}`",
        ""]
    path.write_text("\n".join(lines))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--keep-example", type=Path, default=None, help="copy one generated PNG here")
    args = ap.parse_args(argv)
    res = run(args.images, args.repeats, args.threads, args.batch_size, args.keep_example)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "generation_overhead.json").write_text(json.dumps(res, indent=2) + "\n")
    write_markdown(res, RESULTS / "generation_overhead.md")
    print(f"bare {res['best_bare_s']} s, cdm-bench {res['best_cdm_bench_s']} s, ratio {res['ratio']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
