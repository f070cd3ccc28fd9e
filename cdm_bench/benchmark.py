"""Benchmark specs: generators x prompt sets x metrics -> generate, evaluate, leaderboard.

A spec (YAML)::

    name: toy-world
    seed: 0
    samples_per_prompt: 4
    batch_size: 32                 # generate batch size
    eval_batch_size: 64
    generators:                    # registry names, YAML paths or inline specs
      - {generator: toy-real, name: reference}
      - {generator: toy, name: teacher-50-cfg2, nfe: 50, guidance: 2.0}
    prompts: [toy]                 # or {set: NAME, metrics: [...], samples_per_prompt: K, limit: N}
    metrics: [toy_fid, {name: toy_align, scorer: demo}]   # default: each prompt set's default_metrics
    pairwise:                      # pairwise judges: every generator against the named one
      - {metric: {name: llm_judge, base_url: "http://localhost:8000/v1", model: M}, reference: teacher-50-cfg2}
    eval_python: null              # run the evaluate phase under another interpreter (eval env);
                                   # a metric entry's own eval_python key sends it elsewhere:
                                   # {name: hpsv3, eval_python: .venv-hpsv3/bin/python}
    allow_partial: false

Output: ``OUT/runs/<generator name>/<prompt set>@<version>/`` per pair, and the leaderboard
in ``OUT``. Already-finished images and cached scores are reused, so re-running resumes.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, field, fields
from pathlib import Path

from cdm_bench import dist
from cdm_bench.errors import CdmBenchError, SpecError
from cdm_bench.interpreters import check_eval_python
from cdm_bench.generator import build_generator
from cdm_bench.prompts import load_prompt_set
from cdm_bench.safenames import check_out_dir, safe_name
from cdm_bench.specfile import load_mapping
from cdm_bench.validate import MAX_BATCH, MAX_IMAGES, MAX_SAMPLES_PER_PROMPT, MAX_SEED, check_kwargs, int_in_range


PROMPT_ENTRY_KEYS = {"set", "metrics", "samples_per_prompt", "limit"}


@dataclass
class PromptEntry:
    """One prompt set of a benchmark and what is done with it."""

    set: str
    metrics: list | None = None         # None: the spec's metrics, else the set's default_metrics
    samples_per_prompt: int | None = None
    limit: int | None = None

    @classmethod
    def parse(cls, entry) -> "PromptEntry":
        if isinstance(entry, str):
            return cls(entry)
        if not isinstance(entry, dict) or "set" not in entry:
            raise SpecError(f"benchmark spec: a prompts entry is a set name/path or a mapping with 'set': {entry!r}")
        unknown = sorted(set(entry) - PROMPT_ENTRY_KEYS, key=str)
        if unknown:
            raise SpecError(f"benchmark spec: unknown key(s) {unknown} in prompts entry; allowed: {sorted(PROMPT_ENTRY_KEYS)}")
        check_kwargs(cls, entry, "benchmark spec: prompts entry")
        if entry.get("samples_per_prompt") is not None:
            int_in_range(entry["samples_per_prompt"], "samples_per_prompt", 1, MAX_SAMPLES_PER_PROMPT)
        if entry.get("limit") is not None:
            int_in_range(entry["limit"], "limit", 1, MAX_IMAGES)
        return cls(**entry)


@dataclass
class BenchmarkSpec:
    generators: list
    prompts: list
    metrics: list = field(default_factory=list)
    name: str = "benchmark"
    seed: int = 0
    samples_per_prompt: int = 1
    batch_size: int = 16
    eval_batch_size: int = 64
    limit: int | None = None
    eval_python: str | None = None
    allow_partial: bool = False
    overwrite: bool = False
    pairwise: list = field(default_factory=list)
    extra: dict = field(default_factory=dict)  # free-form notes, recorded but unused

    @classmethod
    def from_dict(cls, d: dict) -> "BenchmarkSpec":
        allowed = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - allowed, key=str)
        if unknown:
            raise SpecError(f"benchmark spec: unknown key(s) {unknown}; allowed: {sorted(allowed)}")
        missing = [k for k in ("generators", "prompts") if not d.get(k)]
        if missing:
            raise SpecError(f"benchmark spec: missing or empty {missing}")
        check_kwargs(cls, d, "benchmark spec")
        safe_name(d.get("name", "benchmark"), "benchmark spec name")
        for key, hi in (("seed", MAX_SEED), ("samples_per_prompt", MAX_SAMPLES_PER_PROMPT), ("batch_size", MAX_BATCH),
                        ("eval_batch_size", MAX_BATCH), ("limit", MAX_IMAGES)):
            if d.get(key) is not None:
                int_in_range(d[key], key, 0 if key == "seed" else 1, hi)
        return cls(**d)

    @classmethod
    def from_yaml(cls, path) -> "BenchmarkSpec":
        if not Path(path).is_file():
            raise SpecError(f"benchmark spec not found: {path}")
        return cls.from_dict(load_mapping(path, "benchmark spec"))


def generator_names(spec: BenchmarkSpec) -> list[str]:
    for g in spec.generators:
        if not isinstance(g, (dict, str)):
            raise SpecError(f"benchmark spec: a generator entry must be a name, a path or a mapping: {g!r}")
    names = [build_generator(g)[1]["name"] for g in spec.generators]  # builds no weights
    if len(set(names)) != len(names):
        raise SpecError(f"benchmark spec: generator names must be unique, got {names}")
    return names


PAIRWISE_KEYS = {"metric", "reference", "prompts"}


def pairwise_plans(spec: BenchmarkSpec, names: list[str]) -> list[tuple[str, object, str, list | None]]:
    """(instance, metric, reference generator, prompt-set names or None = all) per ``pairwise`` entry;
    each metric's package and key are checked here, before any work."""
    from cdm_bench.pairwise import build_pairwise
    from cdm_bench.validate import known_keys

    out = []
    entries = spec.pairwise if isinstance(spec.pairwise, list) else [spec.pairwise]
    for i, e in enumerate(entries):
        known_keys(e, PAIRWISE_KEYS, f"benchmark spec: pairwise[{i}]")
        if e.get("reference") not in names:
            raise SpecError(f"benchmark spec: pairwise[{i}].reference must name one of the generators {names}, "
                            f"got {e.get('reference')!r}")
        instance, metric = build_pairwise(e.get("metric", "llm_judge"))
        metric.backend()
        out.append((instance, metric, e["reference"], e.get("prompts")))
    return out


