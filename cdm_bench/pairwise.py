"""The evaluate phase for pairwise metrics: ``cdm-bench evaluate --images A --against B
--metrics llm_judge`` judges every image of A against B's image of the same (prompt id, sample
index) and writes, in A's run directory, ``pairwise/<instance>-<key>/`` (``key``: B's generation
key and the judge's identity): ``responses.jsonl`` (every raw answer, as it arrives),
``verdicts.csv`` (one row per pair) and ``summary.json`` (win / tie / loss of A against B with
95 % prompt-bootstrap intervals, the consistency rate, the failed pairs). A killed run asks
nothing twice. Image sets whose prompts differ are refused; a pair that got no verdict is failed
(not a tie) and fails the call unless ``allow_partial``.

Sharded like every evaluate call (``torchrun --nproc_per_node N -m cdm_bench evaluate ...
--against ...``): pair ``i`` belongs to rank ``i % N``; each rank appends its answers to its own
``responses-r<rank>.jsonl`` and reads every ``responses*.jsonl`` first (so a run resumed with
another number of processes asks nothing twice); rank 0 holds the locks and writes the verdicts
and the summary.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from pathlib import Path

from cdm_bench.errors import EvaluationInputError, MetricFailedError, SpecError, UnknownNameError

PAIRWISE_METRICS = {"llm_judge": "metrics.llm_judge:LLMJudge"}
SUMMARY, VERDICTS = "summary.json", "verdicts.csv"


def build_pairwise(entry) -> tuple[str, object]:
    """(instance name, metric) from ``name`` or ``{name, alias, **options}``."""
    import importlib

    from cdm_bench.safenames import safe_name
    from cdm_bench.validate import check_kwargs

    if hasattr(entry, "metric") and hasattr(entry, "instance"):  # built already (benchmark specs)
        return entry.instance, entry.metric
    entry = {"name": entry} if isinstance(entry, str) else dict(entry)
    name = entry.pop("name")
    alias = safe_name(entry.pop("alias", None) or name, "metric instance name")
    if name not in PAIRWISE_METRICS:
        raise UnknownNameError(f"{name!r} is not a pairwise metric (known: {sorted(PAIRWISE_METRICS)}); "
                               f"without --against, evaluate scores one run")
    module, _, cls_name = PAIRWISE_METRICS[name].partition(":")
    cls = getattr(importlib.import_module(module), cls_name)
    check_kwargs(cls, entry, f"metric {name}")
    return alias, cls(**entry)


def pair_records(a, b) -> list[tuple[dict, dict]]:
    """(A's record, B's record) per (prompt id, k); refused when the two runs' prompts differ."""
    ra, rb = a.read_manifest(), b.read_manifest()
    ka = {(r["prompt_id"], r["k"]): r for r in ra}
    kb = {(r["prompt_id"], r["k"]): r for r in rb}
    if set(ka) != set(kb):
        only_a, only_b = sorted(set(ka) - set(kb))[:3], sorted(set(kb) - set(ka))[:3]
        raise EvaluationInputError(f"{a.root} and {b.root} do not hold the same (prompt id, sample) set "
                                   f"(only in the first: {only_a}; only in the second: {only_b})")
    differ = [key for key in ka if ka[key]["prompt"] != kb[key]["prompt"]]
    if differ:
        raise EvaluationInputError(f"{a.root} and {b.root}: the prompt of {differ[0]} differs "
                                   f"({ka[differ[0]]['prompt']!r} vs {kb[differ[0]]['prompt']!r}); judge runs of one prompt set")
    return [(ka[key], kb[key]) for key in sorted(ka, key=lambda t: (str(t[0]), t[1]))]


def _url_loader(run, record: dict, max_size: int):
    def load() -> str:
        from metrics.llm_judge_protocol import image_data_url

        return image_data_url(run.load_images([record], verify=True)[0], max_size)
    return load


def evaluate_pairwise(images_dir, against_dir, metrics, allow_partial: bool = False) -> dict:
    """Judge run ``images_dir`` against ``against_dir`` with each pairwise metric; returns
    {instance: results} (also written)."""
    from cdm_bench import dist
    from cdm_bench.evaluate import _lock
    from cdm_bench.rundir import RunDir, generation_key

    a, b = RunDir(images_dir), RunDir(against_dir)
    for run in (a, b):
        if not run.is_complete():
            raise EvaluationInputError(f"{run.root} is not a complete generation (no manifest.jsonl)")
    if a.root.resolve() == b.root.resolve():
        raise SpecError("--against names the same run as --images")
    built = [build_pairwise(m) for m in (metrics if isinstance(metrics, list) else [metrics])]
    for _, metric in built:  # packages, keys: before any image is read
        metric.backend()
    out = {}
    with dist.process_group() as (rank, size), contextlib.ExitStack() as held:
        _lock(held, rank, a, "evaluate --against (writing)", False)
        _lock(held, rank, b, "evaluate --against (reading)", True)
        pairs = pair_records(a, b)
        key_b = generation_key(b.read_identity())
        for instance, metric in built:
            ident = {"judge": metric.describe(), "against": key_b}
            key = hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:16]
            out[instance] = _judge_one(a, b, instance, metric, ident, key, pairs, allow_partial, rank, size)
    return out


