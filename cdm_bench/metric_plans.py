"""Metric entries of an evaluate call -> plans: instance name, registry name, options, batch size
and the constructed (not yet set up) metric, whose identity keys the score cache.

Entries: ``"a,b"``, ``"alias=name"`` or mappings ``{name: NAME, alias: INSTANCE, batch_size: B,
device: D, dtype: T, <metric options>}``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from cdm_bench.errors import SpecError
from cdm_bench.metric import Metric
from cdm_bench.registry import METRICS


@dataclass
class MetricPlan:
    """One metric instance to score: its name on the leaderboard, class and settings."""

    instance: str
    registry_name: str
    options: dict
    batch_size: int
    metric: Metric

    @property
    def identity(self) -> dict:
        return {"metric": self.registry_name, **self.metric.describe(), "options": _plain(self.options)}

    @property
    def key(self) -> str:
        return hashlib.sha256(json.dumps(self.identity, sort_keys=True, default=str).encode()).hexdigest()[:16]


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
    out = []
    for m in metrics:
        if isinstance(m, dict):
            opts = dict(m)
            if "name" not in opts:
                raise SpecError(f"metric entry {m!r} lacks 'name'")
            name = str(opts.pop("name"))
            instance = str(opts.pop("alias", None) or name)
        else:
            instance, _, name = str(m).strip().rpartition("=")
            name = name.strip()
            instance = instance.strip() or name
            opts = {}
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
        unknown = sorted(set(options) - set(params))
        if unknown:
            allowed = sorted((set(params) - {"self"}) | {"alias", "batch_size"})
            raise SpecError(f"metric {name!r}: unknown option(s) {unknown}; allowed: {allowed}")
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
        metric = build_metric(name, {k: v for k, v in kwargs.items() if k != "device"}, kwargs["device"])
        if instance == name and ":" in name:  # "package.module:Class": results under its declared name
            instance = metric.name or name
        bs = int(bs or metric.batch_size or batch_size)
        if bs < 1:
            raise SpecError(f"metric {instance!r}: batch_size must be >= 1, got {bs}")
        group = max(int(getattr(metric, "group_size", 1) or 1), 1)
        bs = -(-bs // group) * group  # whole groups per batch
        plans.append(MetricPlan(instance, name, opts, bs, metric))
    return plans
