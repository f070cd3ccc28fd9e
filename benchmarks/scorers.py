"""Scorer throughput and memory at full size (random weights) on this CPU.

    python benchmarks/scorers.py [--images 24] [--batch 8] [--scorers clipscore,pickscore,aesthetic,hpsv2]

For each scorer, in its own subprocess (so peak memory is the scorer's): build the real
architecture at full size with random weights (CLIP ViT-L/14 for clipscore and aesthetic, CLIP
ViT-H/14 for pickscore, open_clip ViT-H-14 for hpsv2), save it in the published layout, then
time (a) the bare model forward over the already decoded images and (b) ``cdm-bench evaluate``
over the same images as PNGs (manifest, hash checks, decode, chunks, files), both after a warm-up,
and record the peak resident memory. Target (preference-metrics issue): evaluate <= 1.10x the bare
forward. Writes benchmarks/results/scorers.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).parent / "results"
sys.path.insert(0, str(ROOT / "tests" / "metrics"))

L14 = dict(text=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12),
           vision=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                       image_size=224, patch_size=14), projection_dim=768)
TINY = dict(text=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2),
            vision=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                        image_size=224, patch_size=32), projection_dim=16)
TINY_HPS = {"embed_dim": 16, "vision_cfg": {"image_size": 224, "layers": 2, "width": 32, "head_width": 16,
                                            "patch_size": 32},
            "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2}}
H14 = dict(text=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16),
           vision=dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=16,
                       image_size=224, patch_size=14), projection_dim=1024)


def build_clip(folder: Path, arch: dict) -> Path:
    """A full-size transformers CLIP with random weights (the test tokenizer: text cost is tiny)."""
    if (folder / "config.json").exists():
        return folder
    import torch
    from clip_fixtures import write_tokenizer
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    size = write_tokenizer(folder)
    tok = CLIPTokenizer.from_pretrained(folder)
    eos = tok.convert_tokens_to_ids("<|endoftext|>")
    cfg = CLIPConfig(text_config=dict(vocab_size=size, max_position_embeddings=77, eos_token_id=eos, pad_token_id=eos,
                                      bos_token_id=tok.convert_tokens_to_ids("<|startoftext|>"), **arch["text"]),
                     vision_config=arch["vision"], projection_dim=arch["projection_dim"])
    torch.manual_seed(0)
    CLIPModel(cfg).save_pretrained(folder)
    CLIPProcessor(image_processor=CLIPImageProcessor(), tokenizer=tok).save_pretrained(folder)
    return folder


def build_hps(folder: Path, tiny: bool = False) -> Path:
    ckpt = folder / "HPS_v2.1_compressed.pt"
    if ckpt.exists() and not tiny:
        return ckpt
    import torch

    from metrics._compat_torchvision import ensure_torchvision

    ensure_torchvision()
    from hpsv2.src.open_clip import add_model_config, create_model_and_transforms

    folder.mkdir(parents=True, exist_ok=True)
    arch = "ViT-H-14"
    if tiny:
        arch = "tiny-hps-scorers"
        (folder / f"{arch}.json").write_text(json.dumps(TINY_HPS))
        add_model_config(str(folder / f"{arch}.json"))
    torch.manual_seed(0)
    model = create_model_and_transforms(arch, None, precision="fp32", device="cpu", output_dict=True)[0]
    torch.save({"state_dict": model.state_dict()}, ckpt)
    return ckpt


def scorer_spec(name: str, cache: Path, tiny: bool = False) -> dict:
    if name == "hpsv2":
        if tiny:
            folder = cache / "hps-tiny"
            return {"name": "hpsv2", "checkpoint": str(build_hps(folder, tiny=True)), "arch": "tiny-hps-scorers",
                    "arch_config": str(folder / "tiny-hps-scorers.json")}
        return {"name": "hpsv2", "checkpoint": str(build_hps(cache / "hps"))}
    if name == "aesthetic":
        import torch

        from metrics.clip_family import AestheticMLP

        head = cache / "aesthetic-head.pth"
        if not head.exists():
            torch.save(AestheticMLP.build(16 if tiny else 768).state_dict(), head)
        clip = build_clip(cache / ("clip-tiny" if tiny else "clip-l14"), TINY if tiny else L14)
        return {"name": "aesthetic", "model": str(clip), "head": str(head)}
    arch, folder = (H14, "clip-h14") if name == "pickscore" else (L14, "clip-l14")
    if tiny:
        arch, folder = TINY, "clip-tiny"
    d = str(build_clip(cache / folder, arch))
    return {"name": name, "model": d, **({"processor": d} if name == "pickscore" else {})}


def measure(name: str, n: int, batch: int, cache: Path, device: str = "cpu", dtype: str = "float32",
            tiny: bool = False) -> dict:
    """Runs in a subprocess: one scorer, bare forward vs evaluate; returns timings and peak RSS."""
    import cdm_bench  # noqa: F401 - compat hook for torchvision
    from cdm_bench.evaluate import build_plans, evaluate
    from cdm_bench.generate import generate
    from cdm_bench.metric import convert_images
    from cdm_bench.prompts import PromptSet
    from cdm_bench.rundir import RunDir

    spec = scorer_spec(name, cache, tiny)
    run = cache / f"images-{n}"
    if not (run / "manifest.jsonl").exists():
        sys.path.insert(0, str(ROOT / "tests"))
        from dummy import DummyGenerator  # noqa: F401 - registered by module path below

        ps = PromptSet("bench", "1", [{"id": f"p{i:04d}", "prompt": f"a photo of object number {i} on a table"}
                                      for i in range(n)])
        generate({"generator": "dummy:DummyGenerator", "size": 512}, ps, run, 1, progress=False)
    recs = RunDir(run).read_manifest()
    images = RunDir(run).load_images(recs)
    plan = build_plans([spec], batch, device, dtype)[0]
    m = plan.metric
    t0 = time.perf_counter()
    m.setup()
    setup_s = time.perf_counter() - t0
    bare = []
    for _ in range(2):  # the first pass warms up
        t0 = time.perf_counter()
        for i in range(0, n, batch):
            b = recs[i:i + batch]
            m.score(convert_images(images[i:i + batch], m.input_format), [r["prompt"] for r in b], b)
        bare.append(time.perf_counter() - t0)
    m.teardown()
    runs = []
    for _ in range(2):  # best of 2, as the bare forward
        t0 = time.perf_counter()
        evaluate(run, [spec], batch_size=batch, force=True, progress=False, device=device, dtype=dtype)
        runs.append(time.perf_counter() - t0)
    eval_s = min(runs)
    return {"scorer": name, "images": n, "batch": batch, "setup_s": setup_s, "bare_s": min(bare),
            "evaluate_s": eval_s, "evaluate_minus_setup_s": eval_s - setup_s,
            "bare_img_s": n / min(bare), "evaluate_img_s": n / eval_s,
            "ratio_steady": (eval_s - setup_s) / min(bare), "ratio_total": eval_s / min(bare),
            "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, "device": device,
            "dtype": dtype, "peak_gpu_gib": _gpu_peak(device)}


def _gpu_peak(device: str) -> float | None:
    import torch

    return torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None


def write_markdown(rows: list[dict], path: Path, argv: list[str]) -> None:
    dev = rows[0].get("device", "cpu") if rows else "cpu"
    size = "2-layer (--tiny)" if "--tiny" in argv else "full size"
    lines = [f"# Scorers at {size} (random weights), {dev}", "",
             f"`python benchmarks/scorers.py {' '.join(argv)}`; {os.cpu_count()} cores; 512x512 PNGs; "
             f"{rows[0].get('dtype', 'float32') if rows else 'float32'}.", "",
             "| scorer | images | bare img/s | evaluate img/s | evaluate / bare | same, less one model load | "
             "first model load (s) | peak RSS (GiB) | target <= 1.10 |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['scorer']} | {r['images']} | {r['bare_img_s']:.2f} | {r['evaluate_img_s']:.2f} | "
                     f"{r['ratio_total']:.3f} | {r['ratio_steady']:.3f} | {r['setup_s']:.1f} | {r['peak_rss_gib']:.2f} | "
                     f"{'yes' if r['ratio_total'] <= 1.10 else 'NO (model load)' if r['ratio_steady'] <= 1.10 else 'NO'} |")
    lines += ["", "Bare: `metric.score` over images decoded beforehand, model loaded, best of 2 passes. Evaluate: "
              "best of 2 `evaluate(..., force=True)` calls (manifest, sha256 checks, PNG decode, model load, chunk files, "
              "results), so the ratio charges evaluate with its own (warm) model load. 'first model load' is the "
              "bare run's cold load, shown on its own. "
              "Peak RSS: the scorer's subprocess (model built, saved, loaded twice)."]
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--images", type=int, default=24)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--scorers", default="clipscore,pickscore,aesthetic,hpsv2")
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "cdm-bench-scorers")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--tiny", action="store_true", help="2-layer scorers (the real preprocessing): a smoke run")
    ap.add_argument("--out", type=Path, default=RESULTS / "scorers.md")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    if args.one:
        print("RESULT " + json.dumps(measure(args.one, args.images, args.batch, args.cache, args.device, args.dtype,
                                             args.tiny)))
        return
    rows = []
    for name in args.scorers.split(","):
        cmd = [sys.executable, __file__, "--one", name, "--images", str(args.images), "--batch", str(args.batch),
               "--cache", str(args.cache), "--device", args.device, "--dtype", args.dtype] + (["--tiny"] if args.tiny else [])
        out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        line = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
        if out.returncode or not line:
            raise SystemExit(f"{name} failed:\n{out.stderr[-3000:]}")
        rows.append(json.loads(line[0][7:]))
        print(rows[-1], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(rows, indent=2))
    write_markdown(rows, args.out, sys.argv[1:])
    print(args.out.read_text())


if __name__ == "__main__":
    main()
