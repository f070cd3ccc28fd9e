"""The generate phase: one PNG per (prompt id, k) plus a manifest, sharded and resumable.

Layout of an output directory::

    generation.json        identity (generator spec + hash, prompt set + sha, base seed),
                           environment, timing; written first
    images/<prompt_id>_<k>.png
    parts/part-<rank>-of-<world>.jsonl   records appended as images land (during a run)
    manifest.jsonl         every record, in prompt order; written last, by rank 0

Seeds are ``sample_seed(base_seed, prompt_id, k)``: images do not depend on batch size, world
size or order. Each rank takes ``jobs[rank::world]`` of the full job list (no padding, no
duplicates) and skips jobs whose PNG and record already exist (resume). Re-running into a
directory written by a different generator spec, prompt set or seed is refused unless
``overwrite=True``.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from cdm_bench import dist
from cdm_bench.generator import build_generator, spec_hash
from cdm_bench.prompts import PromptSet, load_prompt_set
from cdm_bench.provenance import environment, sample_seed

MANIFEST = "manifest.jsonl"
IDENTITY = "generation.json"


class RunConflictError(RuntimeError):
    """The output directory belongs to a different run."""


def generate(generator, prompts, out_dir, samples_per_prompt: int = 1, batch_size: int = 8,
             seed: int = 0, overwrite: bool = False, limit: int | None = None,
             progress: bool = True) -> Path:
    """Generate images for a prompt set into ``out_dir``; returns ``out_dir``.

    ``generator`` is a registry name, a YAML path or a spec dict; ``prompts`` a prompt-set name,
    file or :class:`PromptSet`. Works unchanged under ``torchrun``/``accelerate launch``.
    """
    if samples_per_prompt < 1 or batch_size < 1:
        raise ValueError("samples_per_prompt and batch_size must be >= 1")
    out = Path(out_dir)
    ps = prompts if isinstance(prompts, PromptSet) else load_prompt_set(prompts, limit=limit)
    gen, spec = build_generator(generator)
    identity = {"generator": spec, "spec_hash": spec_hash(spec), "prompt_set": ps.describe(),
                "seed": seed}
    with dist.process_group() as (rank, size):
        error = _prepare_dir(out, identity, overwrite) if rank == 0 else None
        error = dist.broadcast(error)
        if error:
            raise RunConflictError(error)
        jobs = [(p, k) for p in ps.prompts for k in range(samples_per_prompt)][rank::size]
        done = _done_keys(out)
        todo = [(p, k) for p, k in jobs if (p["id"], k) not in done]
        stats = _run_jobs(gen, identity, todo, out, rank, size, batch_size, seed, progress)
        dist.barrier()
        all_stats = _gather(stats)
        if rank == 0:
            _finalise(out, ps, samples_per_prompt, all_stats)
        dist.barrier()
    return out


def _prepare_dir(out: Path, identity: dict, overwrite: bool) -> str | None:
    path = out / IDENTITY
    if path.exists():
        old = json.loads(path.read_text())
        same = (old.get("spec_hash") == identity["spec_hash"]
                and old.get("prompt_set", {}).get("sha256") == identity["prompt_set"]["sha256"]
                and old.get("seed") == identity["seed"])
        if same:
            return None
        if not overwrite:
            return (f"{out} holds images from a different run (generator {old['generator'].get('name')!r}, "
                    f"spec {old.get('spec_hash')}, prompts {old['prompt_set'].get('name')}, seed "
                    f"{old.get('seed')}); use another --out or pass --overwrite to replace them")
        for name in ("images", "parts"):
            shutil.rmtree(out / name, ignore_errors=True)
        (out / MANIFEST).unlink(missing_ok=True)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "parts").mkdir(exist_ok=True)
    _write_json(path, {**identity, "environment": environment()})
    return None


def read_records(out: Path) -> list[dict]:
    """Records of the manifest and of any unmerged parts (later ones win)."""
    records = []
    parts = sorted((out / "parts").glob("*.jsonl")) if (out / "parts").is_dir() else []
    for f in [out / MANIFEST, *parts]:
        if f.exists():
            records += [json.loads(ln) for ln in f.read_text().splitlines() if ln.strip()]
    return records


def _done_keys(out: Path) -> set[tuple[str, int]]:
    return {(r["prompt_id"], r["k"]) for r in read_records(out) if (out / r["file"]).exists()}


def _run_jobs(gen, identity, todo, out, rank, size, batch_size, seed, progress) -> dict:
    """Generate ``todo`` in batches; batch i's PNGs are encoded and written on a writer thread
    while batch i+1 generates (zlib and sha256 release the GIL). Records are appended to the
    rank's part file in job order once their PNG exists; a writer error stops the run."""
    from concurrent.futures import ThreadPoolExecutor

    (out / "parts").mkdir(exist_ok=True)
    part = out / "parts" / f"part-{rank}-of-{size}.jsonl"
    timing = {"model_s": 0.0, "write_s": 0.0, "wait_s": 0.0}
    bar = tqdm(total=len(todo), desc=f"generate[{rank}/{size}]", disable=not progress or rank != 0,
               unit="img")

    failed: list = []

    def write(batch, seeds, images, gen_s, log):
        if failed:  # an earlier write failed: write nothing more (its error is being raised)
            return
        t0 = time.perf_counter()
        try:
            for (p, k), s, img in zip(batch, seeds, images):
                rec = _write_png(out, p, k, s, img, identity["spec_hash"])
                rec["gen_s"] = gen_s
                log.write(json.dumps(rec) + "\n")
        except BaseException:
            failed.append(True)
            raise
        finally:
            log.flush()
        timing["write_s"] += time.perf_counter() - t0
        bar.update(len(batch))

    pending: list = []
    with open(part, "a") as log, ThreadPoolExecutor(1, thread_name_prefix="png-writer") as writer:
        for start in range(0, len(todo), batch_size):
            batch = todo[start:start + batch_size]
            seeds = [sample_seed(seed, p["id"], k) for p, k in batch]
            t0 = time.perf_counter()
            images = np.asarray(gen.generate([p["prompt"] for p, _ in batch], seeds))
            dt = time.perf_counter() - t0
            timing["model_s"] += dt
            pending = _drain(pending, keep=1, timing=timing)  # at most 2 batches in memory
            pending.append(writer.submit(write, batch, seeds, images, dt / len(batch), log))
        _drain(pending, keep=0, timing=timing)
    bar.close()
    return {"rank": rank, "images": len(todo), **timing}


