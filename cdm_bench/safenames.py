"""The one check for user strings that become file or folder names, and for output folders.

Every string a user controls that ends up as a path component passes through
:func:`safe_name`: prompt ids (``images/<id>_<k>.png``), metric instance names
(``scoring/<instance>-...``, score columns), generator display names and prompt-set keys
(``runs/<generator>/<set>@<version>/`` of a benchmark), benchmark and sweep names. It refuses
separators, ``..``, absolute paths, control characters, names too long to leave room for a
temporary suffix, and reserved names; the message is one line naming the value and the rule.

Output folders (``--out``) are paths, not names: :func:`check_out_dir` refuses one that is an
existing file (or lies under one) before anything is written.
"""

from __future__ import annotations

import re
from pathlib import Path

from cdm_bench.errors import SpecError

#: letters, digits and ``_ . - @ + :``; the first character a letter, a digit or ``_`` (so never
#: ``.``/``-`` first: no hidden files, nothing that reads as an option); no spaces
NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.@+:-]*")
#: NAME_MAX is 255 bytes; the longest suffix cdm-bench adds to a name is a temporary file's
#: ``.<name>.<pid>.<8 hex>.tmp`` around ``<name>_<k>.png`` (< 60 characters)
MAX_NAME = 160
#: names that are devices on Windows (with any extension): refused everywhere for portability
DEVICE_NAMES = frozenset({"con", "prn", "aux", "nul", *(f"com{i}" for i in range(10)), *(f"lpt{i}" for i in range(10))})
RULE = ("letters, digits and '_.-@+:', starting with a letter, digit or '_'; no spaces, no '/', no '\\', "
        f"no '..', at most {MAX_NAME} characters")


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def safe_name(value, what: str, reserved=()) -> str:
    """``value`` if it is safe as one path component, else a :class:`SpecError` (one line).

    ``reserved`` adds names of the caller's own (e.g. the score table's base columns)."""
    if not isinstance(value, str):
        raise SpecError(f"{what} must be a string, got {type(value).__name__} {_shown(value)}")
    if not value:
        raise SpecError(f"{what} is empty")
    if len(value) > MAX_NAME:
        raise SpecError(f"{what} {_shown(value)} is {len(value)} characters long; at most {MAX_NAME} "
                        f"(it becomes a file name)")
    if not NAME_RE.fullmatch(value) or ".." in value:
        raise SpecError(f"{what} {_shown(value)} is not safe as a file name ({RULE})")
    if value.split(".")[0].strip().lower() in DEVICE_NAMES or value in set(reserved):
        raise SpecError(f"{what} {_shown(value)} is a reserved name; choose another")
    return value


def check_out_dir(path, what: str = "--out") -> Path:
    """An output folder: a path whose existing part is a directory (created later, by the
    command that writes into it). Refuses empty paths, control characters, and a path that is
    (or lies under) an existing file."""
    if path is None or str(path) == "":
        raise SpecError(f"{what} is empty")
    text = str(path)
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise SpecError(f"{what} {_shown(text)} holds control characters")
    p = Path(text).expanduser()
    for part in [p, *p.parents]:
        if part.exists():
            if not part.is_dir():
                raise SpecError(f"{what} {text}: {part} is a file, not a folder; choose a folder")
            break
    return p
