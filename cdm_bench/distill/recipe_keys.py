"""Recipe keys: the message for an unknown key (it names the key, where it belongs, or the closest
allowed key), from the schema's list of valid key paths (:func:`cdm_bench.distill.config.known_paths`).
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from typing import Any

from cdm_bench.errors import RecipeError


def optional_dataclass(typ: Any) -> Any:
    """``X | None`` with a dataclass ``X`` -> ``X``; a dataclass -> itself; else None."""
    if dataclasses.is_dataclass(typ):
        return typ
    args = [a for a in typing.get_args(typ) if a is not type(None)]
    if type(None) in typing.get_args(typ) and len(args) == 1 and dataclasses.is_dataclass(args[0]):
        return args[0]
    return None


def check_keys(data: dict, allowed: tuple, where: tuple, known_paths) -> None:
    """Refuse a key not in ``allowed``; ``known_paths()`` lists every valid key path of the schema
    (with a note), so the message can say where the key belongs."""
    for key in data:
        if key not in allowed:
            raise RecipeError(_unknown_key_message(str(key), allowed, where, known_paths()))


def _unknown_key_message(key: str, allowed: tuple, where: tuple, known: list) -> str:
    place = f"under '{dotted(where)}'" if where else "at the top level"
    msg = f"unknown recipe key '{key}' {place}"
    matches = [(p[:-1], note) for p, note in known if p[-1] == key]
    homes = sorted({dotted(parent) or "the top level" for parent, _ in matches if parent != where})
    notes = sorted({note for _, note in matches if note})
    if homes:
        msg += f"; it belongs under {' or '.join(repr(h) for h in homes)}"
        msg += f" ({'; '.join(notes)})" if notes else ""
    elif notes:
        msg += f"; it is {' / '.join(notes)}, not of the one configured here"
    else:
        close = difflib.get_close_matches(key, list(allowed), n=3, cutoff=0.6)
        if close:
            msg += f"; did you mean {' or '.join(repr(c) for c in close)}"
    return msg + f" (allowed here: {', '.join(allowed)})"


def dataclass_paths(cls: type) -> list[tuple]:
    out = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        out.append((f.name,))
        sub = optional_dataclass(hints[f.name])
        if sub is not None:
            out += [(f.name,) + p for p in dataclass_paths(sub)]
    return out


def dotted(where: tuple) -> str:
    return ".".join(where)
