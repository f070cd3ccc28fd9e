"""One lazy registry mechanism for generators, metrics, prompt sets and recipes.

Entries are registered either eagerly (a decorator on a class) or lazily as a
``"module:attr"`` string, so that ``cdm-bench ls metrics`` lists every metric without
importing its (possibly heavy, possibly missing) libraries. Third-party packages register
through the entry-point groups ``cdm_bench.metrics`` and ``cdm_bench.generators``::

    [project.entry-points."cdm_bench.metrics"]
    my_metric = "my_pkg.metrics:MyMetric"

Example::

    >>> from cdm_bench.registry import METRICS
    >>> METRICS.names()[:2]            # doctest: +SKIP
    ['toy_align', 'toy_fid']
    >>> METRICS.get("toy_fdi")          # doctest: +SKIP
    UnknownNameError: unknown metric 'toy_fdi'; did you mean 'toy_fid'?
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Callable

from cdm_bench.errors import MissingDependencyError, SpecError, UnknownNameError

__all__ = ["Registry", "UnknownNameError", "resolve", "METRICS", "GENERATORS", "PROMPTS", "RECIPES"]


def resolve(ref: str, base: type | str | None = None, what: str = "object") -> Any:
    """The one ``"package.module:Attr"`` resolver: import the module, walk the attribute path,
    and check that the result is a subclass of ``base`` (a class or a ``"module:Class"``
    string) *before* anything is called. Errors are one clear line."""
    module, sep, attr = str(ref).partition(":")
    if not sep or not module or not attr:
        raise UnknownNameError(f"{what} {ref!r} is not a registered name nor a 'package.module:Class' path")
    try:
        obj = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name and (module == exc.name or module.startswith(exc.name + ".")):
            raise UnknownNameError(f"{what} {ref!r}: no module named {module!r}") from None
        raise MissingDependencyError(
            f"{what} {ref!r} needs the package {exc.name!r}, which is not installed") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise UnknownNameError(f"{what} {ref!r}: module {module!r} has no attribute {part!r}")
        obj = getattr(obj, part)
    if base is not None:
        base_cls = resolve(base) if isinstance(base, str) else base
        if not (isinstance(obj, type) and issubclass(obj, base_cls)):
            raise SpecError(f"{what} {ref!r} is not a subclass of {base_cls.__module__}.{base_cls.__qualname__}; "
                            f"refusing to use it")
    return obj


@dataclass
class Entry:
    name: str
    target: Any  # an object, or a "module:attr" string resolved on first use
    meta: dict = field(default_factory=dict)
    base: Any = None  # the class every target must subclass (or its "module:Class" string)
    kind: str = "object"

    @property
    def is_loaded(self) -> bool:
        return not isinstance(self.target, str)

    def load(self) -> Any:
        if self.meta.get("kind") == "file":  # declarative assets (prompt sets, recipes)
            return Path(self.target)
        if isinstance(self.target, str):
            what = self.kind if self.name == self.target else f"{self.kind} {self.name!r} ="
            self.target = resolve(self.target, self.base, what)
        return self.target

    def describe(self) -> str:
        if isinstance(self.target, str):
            return self.target
        mod = getattr(self.target, "__module__", "")
        return f"{mod}:{getattr(self.target, '__qualname__', repr(self.target))}"


class Registry:
    """A name -> object table with lazy targets, entry points and helpful errors."""

    def __init__(self, kind: str, entry_point_group: str | None = None,
                 discover: Callable[["Registry"], None] | None = None, base: Any = None):
        self.kind = kind
        self.base = base
        self.entry_point_group = entry_point_group
        self._discover = discover
        self._entries: dict[str, Entry] = {}
        self._discovered = False

    # -- registration -------------------------------------------------------------------
    def register(self, name: str, target: Any = None, *, overwrite: bool = False, **meta):
        """Register ``target`` (object or "module:attr"); without target, act as a decorator."""
        if target is None:
            def deco(obj):
                self.register(name, obj, overwrite=overwrite, **meta)
                return obj
            return deco
        if name in self._entries and not overwrite:
            old = self._entries[name]
            if old.describe() != Entry(name, target).describe():
                raise ValueError(f"{self.kind} {name!r} is already registered ({old.describe()})")
        if not isinstance(target, str) and self.base is not None:  # eager objects: check now
            base = resolve(self.base) if isinstance(self.base, str) else self.base
            if not (isinstance(target, type) and issubclass(target, base)):
                raise SpecError(f"{self.kind} {name!r}: {target!r} is not a subclass of {base.__qualname__}")
        self._entries[name] = self._entry(name, target, dict(meta))
        return target

    def _entry(self, name: str, target: Any, meta: dict | None = None) -> Entry:
        base = None if (meta or {}).get("kind") == "file" else self.base
        return Entry(name, target, dict(meta or {}), base, self.kind)

    def _ensure_discovered(self) -> None:
        if self._discovered:
            return
        self._discovered = True
        if self._discover is not None:
            self._discover(self)
        if self.entry_point_group:
            for ep in entry_points(group=self.entry_point_group):
                if ep.name not in self._entries:
                    self._entries[ep.name] = self._entry(ep.name, ep.value, {"source": "entry point"})

    # -- lookup -------------------------------------------------------------------------
    def names(self) -> list[str]:
        self._ensure_discovered()
        return sorted(self._entries)

    def entry(self, name: str) -> Entry:
        """The entry for ``name``; an unregistered ``"module:Class"`` path is accepted too."""
        self._ensure_discovered()
        if name not in self._entries and ":" in name:
            return self._entry(name, name)
        if name not in self._entries:
            raise UnknownNameError(self._unknown_message(name))
        return self._entries[name]

    def get(self, name: str) -> Any:
        entry = self.entry(name)
        if entry.meta.get("kind") != "file":
            entry.base = self.base
        return entry.load()

    def __contains__(self, name: str) -> bool:
        self._ensure_discovered()
        return name in self._entries

    def _unknown_message(self, name: str) -> str:
        close = difflib.get_close_matches(name, list(self._entries), n=3, cutoff=0.5)
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        known = ", ".join(sorted(self._entries)) or "(none)"
        plural = self.kind + ("es" if self.kind.endswith("s") else "s")
        return f"unknown {self.kind} {name!r}{hint} Known {plural}: {known}"


def _discover_metrics(reg: Registry) -> None:
    from metrics import BUILTIN_METRICS  # a table of "module:Class" strings; imports nothing heavy

    for name, target in BUILTIN_METRICS.items():
        reg.register(name, target)


def _discover_generators(reg: Registry) -> None:
    from cdm_bench.generators import BUILTIN_GENERATORS

    for name, target in BUILTIN_GENERATORS.items():
        reg.register(name, target)


def _discover_prompts(reg: Registry) -> None:
    from cdm_bench.paths import prompts_dir

    for path in sorted(prompts_dir().glob("*.yaml")):
        reg.register(path.stem, str(path), kind="file")


def _discover_recipes(reg: Registry) -> None:
    from cdm_bench.paths import recipes_dir

    for path in sorted(recipes_dir().glob("*.yaml")):
        if path.stem.startswith("accelerate_"):  # launcher configs, not training recipes
            continue
        reg.register(path.stem, str(path), kind="file")
    for folder in ("sd3_medium", "longcat", "world"):  # "sd3_medium/cdm", ...; world: the bench world
        for path in sorted((recipes_dir() / folder).glob("*.yaml")):
            reg.register(f"{folder}/{path.stem}", str(path), kind="file")


def _discover_benchmarks(reg: Registry) -> None:
    from cdm_bench.paths import recipes_dir

    for path in sorted((recipes_dir() / "benchmarks").glob("*.yaml")):
        reg.register(path.stem, str(path), kind="file")


METRICS = Registry("metric", "cdm_bench.metrics", _discover_metrics, base="cdm_bench.metric:Metric")
GENERATORS = Registry("generator", "cdm_bench.generators", _discover_generators,
                      base="cdm_bench.generator:Generator")
PROMPTS = Registry("prompt set", None, _discover_prompts)
RECIPES = Registry("recipe", None, _discover_recipes)

def _discover_sweeps(reg: Registry) -> None:
    from cdm_bench.paths import recipes_dir

    for path in sorted((recipes_dir() / "sweeps").glob("*.yaml")):
        reg.register(path.stem, str(path), kind="file")


BENCHMARKS = Registry("benchmark", None, _discover_benchmarks)
SWEEPS = Registry("sweep", None, _discover_sweeps)

REGISTRIES = {"metrics": METRICS, "generators": GENERATORS, "prompts": PROMPTS, "recipes": RECIPES,
              "benchmarks": BENCHMARKS, "sweeps": SWEEPS}