def _drain(pending: list, keep: int, timing: dict) -> list:
    """Wait for all but the last ``keep`` writes (re-raising a writer's error)."""
    t0 = time.perf_counter()
    while len(pending) > keep:
        pending.pop(0).result()
    timing["wait_s"] += time.perf_counter() - t0
    return pending


def _write_png(out: Path, prompt: dict, k: int, seed: int, img: np.ndarray, shash: str) -> dict:
    import hashlib

    name = f"images/{prompt['id']}_{k}.png"
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(img, dtype=np.uint8)).save(buf, format="PNG")
    data = buf.getvalue()
    tmp = out / (name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, out / name)  # atomic: a PNG exists whole or not at all
    return {"prompt_id": prompt["id"], "k": k, "prompt": prompt["prompt"], "seed": seed,
            "file": name, "sha256": hashlib.sha256(data).hexdigest(), "spec_hash": shash}


def _gather(stats: dict) -> list[dict]:
    import torch.distributed as tdist

    if not (tdist.is_available() and tdist.is_initialized()):
        return [stats]
    out = [None] * tdist.get_world_size()
    tdist.all_gather_object(out, stats)
    return out


def _finalise(out: Path, ps: PromptSet, samples_per_prompt: int, stats: list[dict]) -> None:
    order = {p["id"]: i for i, p in enumerate(ps.prompts)}
    latest = {}
    for r in read_records(out):
        latest[(r["prompt_id"], r["k"])] = r
    records = sorted((r for r in latest.values() if r["prompt_id"] in order),
                     key=lambda r: (order[r["prompt_id"]], r["k"]))
    tmp = out / (MANIFEST + ".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in records))
    os.replace(tmp, out / MANIFEST)  # written last: its presence means the run is complete
    shutil.rmtree(out / "parts", ignore_errors=True)
    ident = json.loads((out / IDENTITY).read_text())
    ident["samples_per_prompt"] = max(samples_per_prompt, ident.get("samples_per_prompt", 0))
    ident["n_images"] = len(records)
    ident.setdefault("timing", []).append({"ranks": stats, "time": time.time()})
    _write_json(out / IDENTITY, ident)


def _write_json(path: Path, obj: dict) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str))
    os.replace(tmp, path)
