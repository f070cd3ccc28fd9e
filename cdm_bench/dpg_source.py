"""The DPG-Bench prompt source (``source: {type: dpg, path: dpg_bench.csv, sha256: ...}``).

ELLA's ``dpg_bench.csv`` has one row per question, columns ``item_id, text, keywords,
proposition_id, dependency, category_broad, category_detailed, tuple,
question_natural_language``; ``dependency`` lists the parent ``proposition_id``s (``0`` = none,
several comma-separated). Rows are grouped by ``item_id`` (in order of first appearance) into
one prompt row each::

    {"id": item_id, "prompt": text,
     "questions": [{"id": 1, "parents": [], "question": "Is there a cat?",
                    "category_broad": "entity", "category_detailed": "whole",
                    "tuple": "entity - whole (cat)"}, ...]}

Questions keep the file's order (the order in which the reference code zeroes children). The
file is checked, not patched: a missing column, a prompt whose ``text`` differs between its
rows, a repeated ``proposition_id``, a bad ``dependency`` or a parent that is not a question of
the same prompt is a one-line :class:`~cdm_bench.errors.SpecError`.

Unlike ELLA's ``compute_dpg_bench.py``, the first question of the file is kept (the reference
skips data row 0 with ``if i == 0: continue``, which drops that prompt's question 1 and, through
the ``KeyError`` of its children, the whole prompt).
"""

from __future__ import annotations

from pathlib import Path

from cdm_bench.errors import SpecError
from cdm_bench.prompts import PromptSource, data_file

DPG_COLUMNS = ("item_id", "text", "keywords", "proposition_id", "dependency", "category_broad",
               "category_detailed", "tuple", "question_natural_language")


class DPGBenchSource(PromptSource):
    """ELLA's DPG-Bench CSV, a local file (``path`` relative to the spec, ``sha256`` pins it)."""

    keys = frozenset({"path", "sha256"})

    def load(self, source, *, name, count, spec_path):
        return read_dpg_csv(data_file(source, name, spec_path))


def read_dpg_csv(path: Path) -> list[dict]:
    """ELLA's CSV -> prompt rows with their question graphs (see the module docstring)."""
    from cdm_bench.prompts import read_table, read_text

    frame = read_table(read_text(path), path)
    missing = [c for c in DPG_COLUMNS if c not in frame.columns]
    if missing:
        raise SpecError(f"{path}: not ELLA's DPG-Bench CSV: missing column(s) {missing} "
                        f"(found {list(frame.columns)})")
    rows: dict[str, dict] = {}
    for line, rec in enumerate(frame.to_dict("records"), start=2):  # line 1 is the header
        item = rec["item_id"].strip()
        if not item:
            raise SpecError(f"{path}:{line}: empty item_id")
        row = rows.setdefault(item, {"id": item, "prompt": rec["text"], "questions": []})
        if rec["text"] != row["prompt"]:
            raise SpecError(f"{path}:{line}: item {item!r} has two different texts")
        row["questions"].append(_question(rec, path, line))
    for row in rows.values():
        _check_graph(row, path)
    return list(rows.values())


def _int(value: str, what: str, path: Path, line: int) -> int:
    try:
        return int(str(value).strip())
    except ValueError:
        raise SpecError(f"{path}:{line}: {what} {value!r} is not an integer") from None


def _question(rec: dict, path: Path, line: int) -> dict:
    deps = [_int(d, "dependency", path, line) for d in str(rec["dependency"]).split(",")]
    return {"id": _int(rec["proposition_id"], "proposition_id", path, line),
            "parents": [d for d in deps if d != 0],
            "question": rec["question_natural_language"],
            "category_broad": rec["category_broad"], "category_detailed": rec["category_detailed"],
            "tuple": rec["tuple"]}


def _check_graph(row: dict, path: Path) -> None:
    ids = [q["id"] for q in row["questions"]]
    if len(set(ids)) != len(ids):
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        raise SpecError(f"{path}: item {row['id']!r} repeats proposition_id(s) {dupes}")
    for q in row["questions"]:
        unknown = [p for p in q["parents"] if p not in ids or p == q["id"]]
        if unknown:
            raise SpecError(f"{path}: item {row['id']!r} question {q['id']} depends on {unknown}, "
                            f"which are not other questions of that item")
