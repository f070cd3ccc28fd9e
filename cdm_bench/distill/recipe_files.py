"""Recipe files: reading YAML (following ``base:``), deep-merging and dotted ``--set`` overrides.

The schema and its validation live in :mod:`cdm_bench.distill.config`.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from cdm_bench.errors import RecipeError, RunNotFoundError, SpecError
from cdm_bench.specfile import load_mapping, parse_yaml


def resolve_raw(name_or_path: str | Path | dict, _seen: tuple = ()) -> dict:
    """Read the YAML (following ``base:``) into one merged dict."""
    if isinstance(name_or_path, dict):
        raw, here = copy.deepcopy(name_or_path), None
    else:
        path = _recipe_path(name_or_path)
        if path in _seen:
            raise RecipeError(f"recipe 'base' cycle: {' -> '.join(map(str, _seen + (path,)))}")
        try:
            raw = load_mapping(path, "recipe")
        except SpecError as exc:
            raise RecipeError(str(exc)) from None
        if "distributed_type" in raw:
            raise RecipeError(f"{path} is an accelerate launcher config, not a training recipe: "
                              f"accelerate launch --config_file {path} -m cdm_bench.cli.train RECIPE")
        raw.setdefault("name", path.stem)
        here, _seen = path, _seen + (path,)
    base = raw.pop("base", None)
    if base is None:
        return raw
    if here is not None and not str(base).endswith((".yaml", ".yml")):
        sibling = here.parent / f"{base}.yaml"
        base = sibling if sibling.is_file() else base
    return deep_merge(resolve_raw(base, _seen), raw)


def _recipe_path(name_or_path: str | Path) -> Path:
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        if not path.is_file():
            raise RunNotFoundError(f"recipe file not found: {path}")
        return path
    from cdm_bench.registry import RECIPES
    return RECIPES.get(str(name_or_path))


def deep_merge(base: dict, top: dict) -> dict:
    """``top`` over ``base``; a ``None`` value in ``top`` deletes the key; a mapping whose
    ``kind``/``type`` differs from the base's replaces it instead of merging into it."""
    out = copy.deepcopy(base)
    for key, value in top.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict) and not _kind_changes(out[key], value):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _kind_changes(base: dict, top: dict) -> bool:
    return any(k in top and top[k] != base.get(k, top[k]) for k in ("kind", "type"))


def apply_overrides(raw: dict, overrides: dict | list) -> dict:
    """``["train.steps=10", ...]`` or ``{"train.steps": 10}``; CLI strings are YAML-parsed."""
    raw = copy.deepcopy(raw)
    items = list(overrides.items()) if isinstance(overrides, dict) else [_split_override(o) for o in overrides]
    items = copy.deepcopy(items)  # a later dotted override must not edit the caller's mapping
    for dotted, value in items:
        keys = dotted.split(".")
        node = raw
        for i, key in enumerate(keys[:-1]):
            nxt = node.setdefault(key, {})
            if not isinstance(nxt, dict):
                raise RecipeError(f"override {dotted!r}: '{'.'.join(keys[:i + 1])}' is not a section")
            node = nxt
        if value is None:
            node.pop(keys[-1], None)
            continue
        if keys[-1] in ("kind", "type") and node.get(keys[-1], value) != value:
            node.clear()  # another kind of schedule / loss: its section starts afresh
        if isinstance(value, dict) and isinstance(node.get(keys[-1]), dict):
            value = deep_merge(node[keys[-1]], value)  # a mapping updates the section
        node[keys[-1]] = value
    return raw


def _split_override(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise RecipeError(f"override {text!r} must look like key.path=value")
    key, _, value = text.partition("=")
    try:
        return key.strip(), parse_yaml(value, f"override {key.strip()!r}")
    except SpecError as exc:
        raise RecipeError(str(exc)) from None
