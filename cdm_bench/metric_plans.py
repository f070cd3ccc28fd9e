"""Metric entries of an evaluate call -> plans: instance name, registry name, options, batch size
and the constructed (not yet set up) metric, whose identity keys the score cache.

Entries: ``"a,b"``, ``"alias=name"`` or mappings ``{name: NAME, alias: INSTANCE, batch_size: B,
device: D, dtype: T, <metric options>}``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cached_property

from cdm_bench.errors import SpecError
from cdm_bench.metric import DTYPES, Metric
from cdm_bench.registry import METRICS
from cdm_bench.safenames import safe_name
from cdm_bench.validate import MAX_BATCH, check_kwargs, int_in_range

#: instance names that would collide with the score table's own columns
RESERVED_INSTANCES = ("prompt_id", "k", "prompt", "seed", "file", "sha256")


@dataclass
class MetricPlan:
    """One metric instance to score: its name on the leaderboard, class and settings."""

    instance: str
    registry_name: str
    options: dict
    batch_size: int
    metric: Metric

    @cached_property
    def identity(self) -> dict:
        """Computed once per plan (it hashes the weights' content), so one evaluate call keys its
        chunks and its result with the same identity."""
        return {"metric": self.registry_name, **self.metric.describe(), "options": _plain(resolved_options(self))}

    @cached_property
    def key(self) -> str:
        return hashlib.sha256(json.dumps(self.identity, sort_keys=True, default=str).encode()).hexdigest()[:16]


def resolved_options(plan: MetricPlan) -> dict:
    """The metric's options with its defaults filled in (so an option left at its default and the
    same value written out are one identity); ``device`` is not an option of the numbers."""
    import inspect

    params = inspect.signature(type(plan.metric).__init__).parameters
    out = {n: p.default for n, p in params.items()
           if n not in ("self", "device", "dtype") and p.default is not inspect.Parameter.empty
           and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    out.update({k: v for k, v in plan.options.items() if k not in ("device", "dtype")})
    return out


def _plain(obj):
    """JSON-safe copy of option values (objects become their type name)."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    return f"<{type(obj).__name__}>"


def parse_metrics(metrics) -> list[tuple[str, str, dict]]:
    """``"a,b=c"`` | ``["a", {"name": "c", "alias": "b", opt: v}]`` -> [(instance, name, options)]."""
    if isinstance(metrics, str):
        metrics = [m for m in metrics.split(",") if m.strip()]
    if not isinstance(metrics, (list, tuple)):
        raise SpecError(f"metrics must be a list of names or entries, got {type(metrics).__name__}")
    out = []
    for m in metrics:
        if isinstance(m, dict):
            opts = dict(m)
            if not isinstance(opts.get("name"), str) or not opts["name"]:
                raise SpecError(f"metric entry {str(m)[:80]} needs 'name' (a string)")
            name = opts.pop("name")
            instance = opts.pop("alias", None) or name
        elif isinstance(m, str):
            instance, _, name = m.strip().rpartition("=")
            name = name.strip()
            instance = instance.strip() or name
            opts = {}
        else:
            raise SpecError(f"a metric entry is a name or a mapping, got {type(m).__name__} {str(m)[:60]!r}")
        if not (instance == name and ":" in name):  # "module:Class" gets its declared name (build_plans)
            safe_name(instance, "metric instance name", RESERVED_INSTANCES)
        out.append((instance, name, opts))
    if not out:
        raise SpecError("no metrics given")
    names = [i for i, _, _ in out]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise SpecError(f"metric instance name(s) {dupes} used twice; give one an alias (alias=name)")
    return out


def build_metric(name: str, options: dict, device: str = "cpu") -> Metric:
    import inspect

    cls = METRICS.get(name)
    params = inspect.signature(cls.__init__).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        unknown = sorted(set(options) - set(params), key=str)
        if unknown:
            allowed = sorted((set(params) - {"self"}) | {"alias", "batch_size"})
            raise SpecError(f"metric {name!r}: unknown option(s) {unknown}; allowed: {allowed}")
    check_kwargs(cls, {"device": device, **options}, f"metric {name!r}")
    try:
        return cls(device=device, **options)
    except (TypeError, ValueError) as exc:  # a bad option value: one clear line
        raise SpecError(f"metric {name!r}: {exc}") from None


def build_plans(metrics, batch_size: int, device: str, dtype: str) -> list[MetricPlan]:
    plans = []
    for instance, name, opts in parse_metrics(metrics):
        opts = dict(opts)
        bs = opts.pop("batch_size", None)
        kwargs = {"device": opts.pop("device", device), "dtype": opts.pop("dtype", dtype), **opts}
        if not isinstance(kwargs["device"], str) or kwargs["dtype"] not in DTYPES:
            raise SpecError(f"metric {instance!r}: device must be a string and dtype one of {list(DTYPES)}, got "
                            f"{kwargs['device']!r} and {kwargs['dtype']!r}")
        metric = build_metric(name, {k: v for k, v in kwargs.items() if k != "device"}, kwargs["device"])
        if instance == name and ":" in name:  # "package.module:Class": results under its declared name
            instance = safe_name(metric.name or "", "metric instance name (the class's declared name)",
                                 RESERVED_INSTANCES)
        bs = int_in_range(bs if bs is not None else (metric.batch_size or batch_size), f"metric {instance!r}: batch_size",
                          1, MAX_BATCH)
        group = max(int(getattr(metric, "group_size", 1) or 1), 1)
        bs = -(-bs // group) * group  # whole groups per batch
        plans.append(MetricPlan(instance, name, opts, bs, metric))
    return plans


def readiness(metrics) -> dict[str, str | None]:
    """{instance: None when it can run in this interpreter, else the one-line reason} — the
    check evaluate makes before scoring (``Metric.check``: packages and weights)."""
    from cdm_bench.errors import CdmBenchError

    out = {}
    for plan in build_plans(metrics, 1, "cpu", "float32"):
        try:
            plan.metric.check()
            out[plan.instance] = None
        except CdmBenchError as exc:
            out[plan.instance] = f"no: {exc}"
    return out


def readiness_in(python: str, metrics) -> dict[str, str | None]:
    """:func:`readiness` run under another interpreter (an eval env); a missing or broken one is
    the reason for every metric."""
    import subprocess

    from cdm_bench.interpreters import eval_python_problem

    names = [i for i, _, _ in parse_metrics(metrics)]
    problem = eval_python_problem(python)
    if problem is None:
        proc = subprocess.run([python, "-m", "cdm_bench.metric_plans", json.dumps(metrics, default=str)],
                              capture_output=True, text=True, timeout=600)
        try:
            return json.loads(proc.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            problem = f"the check failed there ({(proc.stderr.strip().splitlines() or ['no output'])[-1][:120]})"
    return {n: f"no: {problem}" for n in names}


if __name__ == "__main__":  # python -m cdm_bench.metric_plans '<metric entries as JSON>'
    import sys

    print(json.dumps(readiness(json.loads(sys.argv[1]))))
