"""The evaluate phase: score a generation directory with named metrics, one metric at a time.

Imports neither diffusers nor any training code, so it runs in a separate eval environment.
For each metric instance: ``check()`` (all metrics, before anything is written) ->
``setup()`` -> batches -> flushed chunks -> ``compute()`` -> ``teardown()``, so at most one
metric's model is in memory at a time.

**Chunks.** The manifest's records are cut into fixed chunks of ``chunk_size`` images; chunk
*i* belongs to rank ``i % world_size`` (1 process: all of them). A finished chunk is written
atomically under ``scoring/`` (per-image scores, or a set-level metric's state), so an evaluate
that is killed and re-run scores only the chunks that are missing, and the chunks do not depend
on the number of processes: ``torchrun --nproc_per_node N -m cdm_bench evaluate ...`` gives the
1-process numbers. Rank 0 merges the chunks (per-image scores in manifest order; set-level
states merged in chunk order, as torchmetrics' ``merge_state`` does) and writes (see
:mod:`cdm_bench.rundir`) ``scores.parquet`` and ``results.json`` after each metric.

**Cache.** A metric instance's result is reused when its identity (everything in
``describe()``: version, options, weights) and the image set's hash are unchanged; ``force``
recomputes. A result computed on another image set is dropped, never shown beside a new ``n``.
A metric that raises is recorded as ``failed`` and fails the run unless ``allow_partial``.

**Metric entries.** ``"a,b"``, ``"alias=name"`` or mappings
``{name: NAME, alias: INSTANCE, batch_size: B, device: D, dtype: T, <metric options>}``; two
configurations of one metric coexist under different instance names.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import math
import traceback
from pathlib import Path

import numpy as np
import pandas as pd

from cdm_bench import dist, eval_chunks
from cdm_bench.errors import (EvaluationInputError, MetricFailedError, RunConflictError, RunNotFoundError)
from cdm_bench.metric import Metric
from cdm_bench.metric_plans import MetricPlan, _plain, build_metric, build_plans, parse_metrics  # noqa: F401
from cdm_bench.progress import progress_bar
from cdm_bench.provenance import environment
from cdm_bench.rundir import (SCORE_BASE_COLUMNS, RunDir, atomic_write_json, generation_key,
                              image_set_hash)
from cdm_bench.safenames import check_out_dir
from cdm_bench.validate import MAX_BATCH, MAX_CHUNK, int_in_range

__all__ = ["evaluate", "parse_metrics", "build_metric", "EvaluationInputError", "MetricFailedError"]

log = logging.getLogger(__name__)
CHUNK_SIZE = 256
DECODED_CACHE_BYTES = 1 << 30  # decoded images kept for the next metric (small images: all of them)
# -- inputs ------------------------------------------------------------------------------------------
def load_generation(src: RunDir) -> tuple[dict, list[dict]]:
    if not src.is_complete():
        raise EvaluationInputError(
            f"{src.root} has no manifest: the generate phase did not finish there "
            f"(run `cdm-bench generate` again with the same arguments to resume)")
    records = src.read_manifest()
    if not records:
        raise EvaluationInputError(f"{src.manifest_path} lists no images")
    return src.read_identity(), records


def find_bad_images(src: RunDir, records: list[dict]) -> list[str]:
    """Every PNG must exist and match its manifest hash (the bytes generate wrote and
    decoded); a record without a hash must decode. One line per bad file."""
    from PIL import Image

    bad = []
    for r in records:
        try:
            data = src.read_image_bytes(r)
        except EvaluationInputError:
            bad.append(f"{src.image_path(r)}: missing")
            continue
        if r.get("sha256"):
            if hashlib.sha256(data).hexdigest() != r["sha256"]:
                bad.append(f"{src.image_path(r)}: content does not match the manifest's sha256 (corrupt or replaced)")
            continue
        try:
            Image.open(io.BytesIO(data)).verify()
        except Exception as exc:  # PIL raises many types for broken files
            bad.append(f"{src.image_path(r)}: not a readable PNG ({exc})")
    return bad


# -- the phase ---------------------------------------------------------------------------------------
def evaluate(images_dir, metrics, out_dir=None, batch_size: int = 32, device: str = "cpu",
             allow_partial: bool = False, force: bool = False, progress: bool = True,
             chunk_size: int = CHUNK_SIZE, dtype: str = "float32", num_workers: int | None = None,
             set_bootstrap: int = 0) -> dict:
    """Score ``images_dir`` with ``metrics``; returns the results dict (also written).

    The images directory is locked for the whole call (shared: generate cannot change it while
    it is read; exclusive when the results go into it), and each image's bytes are checked
    against its manifest sha256 when it is scored. Decoding, that check and each metric's own
    preprocessing run in ``num_workers`` input processes (:mod:`cdm_bench.eval_loader`; None:
    on a GPU one per core but one, on the CPU as many as the first batches' times say pay;
    0: in this process); the scores do not depend on it. With
    ``set_bootstrap`` > 0, set-level metrics also get a 95 % interval (sub-values ``ci_low`` /
    ``ci_high``) from that many resamples of their chunks."""
    batch_size = int_in_range(batch_size, "--batch-size", 1, MAX_BATCH)
    chunk_size = int_in_range(chunk_size, "--chunk-size", 1, MAX_CHUNK)
    if num_workers is not None:
        num_workers = int_in_range(num_workers, "--num-workers", 0, 64)
    src = RunDir(images_dir)
    if not src.root.is_dir():
        raise RunNotFoundError(f"--images {src.root}: no such directory")
    dst = RunDir(check_out_dir(out_dir)) if out_dir else src
    plans = build_plans(metrics, batch_size, device, dtype)
    for plan in plans:  # packages and weights, before anything is written
        plan.metric.check()
    for plan in plans:
        plan.metric.prepare()
    with dist.process_group() as (rank, size), contextlib.ExitStack() as held:
        same_dir = dst.root.resolve() == src.root.resolve()
        _lock(held, rank, src, "cdm-bench evaluate" if same_dir else "cdm-bench evaluate (reading)", not same_dir)
        ident, records = load_generation(src)
        bad = sum(dist.all_gather(find_bad_images(src, records[rank::size])), [])
        if bad:
            raise EvaluationInputError(f"{len(bad)} bad image(s); nothing was scored or overwritten: " + "; ".join(bad[:5])
                                       + (f"; ... {len(bad) - 5} more" if len(bad) > 5 else ""))
        check_destination(src, dst, ident, force)
        if not same_dir:  # one writer per results directory
            _lock(held, rank, dst, "cdm-bench evaluate", False)
        group = math.lcm(*[max(int(getattr(p.metric, "group_size", 1) or 1), 1) for p in plans])
        chunk = -(-int(chunk_size) // group) * group  # whole groups per chunk
        ctx = _Context(src, dst, ident, records, rank, size, chunk, progress, num_workers, set_bootstrap)
        results, frame = ctx.load_previous(force)
        todo = [p for p in plans if force or not ctx.reusable(p, results, frame)]
        if rank == 0:
            dst.root.mkdir(parents=True, exist_ok=True)
            if force:
                for plan in todo:
                    dst.remove_chunks(plan.instance, ctx.chunk_key(plan))
            if not todo or set(results["metrics"]) != set(dst.read_results(force=force).get("metrics") or {}):
                ctx.write(results, frame)  # results of other image sets are dropped right away
        dist.barrier()
        for plan in todo:
            results, frame = ctx.run_metric(plan, results, frame)
        results = dist.broadcast(results)
    failures = [(p.instance, results["metrics"][p.instance].get("error")) for p in todo
                if results["metrics"][p.instance]["status"] != "ok"]
    if failures and not allow_partial:
        raise MetricFailedError("metric(s) failed: " + "; ".join(f"{n}: {e}" for n, e in failures)
                                + f" (see {dst.results_path}; pass --allow-partial to keep going)")
    return results


def _lock(held: contextlib.ExitStack, rank: int, run: RunDir, what: str, shared: bool) -> None:
    """Rank 0 takes ``run``'s lock for the rest of the call; every rank learns of a refusal."""
    error = None
    if rank == 0:
        try:
            held.enter_context(run.lock(what, shared=shared))
        except RunConflictError as exc:
            error = str(exc)
    error = dist.broadcast(error)
    if error:
        raise RunConflictError(error)


