"""The generate phase: one PNG per (prompt id, k) plus a manifest, sharded and resumable.

The directory layout is :mod:`cdm_bench.rundir`'s: the identity first, PNGs and per-rank part
records as images land, the manifest (every record, in prompt order) last, by rank 0. A record
keeps every extra field of its prompt row (category, target text, ...), which evaluate passes
to metrics in ``meta``.

Seeds are ``sample_seed(base_seed, prompt_id, k)``: images do not depend on batch size, world
size or order. Each rank takes ``jobs[rank::world]`` of the full job list (no padding, no
duplicates) and skips jobs whose PNG and record already exist (resume). Re-running into a
directory written by a different generator spec, prompt set or seed is refused unless
``overwrite=True``.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from pathlib import Path

import numpy as np

from cdm_bench import dist
from cdm_bench.errors import CdmBenchError, RunConflictError, SpecError
from cdm_bench.generator import build_generator, spec_hash
from cdm_bench.progress import progress_bar
from cdm_bench.prompts import PromptSet, load_prompt_set
from cdm_bench.provenance import environment, sample_seed
from cdm_bench.rundir import RunDir, append_record, generation_key, repair_jsonl
from cdm_bench.safenames import check_out_dir
from cdm_bench.validate import MAX_BATCH, MAX_IMAGES, MAX_SAMPLES_PER_PROMPT, MAX_SEED, fitting_batch, int_in_range

__all__ = ["generate", "read_records", "RunConflictError"]
PROBE_BATCH = 4


def generate(generator, prompts, out_dir, samples_per_prompt: int = 1, batch_size: int = 8,
             seed: int = 0, overwrite: bool = False, limit: int | None = None,
             progress: bool = True) -> Path:
    """Generate images for a prompt set into ``out_dir``; returns ``out_dir``.

    ``generator`` is a registry name, a YAML path or a spec dict; ``prompts`` a prompt-set name,
    file or :class:`PromptSet`. Works unchanged under ``torchrun``/``accelerate launch``.
    """
    samples_per_prompt = int_in_range(samples_per_prompt, "--samples-per-prompt", 1, MAX_SAMPLES_PER_PROMPT)
    batch_size = int_in_range(batch_size, "--batch-size", 1, MAX_BATCH)
    seed = int_in_range(seed, "--seed", 0, MAX_SEED)
    out = RunDir(check_out_dir(out_dir))
    ps = prompts if isinstance(prompts, PromptSet) else load_prompt_set(prompts, limit=limit)
    check_prompt_rows(ps)
    if len(ps) * samples_per_prompt > MAX_IMAGES:
        raise SpecError(f"{len(ps):,} prompts x {samples_per_prompt:,} samples is more than {MAX_IMAGES:,} images "
                        f"in one run; split the prompt set")
    gen, spec = build_generator(generator)
    gen.check_ready()  # e.g. missing weights: fail before the directory is touched
    identity = {"generator": spec, "spec_hash": spec_hash(spec), "prompt_set": ps.describe(),
                "seed": seed}
    names = {out.image_name(p["id"], k) for p in ps.prompts for k in range(samples_per_prompt)}
    refusal = _refusal(out, identity, overwrite, names)  # before the lock file is made: a refused
    if refusal:                                           # folder is left exactly as it was
        raise RunConflictError(refusal)
    with dist.process_group() as (rank, size), contextlib.ExitStack() as held:
        error = None
        if rank == 0:  # rank 0 holds the directory's writer lock for the whole run
            try:
                held.enter_context(out.lock("cdm-bench generate"))
                error = _refusal(out, identity, overwrite, names)  # again, under the lock
                if not error:
                    _prepare_dir(out, identity)
            except CdmBenchError as exc:
                error = str(exc)
        error = dist.broadcast(error)
        if error:
            raise RunConflictError(error)
        jobs = [(p, k) for p in ps.prompts for k in range(samples_per_prompt)][rank::size]
        done = _done_keys(out, {(p["id"], k) for p, k in jobs})
        todo = [(p, k) for p, k in jobs if (p["id"], k) not in done]
        stats = _run_jobs(gen, identity, todo, out, rank, size, batch_size, seed, progress)
        dist.barrier()
        all_stats = dist.all_gather(stats)
        provenance = _merge_provenance(dist.all_gather(gen.provenance()))
        if rank == 0:
            _finalise(out, ps, samples_per_prompt, all_stats, gen.weights_hash(), provenance)
        dist.barrier()
    return out.root


def check_prompt_rows(ps: PromptSet) -> None:
    """Prompt ids become file names and extra fields manifest fields: the prompt set's own
    check (:meth:`PromptSet.validate`), also for a set built in code."""
    ps.validate()


def _refusal(out: RunDir, identity: dict, overwrite: bool, names: set[str]) -> str | None:
    """Why ``out`` cannot take this run, or None. The same run resumes; a new one starts in an
    empty folder or in one whose earlier start wrote no image; a different run is replaced only
    with ``overwrite``; a folder holding files cdm-bench did not write is refused unless
    ``overwrite`` (which still deletes none of them: see :meth:`RunDir.clear_generation`)."""
    if not out.root.exists():
        return None
    old = out.read_identity()  # a generation.json cdm-bench did not write: refused in there
    if old and generation_key(old) == generation_key(identity):
        return None
    own = out.own_image_files()
    if old and own and not overwrite:
        return (f"{out.root} holds images from a different run (generator {old['generator'].get('name')!r}, "
                f"spec {old.get('spec_hash')}, prompts {old['prompt_set'].get('name')}, seed "
                f"{old.get('seed')}); use another --out or pass --overwrite to replace them")
    foreign = out.foreign_entries(own)
    if not old and not overwrite and (out.results_path.exists() or out.scores_path.exists()):
        foreign = [f.name for f in (out.results_path, out.scores_path) if f.exists()] + foreign
    if foreign and not old and not overwrite:
        return (f"--out {out.root} is not empty and was not written by cdm-bench (holds {', '.join(foreign[:3])}"
                f"{', ...' if len(foreign) > 3 else ''}); choose an empty folder, or pass --overwrite to write "
                f"into it (nothing of yours is deleted)")
    blocked = sorted(names & set(foreign))
    if blocked:
        return (f"{out.root / blocked[0]} was not written by cdm-bench but is where this run writes an image"
                f"{f' ({len(blocked)} such files)' if len(blocked) > 1 else ''}; move it away or use another --out")
    return None


def _prepare_dir(out: RunDir, identity: dict) -> None:
    """Take ``out`` for this run (after :func:`_refusal` said yes, under the lock)."""
    old = out.read_identity()
    if old and generation_key(old) == generation_key(identity):
        if old["generator"].get("name") != identity["generator"].get("name"):
            out.write_identity({**old, "generator": identity["generator"]})  # a new display name: same run
        return
    out.clear_generation()
    out.prepare_images()
    out.write_identity({**identity, "environment": environment()})


def read_records(out) -> list[dict]:
    """Records of the manifest and of any unmerged parts (later ones win)."""
    return RunDir(out).read_records()


def _done_keys(out: RunDir, wanted: set) -> set[tuple[str, int]]:
    """The wanted (prompt id, k) whose PNG exists and matches its record's sha256 (a truncated
    or replaced PNG is generated again)."""
    latest = {}
    for r in out.read_records():
        latest[(r["prompt_id"], r["k"])] = r
    done = set()
    for key in wanted & set(latest):
        path = out.image_path(latest[key])
        if path.exists() and hashlib.sha256(path.read_bytes()).hexdigest() == latest[key].get("sha256"):
            done.add(key)
    return done


def _run_jobs(gen, identity, todo, out, rank, size, batch_size, seed, progress) -> dict:
    """Generate ``todo`` in batches; batch i's PNGs are encoded and written on a writer thread
    while batch i+1 generates (zlib and sha256 release the GIL). Records are appended to the
    rank's part file in job order once their PNG exists; a writer error stops the run."""
    from concurrent.futures import ThreadPoolExecutor

    out.parts_dir.mkdir(exist_ok=True)
    part = out.part_path(rank, size)
    repair_jsonl(part)  # a cut last line (crash, full disk) must not glue onto the next record
    timing = {"model_s": 0.0, "write_s": 0.0, "wait_s": 0.0}
    bar = progress_bar(len(todo), f"generate[{rank}/{size}]", "img", disable=not progress or rank != 0)

    failed: list = []

    def write(batch, seeds, images, gen_s, log):
        if failed:  # an earlier write failed: write nothing more (its error is being raised)
            return
        t0 = time.perf_counter()
        try:
            for (p, k), s, img in zip(batch, seeds, images):
                rec = _write_png(out, p, k, s, img, identity["spec_hash"])
                rec["gen_s"] = gen_s
                append_record(log, rec)
        except BaseException:
            failed.append(True)
            raise
        finally:
            log.flush()
        timing["write_s"] += time.perf_counter() - t0
        bar.update(len(batch))

    pending: list = []
    start, bs = 0, min(batch_size, PROBE_BATCH)  # the first batch measures the image size
    with open(part, "a") as log, ThreadPoolExecutor(1, thread_name_prefix="png-writer") as writer:
        while start < len(todo):
            batch = todo[start:start + bs]
            seeds = [sample_seed(seed, p["id"], k) for p, k in batch]
            t0 = time.perf_counter()
            images = _checked(gen.generate([p["prompt"] for p, _ in batch], seeds), len(batch), identity)
            if start == 0:  # then the rest in batches that fit in memory
                bs = fitting_batch(batch_size, images[0].nbytes, "generate")
            start += len(batch)
            dt = time.perf_counter() - t0
            timing["model_s"] += dt
            pending = _drain(pending, keep=1, timing=timing)  # at most 2 batches in memory
            pending.append(writer.submit(write, batch, seeds, images, dt / len(batch), log))
        _drain(pending, keep=0, timing=timing)
    bar.close()
    return {"rank": rank, "images": len(todo), **timing}


