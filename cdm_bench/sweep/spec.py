"""Sweep specs: recipes x a grid of recipe overrides x seeds, one training run ("cell") each.

    name: world
    out: runs/sweeps/world         # default --out
    steps: 1000                    # train.steps of every cell
    seeds: [0]                     # default seeds of every entry
    threads: 1                     # CPU threads per cell (OMP/MKL and torch)
    set: {model.teacher: bench}    # overrides of every cell
    validate: {every: 200, ...}    # the validation block of every cell (the report's data)
    cells:
      - recipe: world/cdm          # a recipe name or YAML path
        label: cdm                 # the method's name in the report (default: the recipe's stem)
        grid: {losses.ca.guidance: [4, 7, 10]}   # any recipe key: one cell per combination
        seeds: [0, 1, 2]
        set: {train.batch_size: 64}              # fixed overrides of this entry
        nproc: 2                   # processes per cell (torchrun; FSDP2)
    reference:                     # generators scored like the cells (e.g. the teacher's CFG curve)
      - label: teacher
        generator: {generator: toy, preset: bench}
        grid: {nfe: [50], guidance: [1, 1.5, 3]}
        seeds: [0, 1, 2]           # sampling-noise sets (generate's base seed)
    report: {x: toy_align, y: toy_fid, last: 3, model: ema, require_seeds: 3}   # allow_mixed_teachers: false
    executor: local                # or slurm (submitit); slurm: {partition: ..., timeout_min: ...}

A cell's folder is named from its label, its grid values and its seed, so adding a value or a
seed adds cells and leaves the others' folders (and their results) as they are. Unknown keys
are errors, as in recipes.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path

from cdm_bench.errors import SpecError
from cdm_bench.safenames import safe_name

TOP_KEYS = {"name", "description", "out", "steps", "seeds", "threads", "set", "validate", "cells", "reference",
            "report", "executor", "slurm"}
CELL_KEYS = {"recipe", "label", "grid", "seeds", "set", "nproc", "steps"}
REFERENCE_KEYS = {"label", "generator", "grid", "seeds"}
REPORT_KEYS = {"x", "y", "last", "model", "require_seeds", "boot", "allow_mixed_teachers"}
EXECUTORS = ("local", "slurm")


@dataclass(frozen=True)
class Cell:
    """One training run of a sweep."""

    name: str
    label: str
    recipe: str
    grid: tuple  # ((key, value), ...): the swept overrides, in the spec's order
    fixed: tuple  # ((key, value), ...): the spec's and the entry's fixed overrides
    seed: int
    steps: int
    nproc: int = 1

    def overrides(self, validate: dict | None) -> list[str]:
        """``--set`` arguments of ``cdm-bench train`` (values as YAML flow text)."""
        import yaml

        items = [*self.fixed, *self.grid, ("train.seed", self.seed), ("train.steps", self.steps)]
        if validate is not None:
            items.append(("validate", validate))
        return [f"{k}={yaml.safe_dump(v, default_flow_style=True, width=10**6).strip()}"
                .removesuffix("\n...") for k, v in items]

    @property
    def setting(self) -> str:
        """The swept values as ``key=value`` pairs (the report's x-axis of a method)."""
        return ",".join(f"{short_key(k)}={fmt(v)}" for k, v in self.grid) or "-"


@dataclass(frozen=True)
class ReferencePoint:
    """One generator of a reference curve, scored at one sampling-noise seed."""

    name: str
    label: str
    generator: dict
    grid: tuple
    seed: int

    @property
    def setting(self) -> str:
        return ",".join(f"{k}={fmt(v)}" for k, v in self.grid) or "-"


@dataclass
class SweepSpec:
    name: str
    cells: list
    reference: list = field(default_factory=list)
    validate: dict | None = None
    description: str = ""
    out: str | None = None
    threads: int = 1
    report: dict = field(default_factory=dict)
    executor: str = "local"
    slurm: dict = field(default_factory=dict)
    path: Path | None = None

    @classmethod
    def from_yaml(cls, path) -> "SweepSpec":
        from cdm_bench.specfile import load_mapping

        spec = cls.from_dict(load_mapping(path, "sweep spec"), where=f"sweep spec {path}")
        spec.path = Path(path)
        return spec

    @classmethod
    def from_dict(cls, raw: dict, where: str = "sweep spec") -> "SweepSpec":
        _known(raw, TOP_KEYS, where)
        name = safe_name(raw.get("name"), f"{where}: name")
        steps = _int(raw.get("steps", 1000), f"{where}: steps", 1)
        seeds = _seeds(raw.get("seeds", [0]), f"{where}: seeds")
        fixed = _overrides(raw.get("set") or {}, f"{where}: set")
        entries = raw.get("cells")
        if not isinstance(entries, list) or not entries:
            raise SpecError(f"{where}: 'cells' must list at least one {{recipe, grid, seeds}} entry")
        cells = _unique([c for i, e in enumerate(entries) for c in _cells(e, steps, seeds, fixed, f"{where}: cells[{i}]")],
                        where)
        refs = raw.get("reference") or []
        if not isinstance(refs, list):
            raise SpecError(f"{where}: 'reference' must be a list of {{label, generator, grid, seeds}}")
        reference = _unique([p for i, e in enumerate(refs) for p in _reference(e, f"{where}: reference[{i}]")], where)
        validate = raw.get("validate")
        if validate is not None and not isinstance(validate, dict):
            raise SpecError(f"{where}: 'validate' must be a recipe's validate block (a mapping)")
        if validate is not None:
            from cdm_bench.distill.config import parse_dataclass
            from cdm_bench.distill.validate_config import ValidateConfig

            parse_dataclass(ValidateConfig, validate, ("validate",))  # a recipe's own checks and messages
        report = raw.get("report") or {}
        _known(report, REPORT_KEYS, f"{where}: report")
        executor = raw.get("executor", "local")
        if executor not in EXECUTORS:
            raise SpecError(f"{where}: executor must be one of {list(EXECUTORS)}, got {executor!r}")
        slurm = raw.get("slurm") or {}
        if not isinstance(slurm, dict):
            raise SpecError(f"{where}: 'slurm' must map submitit's parameters to values")
        return cls(name=name, cells=cells, reference=reference, validate=validate,
                   description=str(raw.get("description", "")), out=raw.get("out"),
                   threads=_int(raw.get("threads", 1), f"{where}: threads", 1), report=report,
                   executor=executor, slurm=slurm)


def short_key(key: str) -> str:
    """``losses.ca.guidance`` -> ``ca.guidance`` (a recipe's sections are implied)."""
    return key.removeprefix("losses.")


def fmt(value) -> str:
    """A value as folder names show it: ``%g`` where that reads back as the same float, else the
    shortest repr (two distinct values never share a name)."""
    if isinstance(value, float):
        short = f"{value:g}"
        return short if float(short) == value else repr(value)
    return str(value)


def _known(raw, keys: set, where: str) -> None:
    from cdm_bench.validate import known_keys

    known_keys(raw, keys, where)


def _int(value, what: str, lo: int) -> int:
    from cdm_bench.validate import int_in_range

    return int_in_range(value, what, lo, 10**9)


def _seeds(value, what: str) -> list[int]:
    if not isinstance(value, list) or not value:
        raise SpecError(f"{what} must be a non-empty list of integers, got {value!r}")
    seeds = [_int(s, what, 0) for s in value]
    if len(set(seeds)) != len(seeds):
        raise SpecError(f"{what} lists a seed twice: {value!r}")
    return seeds


def _overrides(value, what: str) -> tuple:
    if not isinstance(value, dict):
        raise SpecError(f"{what} must map recipe keys (e.g. losses.ca.guidance) to values")
    for key in value:
        if not isinstance(key, str) or not key or any(not part for part in key.split(".")):
            raise SpecError(f"{what}: {key!r} is not a dotted recipe key")
        if key in ("train.seed", "train.steps", "validate"):
            raise SpecError(f"{what}: {key} is set by the sweep (its 'seeds', 'steps' and 'validate' keys)")
    return tuple(value.items())


def _grid(value, what: str) -> list[tuple]:
    items = _overrides(value or {}, what)
    for key, values in items:
        if not isinstance(values, list) or not values or len({_same(v) for v in values}) != len(values):
            raise SpecError(f"{what}: {key} must list distinct values, got {values!r}")
    keys = [k for k, _ in items]
    return [tuple(zip(keys, combo)) for combo in itertools.product(*[v for _, v in items])]


def _same(value):
    """What makes two grid values one value: a number by its value (99, 99.0 and 99.000 are one
    setting), anything else by its repr. Distinct values also get distinct names (:func:`fmt`)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value) if value == value else "nan"
    return repr(value)


def _name_part(key: str, value) -> str:
    return f"{short_key(key)}_{fmt(value)}"


def _cells(entry, steps: int, seeds: list[int], fixed: tuple, where: str) -> list[Cell]:
    _known(entry, CELL_KEYS, where)
    recipe = entry.get("recipe")
    if not isinstance(recipe, str) or not recipe:
        raise SpecError(f"{where}: 'recipe' must name a recipe or a YAML path")
    label = safe_name(entry.get("label", Path(recipe).stem), f"{where}: label")
    mine = fixed + _overrides(entry.get("set") or {}, f"{where}: set")
    nproc = _int(entry.get("nproc", 1), f"{where}: nproc", 1)
    cell_steps = _int(entry.get("steps", steps), f"{where}: steps", 1)
    out = []
    for grid in _grid(entry.get("grid"), f"{where}: grid"):
        for seed in _seeds(entry.get("seeds", seeds), f"{where}: seeds"):
            parts = [label, *(_name_part(k, v) for k, v in grid), f"seed_{seed}"]
            name = safe_name("-".join(parts), f"{where}: cell name")
            out.append(Cell(name, label, recipe, grid, mine, seed, cell_steps, nproc))
    return out


def _reference(entry, where: str) -> list[ReferencePoint]:
    _known(entry, REFERENCE_KEYS, where)
    label = safe_name(entry.get("label", "reference"), f"{where}: label")
    gen = entry.get("generator")
    if not isinstance(gen, dict) or "generator" not in gen:
        raise SpecError(f"{where}: 'generator' must be a generator spec (a mapping with 'generator: NAME')")
    out = []
    for grid in _grid(entry.get("grid"), f"{where}: grid"):
        for seed in _seeds(entry.get("seeds", [0]), f"{where}: seeds"):
            name = safe_name("-".join([label, *(f"{k}_{fmt(v)}" for k, v in grid), f"seed_{seed}"]),
                             f"{where}: reference name")
            out.append(ReferencePoint(name, label, {**gen, **dict(grid)}, grid, seed))
    return out


def _unique(items: list, where: str) -> list:
    """Entries may repeat a cell (e.g. a method's curve and its extra seeds): kept once; two
    different cells with one name are an error."""
    seen: dict = {}
    for item in items:
        if item.name in seen and seen[item.name] != item:
            raise SpecError(f"{where}: two different entries make the folder {item.name!r}; give one a 'label'")
        seen.setdefault(item.name, item)
    return list(seen.values())