def chunk_bootstrap_ci(metric: Metric, states: list, n_boot: int, seed: int = 0) -> dict:
    """95 % interval of a set-level metric's value from resampling its chunks (groups of images)
    with replacement: sub-values ``ci_low`` / ``ci_high``. Seeded: the same on every call."""
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(int(n_boot)):
        metric.load_states([states[i] for i in rng.integers(0, len(states), len(states))])
        draws.append(float(metric.compute()[metric.name]))
    metric.load_states(states)
    lo, hi = np.nanpercentile(draws, [2.5, 97.5])
    return {"ci_low": float(lo), "ci_high": float(hi)}


def check_destination(src: RunDir, dst: RunDir, ident: dict, force: bool = False) -> None:
    """``--out`` may not hold another run's generation or results (nor files cdm-bench did not
    write in their place)."""
    if dst.root.resolve() == src.root.resolve():
        return
    other = dst.read_identity() if dst.has_identity() else dst.read_results(force=force).get("generation")
    if other and generation_key(other) != generation_key(ident):
        name = (other.get("generator") or {}).get("name")
        raise RunConflictError(f"--out {dst.root} holds another run's results (generator {name!r}, seed "
                               f"{other.get('seed')}); choose an empty folder or that run's own")


class _Context:
    """State shared by the metrics of one evaluate call."""

    def __init__(self, src, dst, ident, records, rank, size, chunk_size, progress, num_workers=None,
                 set_bootstrap=0):
        self.src, self.dst, self.ident, self.records = src, dst, ident, records
        self.rank, self.size, self.chunk_size, self.progress = rank, size, chunk_size, progress
        self.num_workers, self.set_bootstrap = num_workers, set_bootstrap
        self.set_hash = image_set_hash(records)
        self.n_chunks = (len(records) + chunk_size - 1) // chunk_size
        self._decoded: dict[int, np.ndarray] = {}
        self._decoded_bytes = 0

    def load_images(self, start: int, stop: int) -> np.ndarray:
        """uint8 (B, H, W, 3) of records[start:stop]; decoded once and kept, within a byte
        budget, for the metrics that follow (each metric still sees its own batches)."""
        if all(i in self._decoded for i in range(start, stop)):
            return np.stack([self._decoded[i] for i in range(start, stop)])
        images = self.src.load_images(self.records[start:stop])
        if self._decoded_bytes + images.nbytes <= DECODED_CACHE_BYTES:
            for i, im in zip(range(start, stop), images):
                self._decoded[i] = im
            self._decoded_bytes += images.nbytes
        return images

    # -- previous results ---------------------------------------------------------------------------
    def load_previous(self, force: bool = False) -> tuple[dict, pd.DataFrame]:
        """Results and scores of earlier calls that still hold (same run, same image set). A
        corrupt results.json / scores.parquet is an error naming it, or with ``force`` rebuilt;
        one cdm-bench did not write is never replaced."""
        old = self.dst.read_results(force=force)
        same_run = generation_key(old.get("generation") or {}) == generation_key(self.ident)
        metrics = {name: e for name, e in (old.get("metrics") or {}).items()
                   if same_run and e.get("images_sha256") == self.set_hash}
        frame = pd.DataFrame([{c: r.get(c) for c in SCORE_BASE_COLUMNS} for r in self.records])
        old_scores = self.dst.read_scores(force=force)
        if old_scores is not None and not set(SCORE_BASE_COLUMNS) <= set(old_scores.columns):
            raise RunConflictError(f"{self.dst.scores_path} was not written by cdm-bench evaluate; move it away or "
                                   f"choose another --out")
        if old_scores is not None and len(old_scores) == len(frame) and \
                (old_scores["sha256"].to_numpy() == frame["sha256"].to_numpy()).all():
            for name, e in metrics.items():
                if e.get("per_image") and name in old_scores.columns:
                    frame[name] = old_scores[name].to_numpy()
        metrics = {n: e for n, e in metrics.items() if not e.get("per_image") or n in frame.columns}
        return {"generation": self.ident, "metrics": metrics}, frame

    def reusable(self, plan: MetricPlan, results: dict, frame: pd.DataFrame) -> bool:
        e = results["metrics"].get(plan.instance, {})
        return (e.get("status") == "ok" and e.get("identity") == plan.key
                and (not plan.metric.per_image or plan.instance in frame.columns))

    def chunk_key(self, plan: MetricPlan) -> str:
        return f"{plan.key[:12]}-{self.set_hash[:8]}-c{self.chunk_size}"

    def fitting_batch(self, plan: MetricPlan) -> int:
        """The plan's batch size, lowered (in whole groups) when its decoded images would not fit
        in memory; the first image's size is read from its PNG header (nothing is decoded)."""
        from PIL import Image

        from cdm_bench.validate import fitting_batch

        with Image.open(self.src.image_path(self.records[0])) as im:
            w, h = im.size
        per = w * h * 3 * (5 if plan.metric.input_format == "float_nchw" else 1)  # uint8 + a float copy
        group = max(int(getattr(plan.metric, "group_size", 1) or 1), 1)
        return max(group, fitting_batch(plan.batch_size, per, f"evaluate {plan.instance}") // group * group)

    def chunk_records(self, i: int) -> list[dict]:
        return self.records[i * self.chunk_size:(i + 1) * self.chunk_size]

    def write(self, results: dict, frame: pd.DataFrame) -> None:
        if not hasattr(self, "_environment"):  # once per call (it runs git)
            self._environment = environment()
        results["environment"] = self._environment
        results["n_images"] = len(frame)
        cols = SCORE_BASE_COLUMNS + [c for c in frame.columns if c not in SCORE_BASE_COLUMNS]
        self.dst.write_scores(frame[cols])
        self.dst.write_results(results)

    # -- one metric: setup -> my chunks -> merge (rank 0) -> teardown ---------------------------------------
    def run_metric(self, plan: MetricPlan, results: dict, frame: pd.DataFrame):
        cdir = self.dst.chunk_dir(plan.instance, self.chunk_key(plan))
        ext = "parquet" if plan.metric.per_image else "safetensors"
        chunk_path = [cdir / f"chunk-{i:05d}.{ext}" for i in range(self.n_chunks)]
        mine = [i for i in range(self.rank, self.n_chunks, self.size) if not chunk_path[i].exists()]
        needs_model = bool(mine) or (self.rank == 0 and not plan.metric.per_image)
        metric, error = plan.metric, None
        try:
            if needs_model:
                cdir.mkdir(parents=True, exist_ok=True)
                metric.setup()
                self._save_provenance(metric, cdir)
            self._score_chunks(plan, mine, chunk_path)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            log.error("metric %s failed on rank %d:\n%s", plan.instance, self.rank, traceback.format_exc())
            atomic_write_json(cdir / f"error-r{self.rank}.json", {"error": error})
        try:
            dist.barrier()
            if self.rank == 0:
                entry = self._merge(plan, cdir, chunk_path, frame)
                results["metrics"][plan.instance] = entry
                self.write(results, frame)
                if entry["status"] == "ok":
                    self.dst.remove_chunks(plan.instance, self.chunk_key(plan))
            dist.barrier()
        finally:
            if needs_model:
                metric.teardown()
        return results, frame

    def _save_provenance(self, metric: Metric, cdir: Path) -> None:
        sha = getattr(metric, "weights_sha256", lambda: None)()
        if sha:
            atomic_write_json(cdir / f"provenance-r{self.rank}.json", {"weights_sha256": sha})

    def _score_chunks(self, plan: MetricPlan, mine: list[int], chunk_path: list[Path]) -> None:
        """Score my chunks batch by batch; each finished chunk is written at once. (Decoding
        the next batch on a thread was measured: no gain on 2 cores, the decode is GIL-bound.)"""
        from cdm_bench.eval_loader import BatchJobs, default_workers, prepared_batches

        metric = plan.metric
        bs = self.fitting_batch(plan)
        jobs = [(i, s) for i in mine for s in range(0, len(self.chunk_records(i)), bs)]
        spans = [(i * self.chunk_size + s, min(i * self.chunk_size + s + bs, (i + 1) * self.chunk_size,
                                               len(self.records))) for i, s in jobs]
        workers = self.num_workers
        if workers is None and not str(metric.device).startswith("cpu"):  # CPU: chosen from the first batches
            workers = default_workers(len(jobs))
        dataset = BatchJobs(self.load_images, self.records, spans, metric)
        from_files = (lambda a, b: self.src.load_images(self.records[a:b]))  # a worker's own reads
        bar = progress_bar(sum(len(self.chunk_records(i)) for i in mine), f"evaluate {plan.instance}", "img",
                           disable=not self.progress or self.rank != 0 or not jobs)
        try:
            pin = str(metric.device).startswith("cuda")
            for n, batch in prepared_batches(dataset, workers, pin_memory=pin, worker_load=from_files):
                i, s = jobs[n]
                recs = self.records[spans[n][0]:spans[n][1]]
                if s == 0:
                    metric.reset()
                    scores = []
                out = metric.update(batch, [r["prompt"] for r in recs], recs)
                if metric.per_image:
                    scores.append(np.asarray(out, dtype=np.float64))
                bar.update(len(recs))
                if n + 1 == len(jobs) or jobs[n + 1][0] != i:  # the chunk's last batch
                    self._write_chunk(plan, self.chunk_records(i), scores, chunk_path[i])
        finally:
            bar.close()

    def _write_chunk(self, plan: MetricPlan, recs: list[dict], scores: list, path: Path) -> None:
        if plan.metric.per_image:
            eval_chunks.write_scores(path, recs, np.concatenate(scores))
        else:
            eval_chunks.write_state(path, plan.metric.state())

    def _merge(self, plan: MetricPlan, cdir: Path, chunk_path: list[Path], frame: pd.DataFrame) -> dict:
        entry = {**plan.identity, "identity": plan.key, "images_sha256": self.set_hash, "n": len(self.records),
                 "batch_size": plan.batch_size, "chunk_size": self.chunk_size}
        for f in sorted(cdir.glob("provenance-r*.json")):
            entry.update(json.loads(f.read_text()))
        errors = [json.loads(f.read_text())["error"] for f in sorted(cdir.glob("error-r*.json"))]
        missing = [p.name for p in chunk_path if not p.exists()]
        if not errors and missing:
            errors = [f"chunks {missing[:3]} were not written"]
        try:
            values = None if errors else self._values(plan, chunk_path, frame)
        except Exception as exc:
            errors = [f"{type(exc).__name__}: {exc}"]
            log.error("metric %s failed in compute:\n%s", plan.instance, traceback.format_exc())
        if errors:
            for f in cdir.glob("error-r*.json"):
                f.unlink()  # a re-run tries again (finished chunks are kept)
            if plan.metric.per_image:
                frame[plan.instance] = np.nan
            return {**entry, "status": "failed", "error": errors[0], "value": float("nan")}
        main = values.pop(plan.metric.name)
        return {**entry, "status": "ok", "value": float(main), "values": {k: float(v) for k, v in values.items()}}

    def _values(self, plan: MetricPlan, chunk_path: list[Path], frame: pd.DataFrame) -> dict:
        metric = plan.metric
        if metric.per_image:
            pids, ks, score = eval_chunks.read_scores(chunk_path)
            if not (pids == frame["prompt_id"].tolist() and (ks == frame["k"].to_numpy()).all()):
                raise RuntimeError("merged per-image scores do not line up with the manifest")
            frame[plan.instance] = score
            return dict(metric.aggregate(score, self.records))
        states = eval_chunks.read_states(chunk_path)
        metric.load_states(states)
        values = dict(metric.compute())
        if self.set_bootstrap and len(states) > 1:  # a cluster bootstrap over the chunks
            values.update(chunk_bootstrap_ci(metric, states, self.set_bootstrap))
        return values