def _checked(images, n: int, identity: dict) -> np.ndarray:
    """A generator's output is uint8 (n, H, W, 3) with H, W >= 1, or the run stops in one line
    (nothing of the batch is written)."""
    arr = np.asarray(images)
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[0] != n or arr.shape[-1] != 3 or 0 in arr.shape:
        raise SpecError(f"generator {identity['generator'].get('name')!r} returned an array of shape {arr.shape} "
                        f"({arr.dtype}) for {n} prompts; a generator returns uint8 ({n}, H, W, 3), H and W >= 1")
    return arr


def _drain(pending: list, keep: int, timing: dict) -> list:
    """Wait for all but the last ``keep`` writes (re-raising a writer's error)."""
    t0 = time.perf_counter()
    while len(pending) > keep:
        pending.pop(0).result()
    timing["wait_s"] += time.perf_counter() - t0
    return pending


def _write_png(out: RunDir, prompt: dict, k: int, seed: int, img: np.ndarray, shash: str) -> dict:
    name = out.image_name(prompt["id"], k)
    data = out.write_png(name, img)  # atomic: a PNG exists whole or not at all
    extra = {key: v for key, v in prompt.items() if key not in ("id", "prompt")}
    return {"prompt_id": prompt["id"], "k": k, "prompt": prompt["prompt"], "seed": seed,
            "file": name, "sha256": hashlib.sha256(data).hexdigest(), "spec_hash": shash, **extra}


