"""Atomic writes: every file and folder cdm-bench writes appears whole or not at all.

A file is written under a unique temporary name beside its target (``.<name>.<pid>.<hex>.tmp``,
so two writers never share one) and renamed over it with ``os.replace``. A folder (a training
checkpoint, an export) is built under a unique temporary folder and swapped in with
:func:`replace_dir`: the old folder, if any, is first renamed aside, so at every moment one
complete version exists under the final name or its aside name, never a half-written one.
This module is the only writer of temporary names; :func:`is_temp_name` recognises them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from pathlib import Path

import numpy as np

_TEMP_RE = re.compile(r"\..+\.\d+\.[0-9a-f]{8}\.(tmp|old)")


def temp_path(path: Path, kind: str = "tmp") -> Path:
    """A unique sibling name for ``path`` (``kind`` 'tmp': being written; 'old': being replaced)."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.{kind}")


def is_temp_name(name: str) -> bool:
    """True for the temporary names this module makes (a killed writer may leave one)."""
    return bool(_TEMP_RE.fullmatch(name))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (unique temp name, then a rename)."""
    path = Path(path)
    tmp = temp_path(path)
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, default=json_default))


LEDGER = ".cdm-bench-files.json"


def write_owned(folder: Path, files: dict, what: str) -> dict[str, Path]:
    """Write ``files`` ({name: bytes or str}) into ``folder``, each atomically, refusing (before
    anything is written) to replace a file that cdm-bench did not write there: a ledger
    (:data:`LEDGER`) records the sha256 of every file written, and an existing file whose bytes
    are not the recorded ones (a user's file, or one edited since) is kept and reported."""
    import hashlib

    from cdm_bench.errors import RunConflictError

    def bytes_sha256(data: bytes) -> str:
        return hashlib.sha256(data).hexdigest()

    folder = Path(folder)
    ledger_path = folder / LEDGER
    try:
        ledger = json.loads(ledger_path.read_text()) if ledger_path.is_file() else {}
    except (OSError, ValueError):
        ledger = {}
    ledger = ledger if isinstance(ledger, dict) else {}
    for name in files:
        target = folder / name
        if target.exists() and (not target.is_file() or bytes_sha256(target.read_bytes()) != ledger.get(name)):
            raise RunConflictError(f"{target} exists and was not written by cdm-bench {what} (or was changed "
                                   f"since); move it away or choose another --out")
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, data in files.items():
        data = data.encode("utf-8") if isinstance(data, str) else data
        atomic_write_bytes(folder / name, data)
        ledger[name] = bytes_sha256(data)
        out[name] = folder / name
    atomic_write_text(ledger_path, json.dumps(ledger, indent=1, sort_keys=True))
    return out


def new_temp_dir(final: Path) -> Path:
    """An empty, uniquely named folder beside ``final`` to build its next version in."""
    tmp = temp_path(Path(final))
    tmp.mkdir(parents=True)
    return tmp


def replace_dir(tmp: Path, final: Path) -> None:
    """Move the complete folder ``tmp`` to ``final``, replacing an older ``final``: the old one
    is renamed aside first and deleted only after the new one is in place."""
    tmp, final = Path(tmp), Path(final)
    aside = None
    if final.exists():
        aside = temp_path(final, "old")
        os.replace(final, aside)
    try:
        os.replace(tmp, final)
    except BaseException:
        if aside is not None:
            os.replace(aside, final)
        raise
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)
