"""``cdm-bench run --dry-run SPEC``: what a benchmark would do, without loading any weights.

One row per generator x prompt set x metric: the images it would generate (prompts x samples),
the metric's environment (in-process / the interpreter named by ``eval_python``), its pip extra
and environment command, and whether it can run there: the same check evaluate makes before it
scores (packages and weights), made in that interpreter (a missing interpreter says so).
"""

from __future__ import annotations

import pandas as pd

from cdm_bench.benchmark import BenchmarkSpec, PromptEntry, entry_metrics, generator_names, metric_groups
from cdm_bench.errors import CdmBenchError, SpecError


def prompt_set_info(entry: PromptEntry, limit: int | None) -> tuple[str, int | None, list, str]:
    """(key, prompt count, default metrics, note) of a set, from its data or, when the data file
    is not here, from its spec's declared count."""
    from cdm_bench.prompts import load_prompt_set
    from cdm_bench.registry import PROMPTS
    from cdm_bench.specfile import load_mapping

    try:
        ps = load_prompt_set(entry.set, limit=entry.limit if entry.limit is not None else limit)
        return ps.key, len(ps), ps.default_metrics, ""
    except SpecError as exc:
        if entry.set not in PROMPTS:
            raise
        spec = load_mapping(PROMPTS.get(entry.set), "prompt-set spec")
        count = spec.get("count")
        n = None if count is None else min(int(count), entry.limit or limit or int(count))
        return f"{spec.get('name', entry.set)}@{spec.get('version', '1')}", n, spec.get("default_metrics") or [], \
            f"data missing: {exc}"


def _metric_rows(metrics: list, default_python: str | None) -> list[dict]:
    """One row per metric: where it runs and whether it can run there, by the check evaluate
    makes (:func:`cdm_bench.metric_plans.readiness`, run in that interpreter)."""
    from cdm_bench.evaluate import build_plans
    from cdm_bench.metric_plans import readiness, readiness_in

    rows = []
    for python, group in metric_groups(metrics, default_python).items():
        plans = build_plans(group, 1, "cpu", "float32")
        ready = readiness(group) if not python else readiness_in(python, group)
        for plan in plans:
            m = plan.metric
            rows.append({"metric": plan.instance, "env": python or "this interpreter",
                         "install": " / ".join(x for x in (f"cdm-bench[{m.extra}]" if m.extra else "",
                                                             m.env_hint or "") if x) or "core",
                         "ready there": ready.get(plan.instance) or "yes"})
    return rows


def plan_table(spec: BenchmarkSpec) -> pd.DataFrame:
    names = generator_names(spec)
    rows = []
    for entry in (PromptEntry.parse(p) for p in spec.prompts):
        key, n, defaults, note = prompt_set_info(entry, spec.limit)
        samples = entry.samples_per_prompt or spec.samples_per_prompt
        metric_rows = _metric_rows(entry_metrics(entry, spec, defaults), spec.eval_python)
        for name in names:
            for mr in metric_rows:
                rows.append({"generator": name, "prompts": key,
                             "images": "?" if n is None else n * samples, **mr, "note": note})
            rows += _pairwise_rows(spec, names, name, key, entry, n, samples, note)
    return pd.DataFrame(rows)


def _pairwise_rows(spec: BenchmarkSpec, names, name, key, entry, n, samples, note) -> list[dict]:
    """A row per judge this generator is compared with the reference by (``pairwise:``)."""
    from cdm_bench.errors import CdmBenchError
    from cdm_bench.pairwise import build_pairwise

    out = []
    for e in (spec.pairwise or []):
        if e.get("reference") == name or (e.get("prompts") is not None and entry.set not in e["prompts"]):
            continue
        if e.get("reference") not in names:
            raise CdmBenchError(f"pairwise reference {e.get('reference')!r} is not one of the generators {names}")
        instance, metric = build_pairwise(e.get("metric", "llm_judge"))
        try:
            metric.backend()
            ready = "yes"
        except CdmBenchError as exc:
            ready = f"no: {exc}"
        out.append({"generator": name, "prompts": key, "images": "?" if n is None else n * samples,
                    "metric": f"{instance} vs {e['reference']}", "env": "this interpreter",
                    "install": f"cdm-bench[{metric.extra}]", "ready there": ready, "note": note})
    return out


def dry_run(spec: BenchmarkSpec) -> str:
    """The plan as text (raises CdmBenchError on a spec that would fail)."""
    table = plan_table(spec)
    if table.empty:
        raise CdmBenchError("the spec plans nothing")
    per_pair = table.drop_duplicates(["generator", "prompts"])
    total = sum(v for v in per_pair["images"] if isinstance(v, int))
    notes = sorted({n for n in table["note"] if n})
    text = table.drop(columns=["note"]).to_markdown(index=False)
    return (f"benchmark {spec.name!r}: {len(per_pair)} generator x prompt-set runs, {total} images, "
            f"{table['metric'].nunique()} metrics\n\n{text}\n" + "".join(f"\nnote: {n}" for n in notes) + "\n")