def _judge_shard(a, b, metric, folder: Path, pairs, rank: int, size: int) -> list[dict] | None:
    """This rank's pairs judged; on rank 0 every rank's rows, in ``pairs`` order (else None)."""
    from cdm_bench import dist
    from metrics.llm_judge_backends import Pair, ResponseStore

    if rank == 0:
        folder.mkdir(parents=True, exist_ok=True)
    dist.barrier()
    own = folder / ("responses.jsonl" if size == 1 else f"responses-r{rank}.jsonl")
    store = ResponseStore(own, also=[p for p in sorted(folder.glob("responses*.jsonl")) if p != own])
    mine = [Pair(str(ra["prompt_id"]), int(ra["k"]), ra["prompt"], ra["sha256"], rb["sha256"],
                 _url_loader(a, ra, metric.max_size), _url_loader(b, rb, metric.max_size))
            for ra, rb in pairs[rank::size]]
    shards = dist.all_gather(metric.judge(mine, store))
    if rank != 0:
        return None
    rows: list = [None] * len(pairs)
    for r, shard in enumerate(shards):
        rows[r::size] = shard
    return rows


def _judge_one(a, b, instance, metric, ident, key, pairs, allow_partial, rank: int = 0, size: int = 1) -> dict:
    import pandas as pd

    from cdm_bench import dist

    folder = a.pairwise_dir(instance, key)
    judged = _judge_shard(a, b, metric, folder, pairs, rank, size)
    res, error = dist.broadcast(_summarise(a, b, instance, ident, folder, pd.DataFrame(judged)) if rank == 0 else None)
    if error and not allow_partial:
        raise MetricFailedError(error)
    return res


def _summarise(a, b, instance, ident, folder: Path, rows) -> tuple[dict, str | None]:
    """Write verdicts.csv and summary.json; (summary, the failure message or None)."""
    from cdm_bench.atomic import atomic_write_json, atomic_write_text
    from cdm_bench.report.pairwise import win_tie_loss

    atomic_write_text(folder / VERDICTS, rows.to_csv(index=False))
    ok = rows[rows["status"] == "ok"]
    stats = win_tie_loss(ok.assign(a="run", b="against")) if len(ok) else {}
    failed = int((rows["status"] != "ok").sum())
    res = {"metric": instance, "identity": ident, "run": {"path": str(a.root), "name": _name(a)},
           "against": {"path": str(b.root), "name": _name(b)},
           "status": "ok" if not failed else ("partial" if len(ok) else "failed"), "pairs": len(rows),
           "failed": failed, "consistency": float(ok["consistent"].mean()) if len(ok) else float("nan"), **stats}
    atomic_write_json(folder / SUMMARY, res)
    if not failed:
        return res, None
    return res, (f"{instance}: {failed} of {len(rows)} pairs got no verdict (e.g. "
                 f"{rows.loc[rows['status'] != 'ok', 'error'].iloc[0]}); their answers are in "
                 f"{folder}/responses*.jsonl; re-run to retry them, or pass --allow-partial")


def _name(run) -> str:
    return str(run.read_identity().get("generator", {}).get("name") or run.root.name)


# -- the leaderboard's pairwise tables -------------------------------------------------------------------
def find_summaries(paths) -> list[Path]:
    out = []
    for p in map(Path, paths):
        out += sorted(p.rglob(f"pairwise/*/{SUMMARY}")) if p.is_dir() else []
    return list(dict.fromkeys(out))


def pairwise_tables(paths) -> tuple:
    """(win/tie/loss table, Bradley-Terry ranking per judge or None) from every pairwise summary under ``paths``."""
    import pandas as pd

    from cdm_bench.report.pairwise import bradley_terry_ci

    rows, verdicts = [], []
    for f in find_summaries(paths):
        s = json.loads(f.read_text())
        judge = s["identity"]["judge"]
        label = f"{s['metric']} ({judge.get('model')})"
        rows.append({"generator": s["run"]["name"], "against": s["against"]["name"], "judge": label,
                     **{k: s.get(k) for k in ("win", "win_lo", "win_hi", "tie", "tie_lo", "tie_hi", "loss", "loss_lo",
                                              "loss_hi", "consistency", "pairs", "failed", "status")}})
        v = pd.read_csv(f.parent / VERDICTS)
        v = v[v["status"] == "ok"]
        verdicts.append(pd.DataFrame({"prompt_id": v["prompt_id"].astype(str) + "/" + v["k"].astype(str),
                                      "a": s["run"]["name"], "b": s["against"]["name"], "winner": v["winner"],
                                      "judge": label}))
    table = pd.DataFrame(rows)
    ranking = None
    if verdicts:
        allv = pd.concat(verdicts, ignore_index=True)
        ranks = []
        for judge, g in allv.groupby("judge"):
            if len(set(g["a"]) | set(g["b"])) >= 2 and len(g):
                r = bradley_terry_ci(g, n_boot=200).reset_index(names="generator")
                ranks.append(r.assign(judge=judge))
        ranking = pd.concat(ranks, ignore_index=True) if ranks else None
    return table, ranking


__all__ = ["evaluate_pairwise", "pair_records", "pairwise_tables", "PAIRWISE_METRICS", "Path"]
