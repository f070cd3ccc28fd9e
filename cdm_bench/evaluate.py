"""The evaluate phase: score a generation directory with named metrics.

Imports neither diffusers nor any training code, so it runs in a separate eval environment.
Writes into ``out_dir`` (default: the images directory):

    scores.parquet   one row per image (prompt_id, k, prompt, seed, file, sha256, one column
                     per per-image metric); rebuilt leaderboards and bootstrap CIs read it
    results.json     per-set values with metric name, version, direction, n, status, plus the
                     generation identity and the environment

Scores already present for the same image hashes and metric version are reused (a cache keyed
by image sha, metric and version); ``force=True`` recomputes. A metric that raises is recorded
as ``failed`` with its error, and the run fails unless ``allow_partial=True``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import traceback
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from tqdm.auto import tqdm

from cdm_bench.metric import Metric, convert_images
from cdm_bench.provenance import environment
from cdm_bench.registry import METRICS

SCORES = "scores.parquet"
RESULTS = "results.json"


class EvaluationInputError(RuntimeError):
    """Missing/corrupt images or an unfinished generation directory."""


class MetricFailedError(RuntimeError):
    """One or more metrics failed (details in results.json)."""


def parse_metrics(metrics) -> list[tuple[str, dict]]:
    """"a,b" | ["a", {"name": "b", opt: v}] -> [(name, options)]."""
    if isinstance(metrics, str):
        metrics = [m for m in metrics.split(",") if m.strip()]
    out = []
    for m in metrics:
        if isinstance(m, dict):
            opts = dict(m)
            out.append((opts.pop("name"), opts))
        else:
            out.append((str(m).strip(), {}))
    if not out:
        raise ValueError("no metrics given")
    return out


def build_metric(name: str, options: dict, device: str = "cpu") -> Metric:
    cls = METRICS.get(name)
    return cls(device=device, **options)


def load_manifest(images_dir: Path) -> tuple[dict, list[dict]]:
    ident_path, man_path = images_dir / "generation.json", images_dir / "manifest.jsonl"
    if not man_path.exists():
        raise EvaluationInputError(
            f"{images_dir} has no manifest.jsonl: the generate phase did not finish there "
            f"(run `cdm-bench generate` again with the same arguments to resume)")
    ident = json.loads(ident_path.read_text()) if ident_path.exists() else {}
    records = [json.loads(ln) for ln in man_path.read_text().splitlines() if ln.strip()]
    if not records:
        raise EvaluationInputError(f"{man_path} lists no images")
    return ident, records


def check_images(images_dir: Path, records: list[dict]) -> None:
    """Every PNG must exist, match its manifest hash and decode; name every bad file."""
    bad = []
    for r in records:
        path = images_dir / r["file"]
        if not path.exists():
            bad.append(f"{path}: missing")
            continue
        data = path.read_bytes()
        if r.get("sha256") and hashlib.sha256(data).hexdigest() != r["sha256"]:
            bad.append(f"{path}: content does not match the manifest's sha256 (corrupt or replaced)")
            continue
        try:
            Image.open(io.BytesIO(data)).verify()
        except Exception as exc:  # PIL raises many types for broken files
            bad.append(f"{path}: not a readable PNG ({exc})")
    if bad:
        raise EvaluationInputError("bad images; nothing was scored or overwritten:\n  "
                                   + "\n  ".join(bad[:20]) + (f"\n  ... {len(bad) - 20} more" if len(bad) > 20 else ""))


def _load_batch(images_dir: Path, records: list[dict]) -> np.ndarray:
    return np.stack([np.asarray(Image.open(images_dir / r["file"]).convert("RGB")) for r in records])


def evaluate(images_dir, metrics, out_dir=None, batch_size: int = 32, device: str = "cpu",
             allow_partial: bool = False, force: bool = False, progress: bool = True) -> dict:
    """Score ``images_dir`` with ``metrics``; returns the results dict (also written)."""
    images_dir = Path(images_dir)
    out = Path(out_dir) if out_dir else images_dir
    out.mkdir(parents=True, exist_ok=True)
    ident, records = load_manifest(images_dir)
    check_images(images_dir, records)
    results = _load_results(out, ident)
    scores = _base_frame(records, out)
    todo = []
    for requested, opts in parse_metrics(metrics):
        metric = build_metric(requested, opts, device)
        name = metric.name or requested  # results are keyed by the metric's declared name
        cached = results["metrics"].get(name, {})
        reusable = (not force and cached.get("status") == "ok" and cached.get("version") == metric.version
                    and cached.get("options") == opts and cached.get("sha256") == _set_hash(records)
                    and (not metric.per_image or name in scores.columns))
        if not reusable:
            todo.append((name, opts, metric))
    failures = _score(images_dir, records, todo, scores, results, batch_size, progress)
    for name, opts, metric in todo:
        entry = results["metrics"][name]
        entry.update(metric.describe(), options=opts, sha256=_set_hash(records), n=len(records))
    _write(out, scores, results)
    if failures and not allow_partial:
        raise MetricFailedError("metric(s) failed: " + "; ".join(f"{n}: {e}" for n, e in failures)
                                + f" (see {out / RESULTS}; pass --allow-partial to keep going)")
    return results


def _score(images_dir, records, todo, scores, results, batch_size, progress) -> list:
    failed: dict[str, str] = {}
    per_image = {name: [] for name, _, m in todo if m.per_image}
    bar = tqdm(total=len(records), desc="evaluate", unit="img", disable=not progress or not todo)
    for start in range(0, len(records), batch_size):
        batch = records[start:start + batch_size]
        images = _load_batch(images_dir, batch) if todo else None
        prompts = [r["prompt"] for r in batch]
        for name, _, metric in todo:
            if name in failed:
                continue
            try:
                s = metric.update(convert_images(images, metric.input_format), prompts, batch)
                if metric.per_image:
                    per_image[name].append(np.asarray(s, dtype=np.float64))
            except Exception as exc:
                failed[name] = f"{type(exc).__name__}: {exc}"
                traceback.print_exc()
        bar.update(len(batch))
    bar.close()
    for name, _, metric in todo:
        entry = results["metrics"].setdefault(name, {})
        entry.clear()
        if name not in failed:
            try:
                entry.update(status="ok", values={k: float(v) for k, v in metric.compute().items()})
                entry["value"] = entry["values"][name]
            except Exception as exc:
                failed[name] = f"{type(exc).__name__}: {exc}"
        if name in failed:
            entry.update(status="failed", error=failed[name], value=float("nan"))
            if metric.per_image:
                scores[name] = np.nan
        elif metric.per_image:
            scores[name] = np.concatenate(per_image[name])
    return list(failed.items())


def _set_hash(records: list[dict]) -> str:
    h = hashlib.sha256()
    for r in records:
        h.update(f"{r['prompt_id']}:{r['k']}:{r.get('sha256')}".encode())
    return h.hexdigest()


def _base_frame(records: list[dict], out: Path) -> pd.DataFrame:
    cols = ["prompt_id", "k", "prompt", "seed", "file", "sha256"]
    frame = pd.DataFrame([{c: r.get(c) for c in cols} for r in records])
    old_path = out / SCORES
    if old_path.exists():  # keep per-image scores of other metrics (nothing lost)
        old = pd.read_parquet(old_path)
        keep = [c for c in old.columns if c not in cols]
        if keep and len(old) == len(frame) and (old["sha256"].values == frame["sha256"].values).all():
            frame = pd.concat([frame, old[keep]], axis=1)
    return frame


def _load_results(out: Path, ident: dict) -> dict:
    path = out / RESULTS
    old = json.loads(path.read_text()) if path.exists() else {}
    same = old.get("generation", {}).get("spec_hash") == ident.get("spec_hash")
    return {"generation": ident, "metrics": old.get("metrics", {}) if same else {}}


def _write(out: Path, scores: pd.DataFrame, results: dict) -> None:
    results["environment"] = environment()
    results["n_images"] = len(scores)
    tmp = out / (SCORES + ".tmp")
    scores.to_parquet(tmp, index=False)
    os.replace(tmp, out / SCORES)
    tmp = out / (RESULTS + ".tmp")
    tmp.write_text(json.dumps(results, indent=2, default=_json_default))
    os.replace(tmp, out / RESULTS)


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    return str(o)