def run_pairwise(plans, out: Path, names: list[str], prompt_sets, allow_partial: bool) -> None:
    from cdm_bench.pairwise import evaluate_pairwise

    for instance, metric, reference, sets in plans:
        for ps in prompt_sets:
            if sets is not None and ps.name not in sets:
                continue
            for name in names:
                if name != reference:
                    evaluate_pairwise(out / "runs" / name / ps.key, out / "runs" / reference / ps.key,
                                      [_Built(instance, metric)], allow_partial)


class _Built:
    """An already built pairwise metric passed through ``evaluate_pairwise``'s entry list."""

    def __init__(self, instance: str, metric):
        self.instance, self.metric = instance, metric


def entry_metrics(entry: PromptEntry, spec: BenchmarkSpec, default_metrics: list) -> list:
    metrics = entry.metrics if entry.metrics is not None else (spec.metrics or default_metrics)
    if not metrics:
        raise SpecError(f"benchmark spec: no metrics for prompt set {entry.set!r} (give the spec or the "
                        f"entry 'metrics', or a set with default_metrics)")
    return metrics


def run_benchmark(spec: BenchmarkSpec, out_dir, progress: bool = True) -> Path | None:
    """Run every (generator, prompt set) pair; returns the leaderboard folder (rank 0).
    Under torchrun/accelerate every rank generates and scores its share."""
    from cdm_bench.generate import generate

    out = check_out_dir(out_dir)
    entries = [PromptEntry.parse(p) for p in spec.prompts]
    prompt_sets = [load_prompt_set(e.set, limit=e.limit if e.limit is not None else spec.limit) for e in entries]
    plans = [(e, ps, entry_metrics(e, spec, ps.default_metrics)) for e, ps in zip(entries, prompt_sets)]
    names = generator_names(spec)
    judges = pairwise_plans(spec, names) if spec.pairwise else []
    for _, _, metrics in plans:  # metric entries and their interpreters checked before any work
        for python in metric_groups(metrics, spec.eval_python):
            if python:
                check_eval_python(python)
    scored = []
    with dist.process_group() as (rank, _):
        for g, name in zip(spec.generators, names):
            for entry, ps, metrics in plans:
                run_dir = out / "runs" / name / ps.key
                generate(g, ps, run_dir, entry.samples_per_prompt or spec.samples_per_prompt, spec.batch_size,
                         spec.seed, spec.overwrite, progress=progress)
                scored.append((run_dir, metrics))
        for run_dir, metrics in scored:
            evaluate_dir(run_dir, metrics, spec, progress)
        if rank != 0:
            return None
        if judges:  # (rank 0 only: the judge's calls are not sharded yet)
            run_pairwise(judges, out, names, prompt_sets, spec.allow_partial)
    from cdm_bench.leaderboard import write_leaderboard

    write_leaderboard([r for r, _ in scored], out)
    return out


def metric_groups(metrics: list, default_python: str | None) -> dict:
    """Metrics grouped by the interpreter that scores them: an entry's own ``eval_python`` key,
    else the spec's (None: in this process)."""
    from cdm_bench.evaluate import parse_metrics

    groups: dict = {}
    for m in metrics:
        m = dict(m) if isinstance(m, dict) else m
        python = m.pop("eval_python", default_python) if isinstance(m, dict) else default_python
        groups.setdefault(python, []).append(m)
    for group in groups.values():
        parse_metrics(group)  # names and duplicates checked before anything runs
    return groups


def evaluate_dir(run_dir: Path, metrics: list, spec: BenchmarkSpec, progress: bool) -> None:
    """Evaluate each group of metrics in-process (sharded over the launched ranks) or under its
    interpreter (an eval env; rank 0 launches it)."""
    for python, group in metric_groups(metrics, spec.eval_python).items():
        if not python:
            from cdm_bench.evaluate import evaluate

            evaluate(run_dir, group, batch_size=spec.eval_batch_size, allow_partial=spec.allow_partial,
                     progress=progress)
        else:
            if dist.world()[0] == 0:
                _evaluate_with(python, run_dir, group, spec)
            dist.barrier()


def _evaluate_with(python: str, run_dir: Path, metrics: list, spec: BenchmarkSpec) -> None:
    from cdm_bench.evaluate import parse_metrics

    parsed = parse_metrics(metrics)
    cmd = [python, "-m", "cdm_bench", "evaluate", "--images", str(run_dir),
           "--metrics", ",".join(i if i == n else f"{i}={n}" for i, n, _ in parsed),
           "--metric-options", json.dumps({i: o for i, _, o in parsed if o}),
           "--batch-size", str(spec.eval_batch_size)]
    if spec.allow_partial:
        cmd.append("--allow-partial")
    proc = subprocess.run(cmd)
    if proc.returncode != 0:
        raise CdmBenchError(f"evaluate under {python} failed (exit {proc.returncode}): {' '.join(cmd)}")
