"""Run-directory records and identities: JSON lines (appended, repaired, read), the checks a
record passes, the generation identity and the image-set hash. :mod:`cdm_bench.rundir` owns the
file names and re-exports these."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from cdm_bench.errors import EvaluationInputError

SHA256_RE = re.compile(r"[0-9a-f]{64}")
IMAGES = "images"


def image_name(prompt_id: str, k: int) -> str:
    """The manifest's ``file`` value of sample ``k`` of a prompt (relative to the run)."""
    return f"{IMAGES}/{prompt_id}_{k}.png"


def append_record(fh, record: dict) -> None:
    """Append one JSON line to an open part file (a cut line is repaired on the next start)."""
    fh.write(json.dumps(record) + "\n")


def repair_jsonl(path: Path) -> None:
    """Cut a partial last line (a crash or a full disk mid-append) so appends start clean."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) == b"\n":
            return
        f.seek(0)
        data = f.read()
        f.truncate(data.rfind(b"\n") + 1)


def read_jsonl(path: Path) -> list[dict]:
    """Records of a JSON-lines file; a cut last line (a crash mid-append) is dropped. A line that
    is not a JSON object is a one-line error naming the file and line."""
    if not path.exists():
        return []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise EvaluationInputError(f"{path}: not UTF-8 (byte {exc.start}): not a file cdm-bench wrote") from None
    out = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            if i == len(lines) - 1:  # the append that was cut short: its image is re-done
                break
            raise EvaluationInputError(f"{path}:{i + 1}: not a JSON line (corrupt or edited)") from None
        if not isinstance(rec, dict):
            raise EvaluationInputError(f"{path}:{i + 1}: a record must be a JSON object, got {type(rec).__name__}")
        out.append(rec)
    return out


def image_set_hash(records: list[dict]) -> str:
    import hashlib

    h = hashlib.sha256()
    for r in records:
        h.update(f"{r['prompt_id']}:{r['k']}:{r.get('sha256')}".encode())
    return h.hexdigest()


def generation_key(ident: dict) -> dict:
    """What makes two generations the same run (results belong to exactly one): the generator
    spec without its display-only keys (``spec_hash``), the seed and the prompt set's content.
    A new display name is the same run."""
    return {"spec_hash": ident.get("spec_hash"), "seed": ident.get("seed"),
            "prompts_sha256": (ident.get("prompt_set") or {}).get("sha256")}


def is_identity(obj) -> bool:
    """True for a generation identity cdm-bench wrote (a foreign ``generation.json`` is not)."""
    return (isinstance(obj, dict) and isinstance(obj.get("generator"), dict) and isinstance(obj.get("spec_hash"), str)
            and isinstance(obj.get("prompt_set"), dict) and "seed" in obj)


def check_record(rec: dict, where) -> None:
    """A manifest record as generate writes it: its file is ``images/<prompt id>_<k>.png`` (so no
    record can point outside the run), k a non-negative int, sha256 a full hex digest."""
    pid, k = rec.get("prompt_id"), rec.get("k")
    if not isinstance(pid, str) or not isinstance(k, int) or isinstance(k, bool) or k < 0:
        raise EvaluationInputError(f"{where}: a record without a valid prompt_id / k: {str(rec)[:120]}")
    if rec.get("file") != image_name(pid, k) or "/" in pid or "\\" in pid or ".." in pid:
        raise EvaluationInputError(f"{where}: record {pid!r}/{k} names file {rec.get('file')!r}, not "
                                   f"{image_name(pid, k)!r} (edited by hand?)")
    sha = rec.get("sha256")
    if sha is not None and not (isinstance(sha, str) and SHA256_RE.fullmatch(sha)):
        raise EvaluationInputError(f"{where}: record {pid!r}/{k} has a malformed sha256 {sha!r}")


def _read_json(path: Path, what: str, fix: str):
    """A JSON file cdm-bench wrote; unreadable -> one line naming the file and ``fix``."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (ValueError, RecursionError) as exc:
        raise EvaluationInputError(f"{path}: {what} is corrupt or truncated ({str(exc).splitlines()[0][:80]}); "
                                   f"{fix}") from None
