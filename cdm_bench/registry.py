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


class UnknownNameError(KeyError):
    """An unknown registry name; the message carries "did you mean" suggestions."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0])


@dataclass
class Entry:
    name: str
    target: Any  # an object, or a "module:attr" string resolved on first use
    meta: dict = field(default_factory=dict)

    @property
    def is_loaded(self) -> bool:
        return not isinstance(self.target, str)

    def load(self) -> Any:
        if self.meta.get("kind") == "file":  # declarative assets (prompt sets, recipes)
            return Path(self.target)
        if isinstance(self.target, str):
            module, _, attr = self.target.partition(":")
            obj = importlib.import_module(module)
            for part in attr.split(".") if attr else []:
                obj = getattr(obj, part)
            self.target = obj
        return self.target

    def describe(self) -> str:
        if isinstance(self.target, str):
            return self.target
        mod = getattr(self.target, "__module__", "")
        return f"{mod}:{getattr(self.target, '__qualname__', repr(self.target))}"


class Registry:
    """A name -> object table with lazy targets, entry points and helpful errors."""

    def __init__(self, kind: str, entry_point_group: str | None = None,
                 discover: Callable[["Registry"], None] | None = None):
        self.kind = kind
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
        self._entries[name] = Entry(name, target, dict(meta))
        return target

    def _ensure_discovered(self) -> None:
        if self._discovered:
            return
        self._discovered = True
        if self._discover is not None:
            self._discover(self)
        if self.entry_point_group:
            for ep in entry_points(group=self.entry_point_group):
                if ep.name not in self._entries:
                    self._entries[ep.name] = Entry(ep.name, ep.value, {"source": "entry point"})

    # -- lookup -------------------------------------------------------------------------
    def names(self) -> list[str]:
        self._ensure_discovered()
        return sorted(self._entries)

    def entry(self, name: str) -> Entry:
        """The entry for ``name``; an unregistered ``"module:Class"`` path is accepted too."""
        self._ensure_discovered()
        if name not in self._entries and ":" in name:
            return Entry(name, name)
        if name not in self._entries:
            raise UnknownNameError(self._unknown_message(name))
        return self._entries[name]

    def get(self, name: str) -> Any:
        return self.entry(name).load()

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
    from cdm_bench.prompts import discover_prompt_sets

    for name, path in discover_prompt_sets().items():
        reg.register(name, str(path), kind="file")


def _discover_recipes(reg: Registry) -> None:
    from cdm_bench.paths import recipes_dir

    for path in sorted(recipes_dir().glob("*.yaml")):
        if path.stem.startswith("accelerate_"):  # launcher configs, not training recipes
            continue
        reg.register(path.stem, str(path), kind="file")


METRICS = Registry("metric", "cdm_bench.metrics", _discover_metrics)
GENERATORS = Registry("generator", "cdm_bench.generators", _discover_generators)
PROMPTS = Registry("prompt set", None, _discover_prompts)
RECIPES = Registry("recipe", None, _discover_recipes)

REGISTRIES = {"metrics": METRICS, "generators": GENERATORS, "prompts": PROMPTS, "recipes": RECIPES}
