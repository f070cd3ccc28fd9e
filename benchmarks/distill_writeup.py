"""Regenerate the tables of the world benchmark's write-up from the result files.

`benchmarks/results/distill_world.md` is prose plus tables; the tables sit between markers and are
rebuilt from the frontier CSV (`distill_frontier.py`) and the diagnosis table
(`distill_diagnose.py`), so the numbers in the write-up are always the recorded ones:

    <!-- frontier nfe=4 -->   ... the frontier at that NFE (students, teacher@nfe, teacher@50 CFG)
    <!-- /frontier -->
    <!-- diagnosis nfe=4 -->  ... the diagnosis rows for real renders, the teacher at 50 steps
    <!-- /diagnosis -->           and at that NFE, and every run at that NFE

    python benchmarks/distill_writeup.py                      # rewrites distill_world.md in place
    python benchmarks/distill_writeup.py --check               # exit 1 if a table is out of date
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import pandas as pd

RESULTS = Path(__file__).resolve().parent / "results"
BLOCK = re.compile(r"(<!-- (frontier|diagnosis) nfe=(\d+) -->\n)(.*?)(<!-- /\2 -->)", re.S)
FRONTIER_HEAD = ("| method | guidance | seeds | toy_fid ↓ | 95% CI | toy_align ↑ | 95% CI |\n"
                 "|---|---|---|---|---|---|---|\n")


def _g(x: float) -> str:
    return f"{x:g}"


def frontier_table(pts: pd.DataFrame, nfe: int) -> str:
    """The frontier rows at `nfe`: the teacher at that NFE, every student point, the teacher@50 curve."""
    rows = []
    here = pts[pts.nfe == nfe]
    ref = pts[pts.method == "teacher@50"]
    for _, p in pd.concat([here[here.method == "teacher"], here[here.method != "teacher"], ref]).iterrows():
        if p.method == "teacher":
            name = f"teacher@{nfe} (no CFG)" if p.guidance == 1 else f"teacher@{nfe}, CFG"
        elif p.method == "teacher@50":
            name = "teacher@50, CFG"
        else:
            name = p.method
        rows.append(f"| {name} | {_g(p.guidance)} | {int(p.seeds)} | {p.toy_fid:.2f} | "
                    f"[{p.fid_lo:.2f}, {p.fid_hi:.2f}] | {p.toy_align:.3f} | "
                    f"[{p.align_lo:.3f}, {p.align_hi:.3f}] |")
    return FRONTIER_HEAD + "\n".join(rows) + "\n"


def diagnosis_table(md: str, nfe: int) -> str:
    """The diagnosis table's header, its reference rows (real, teacher@50, teacher@nfe) and runs @nfe."""
    lines = [ln for ln in md.splitlines() if ln.startswith("|")]
    if len(lines) < 3:
        raise SystemExit("the diagnosis file has no table")
    keep = lines[:2]
    for ln in lines[2:]:
        label = ln.split("|")[1].strip()
        teacher = re.match(r"teacher@(\d+) ", label)
        run = re.search(r"@(\d+)$", label)
        if teacher:
            ok = int(teacher.group(1)) in (50, nfe)
        elif run:
            ok = int(run.group(1)) == nfe
        else:
            ok = True
        if ok:
            keep.append(ln)
    return "\n".join(keep) + "\n"


def fill(text: str, pts: pd.DataFrame, diagnosis_md: str | None) -> str:
    """`text` with every marked block rebuilt; a diagnosis block needs `diagnosis_md`."""
    def block(m: re.Match) -> str:
        kind, nfe = m.group(2), int(m.group(3))
        if kind == "frontier":
            body = frontier_table(pts, nfe)
        else:
            if diagnosis_md is None:
                raise SystemExit("a diagnosis block needs --diagnosis")
            body = diagnosis_table(diagnosis_md, nfe)
        return m.group(1) + body + "\n" + m.group(5)  # a blank line ends the table
    return BLOCK.sub(block, text)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--doc", type=Path, default=RESULTS / "distill_world.md")
    ap.add_argument("--frontier", type=Path, default=RESULTS / "distill_world_frontier.csv")
    ap.add_argument("--diagnosis", type=Path, default=RESULTS / "distill_world_diagnosis.md")
    ap.add_argument("--check", action="store_true", help="only report whether the tables are current")
    args = ap.parse_args(argv)
    text = args.doc.read_text()
    if not BLOCK.search(text):
        raise SystemExit(f"{args.doc}: no <!-- frontier nfe=N --> or <!-- diagnosis nfe=N --> block")
    diag = args.diagnosis.read_text() if args.diagnosis.exists() else None
    new = fill(text, pd.read_csv(args.frontier), diag)
    if args.check:
        print("current" if new == text else f"{args.doc}: tables out of date")
        return 0 if new == text else 1
    args.doc.write_text(new)
    print(f"wrote {args.doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
