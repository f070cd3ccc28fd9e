"""benchmarks/distill_writeup.py: the write-up's marked tables are rebuilt from the result files."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import distill_writeup as writeup  # noqa: E402

COLS = ["method", "recipe", "guidance", "nfe", "seeds", "evals_per_seed", "steps",
        "toy_fid", "fid_lo", "fid_hi", "toy_align", "align_lo", "align_hi"]
PTS = pd.DataFrame([
    ["teacher", "teacher", 1.0, 4, 3, 1, 0, 15.5, 14.7, 16.9, 0.589, 0.57, 0.603],
    ["dmd", "dmd", 5.0, 4, 3, 3, 1000, 14.534, 14.03, 15.02, 0.8031, 0.794, 0.811],
    ["dmd", "dmd", 5.0, 2, 3, 3, 1000, 99.0, 98.0, 100.0, 0.5, 0.4, 0.6],
    ["teacher@50", "teacher", 1.5, 50, 3, 1, 0, 1.66, 1.28, 1.93, 0.798, 0.782, 0.812],
], columns=COLS)
DIAG = """| images | toy_fid | x |
|---|---|---|
| real renders | 0.31 | a |
| teacher@50 CFG 1.5 | 1.75 | b |
| teacher@4 CFG 1 | 15.0 | c |
| teacher@2 CFG 1 | 25.7 | d |
| dmd-g5-seed0@2 | 14.2 | e |
| dmd-g5-seed0@4 | 14.1 | f |

footer
"""
DOC = """# t
prose
<!-- frontier nfe=4 -->
| stale |
<!-- /frontier -->
more prose
<!-- diagnosis nfe=4 -->
| stale |
<!-- /diagnosis -->
end
"""


def test_frontier_block_has_teacher_students_and_reference_rows():
    out = writeup.fill(DOC, PTS, DIAG)
    table = out.split("<!-- frontier nfe=4 -->\n")[1].split("<!-- /frontier -->")[0]
    rows = [r for r in table.splitlines() if r.startswith("| ") and "---" not in r][1:]
    assert rows == ["| teacher@4 (no CFG) | 1 | 3 | 15.50 | [14.70, 16.90] | 0.589 | [0.570, 0.603] |",
                    "| dmd | 5 | 3 | 14.53 | [14.03, 15.02] | 0.803 | [0.794, 0.811] |",
                    "| teacher@50, CFG | 1.5 | 3 | 1.66 | [1.28, 1.93] | 0.798 | [0.782, 0.812] |"]
    assert table.endswith("|\n\n")  # a blank line ends the table before the closing marker
    assert out.startswith("# t\nprose\n") and "more prose" in out and out.endswith("end\n")


def test_diagnosis_block_keeps_reference_rows_and_runs_at_that_nfe():
    out = writeup.fill(DOC, PTS, DIAG)
    table = out.split("<!-- diagnosis nfe=4 -->\n")[1].split("<!-- /diagnosis -->")[0]
    labels = [r.split("|")[1].strip() for r in table.splitlines() if r.startswith("|")]
    assert labels == ["images", "---", "real renders", "teacher@50 CFG 1.5", "teacher@4 CFG 1",
                      "dmd-g5-seed0@4"]


def test_fill_is_idempotent_and_check_reports_stale(tmp_path):
    front = tmp_path / "f.csv"
    PTS.to_csv(front, index=False)
    diag = tmp_path / "d.md"
    diag.write_text(DIAG)
    doc = tmp_path / "doc.md"
    doc.write_text(DOC)
    args = ["--doc", str(doc), "--frontier", str(front), "--diagnosis", str(diag)]
    assert writeup.main(args + ["--check"]) == 1
    assert writeup.main(args) == 0
    first = doc.read_text()
    assert "stale" not in first
    assert writeup.main(args + ["--check"]) == 0
    writeup.main(args)
    assert doc.read_text() == first


def test_doc_without_markers_is_an_error(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text("no tables here\n")
    with pytest.raises(SystemExit, match="no <!-- frontier"):
        writeup.main(["--doc", str(doc), "--frontier", str(tmp_path / "missing.csv")])


def test_committed_write_up_tables_are_the_recorded_results():
    assert writeup.main(["--check"]) == 0, "run benchmarks/distill_writeup.py after the report"
