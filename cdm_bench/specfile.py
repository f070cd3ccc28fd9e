"""The one reader of YAML specs and JSON option strings a user passes in.

Generator, benchmark, prompt-set and recipe specs and ``--set`` values are read with
:func:`load_yaml` / :func:`parse_yaml`: PyYAML's safe loader, bounded so that a hostile or
broken file fails in one line instead of exhausting memory or the stack — at most
:data:`MAX_ALIASES` aliases, :data:`MAX_DEPTH` levels of nesting and :data:`MAX_NODES` nodes
once aliases are expanded (a "billion laughs" file is refused before it is built), and files of
at most :data:`MAX_BYTES`. ``--metric-options`` and other JSON strings go through
:func:`parse_json` with the same depth and size bounds. Every error is a :class:`SpecError`.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from cdm_bench.errors import SpecError

MAX_ALIASES = 64
MAX_DEPTH = 48
MAX_NODES = 200_000
MAX_BYTES = 8 << 20


class _Bounded(yaml.SafeLoader):
    """SafeLoader that counts aliases and nesting while it composes the node graph."""

    def __init__(self, stream):
        super().__init__(stream)
        self._aliases = 0
        self._depth = 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                raise _TooBig(f"more than {MAX_ALIASES} aliases")
            return super().compose_node(parent, index)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _TooBig(f"nested deeper than {MAX_DEPTH} levels")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


class _TooBig(Exception):
    pass


def _expanded_size(node, memo: dict) -> int:
    """Nodes of the document with every alias expanded (shared nodes counted each time)."""
    key = id(node)
    if key in memo:
        return memo[key]
    memo[key] = MAX_NODES + 1  # a cycle (a recursive alias) expands without end
    if isinstance(node, yaml.SequenceNode):
        size = 1 + sum(_expanded_size(n, memo) for n in node.value)
    elif isinstance(node, yaml.MappingNode):
        size = 1 + sum(_expanded_size(k, memo) + _expanded_size(v, memo) for k, v in node.value)
    else:
        size = 1
    memo[key] = min(size, MAX_NODES + 1)
    return memo[key]


def parse_yaml(text: str, where: str):
    """The value of a YAML document (``where`` names it in errors)."""
    if len(text) > MAX_BYTES:
        raise SpecError(f"{where}: {len(text)} bytes; a spec may hold at most {MAX_BYTES}")
    loader = None
    try:
        loader = _Bounded(text)
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_size(node, {}) > MAX_NODES:
            raise _TooBig(f"more than {MAX_NODES} values once its aliases are expanded")
        return loader.construct_document(node)
    except _TooBig as exc:
        raise SpecError(f"{where}: refused, {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SpecError(f"{where}: not valid YAML{at}: {problem}") from None
    except RecursionError:
        raise SpecError(f"{where}: refused, nested too deeply") from None
    finally:
        if loader is not None:
            loader.dispose()


def load_yaml(path, what: str = "spec"):
    """The value of a YAML file (UTF-8, a BOM allowed)."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_BYTES:
            raise SpecError(f"{what} {path}: {path.stat().st_size} bytes; a spec may hold at most {MAX_BYTES}")
        data = path.read_bytes()
    except FileNotFoundError:
        raise SpecError(f"{what} not found: {path}") from None
    except IsADirectoryError:
        raise SpecError(f"{what} {path} is a folder, not a YAML file") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SpecError(f"{what} {path}: not UTF-8 text (byte {exc.start})") from None
    return parse_yaml(text, f"{what} {path}")


def load_mapping(path, what: str = "spec") -> dict:
    """A YAML file that must hold a mapping (an empty file is an empty mapping)."""
    data = load_yaml(path, what)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SpecError(f"{what} {path} must be a mapping of keys to values, got a {type(data).__name__}")
    return data


def parse_json(text: str, what: str):
    """A JSON string's value, bounded like a YAML spec."""
    if len(text) > MAX_BYTES:
        raise SpecError(f"{what}: {len(text)} bytes; at most {MAX_BYTES}")
    depth = level = 0
    in_str = escaped = False
    for ch in text:  # nesting measured before parsing (the decoder recurses)
        if escaped:
            escaped = False
        elif in_str:
            escaped, in_str = ch == "\\", ch != '"'
        elif ch == '"':
            in_str = True
        elif ch in "[{":
            level += 1
            depth = max(depth, level)
        elif ch in "]}":
            level -= 1
    if depth > MAX_DEPTH:
        raise SpecError(f"{what}: refused, nested deeper than {MAX_DEPTH} levels")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise SpecError(f"{what} is not valid JSON ({exc.msg} at char {exc.pos})") from None