def _merge_provenance(per_rank: list[dict]) -> dict:
    """One dict from every rank's ``Generator.provenance()`` (a rank that generated nothing
    reports nothing; the first rank to report a key wins)."""
    merged: dict = {}
    for prov in per_rank:
        for key, value in (prov or {}).items():
            merged.setdefault(key, value)
    return merged


def _finalise(out: RunDir, ps: PromptSet, samples_per_prompt: int, stats: list[dict],
              weights_sha256: str | None = None, provenance: dict | None = None) -> None:
    order = {p["id"]: i for i, p in enumerate(ps.prompts)}
    latest = {}
    for r in out.read_records():
        latest[(r["prompt_id"], r["k"])] = r
    records = sorted((r for r in latest.values() if r["prompt_id"] in order),
                     key=lambda r: (order[r["prompt_id"]], r["k"]))
    out.write_manifest(records)  # written last: its presence means the run is complete
    out.remove_parts()
    out.remove_stale_temps()
    ident = out.read_identity()
    ident["samples_per_prompt"] = max(samples_per_prompt, ident.get("samples_per_prompt", 0))
    ident["n_images"] = len(records)
    if weights_sha256:  # the weights really used (the same config trained elsewhere may differ)
        ident["weights_sha256"] = weights_sha256
    if provenance:  # a resumed run that generated nothing keeps what the earlier run learned
        ident["provenance"] = {**ident.get("provenance", {}), **provenance}
    ident.setdefault("timing", []).append({"ranks": stats, "time": time.time()})
    out.write_identity(ident)
