"""``cdm-bench sweep`` end to end at tiny size: two cells (a guidance grid) and a reference
point run and validate; a re-run skips them; a cell killed with SIGKILL resumes to the same
validation numbers; submitit's local executor gives the same results; --dry-run and --report."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "distill"))
from distill_helpers import TINY_MODEL  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
METRICS = [{"name": "toy_fid", "scorer": "tiny"}, {"name": "toy_align", "scorer": "tiny"},
           {"name": "toy_diag", "scorer": "tiny"}]
CELLS = ["dmd-dmd2.real_guidance_1-seed_0", "dmd-dmd2.real_guidance_2-seed_0"]


def spec_file(folder: Path, steps: int = 3) -> Path:
    spec = {"name": "tiny", "steps": steps, "threads": 1,
            "set": {"model.teacher": "random", "model.model_config": TINY_MODEL, "train.batch_size": 2,
                    "train.progress": False, "train.checkpoint_every": 1, "train.keep_checkpoints": 0},
            "validate": {"every": 1, "prompts": "toy-small", "limit": 4, "samples_per_prompt": 2, "nfe": [1, 2],
                         "metrics": METRICS, "chunk_size": 4, "bootstrap": 20},
            "cells": [{"recipe": "dmd", "grid": {"losses.dmd2.real_guidance": [1.0, 2.0]}}],
            "reference": [{"label": "teacher", "generator": {"generator": "toy", "preset": "tiny"},
                           "grid": {"nfe": [2], "guidance": [1.0]}, "seeds": [0]}],
            "report": {"x": "toy_align", "y": "toy_fid", "last": 2, "require_seeds": 2, "boot": 200}}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def sweep(*args, check=True, **kw):
    proc = subprocess.run([sys.executable, "-m", "cdm_bench", "sweep", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, **kw)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    """A finished sweep (--jobs 2) and its spec."""
    from cdm_bench.toy.artifacts import get_scorer

    base = tmp_path_factory.mktemp("sweep")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CDM_BENCH_CACHE", str(tmp_path_factory.getbasetemp() / "cdm-bench-cache"))
        get_scorer("tiny")
        spec = spec_file(base)
        sweep(spec, "--out", base / "out", "--jobs", "2")
        yield spec, base / "out"


def _csv(out: Path, cell: str) -> pd.DataFrame:
    return pd.read_csv(out / "cells" / cell / "validation.csv")


def test_cells_train_validate_and_a_rerun_skips_them(done):
    spec, out = done
    for cell in CELLS:
        v = _csv(out, cell)
        assert sorted(v["step"].unique()) == [0, 1, 2, 3] and set(v["entry"]) == {"nfe1", "nfe2"}
        assert {"toy_fid", "toy_align", "toy_fid.mean_term", "toy_fid.cov_term"} <= set(v["metric"])
        assert (out / "cells" / cell / "checkpoint-000003").is_dir()
    a, b = (_csv(out, c) for c in CELLS)
    assert not a["value"].equals(b["value"])  # the grid value reached the recipe
    dry = sweep(spec, "--out", out, "--dry-run").stdout
    assert "3 jobs, 3 done, 0 to run" in dry
    stamp = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    again = sweep(spec, "--out", out)
    assert "every job is done" in again.stderr
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and "report" not in p.parts} == \
        {p: t for p, t in stamp.items() if "report" not in p.parts}


def test_report_tables_plots_and_seed_check(done):
    spec, out = done
    sweep(spec, "--out", out, "--report")
    rep = out / "report"
    pts = pd.read_csv(rep / "frontier.csv")
    cells = pts[pts["kind"] == "cell"]
    assert len(cells) == 4 and set(cells["entry"]) == {"nfe1", "nfe2"}  # 2 settings x 2 entries
    assert (cells["evals_per_seed"] == 2).all() and (cells["n_seeds"] == 1).all()
    ref = pts[pts["kind"] == "reference"].iloc[0]
    assert (ref["method"], ref["setting"], ref["steps"], ref["nfe"]) == ("teacher", "nfe=2,guidance=1", 2, 2)
    v = _csv(out, CELLS[0])
    last2 = v[(v["metric"] == "toy_fid") & (v["entry"] == "nfe1") & (v["step"] >= 2)]["value"].mean()
    row = cells[(cells["setting"] == "dmd2.real_guidance=1") & (cells["entry"] == "nfe1")].iloc[0]
    assert row["toy_fid"] == pytest.approx(last2)  # the point is the mean of the last 2 validations
    md = (rep / "frontier.md").read_text()
    assert "## nfe1" in md and "fewer than 2 seeds" in md
    fid_part = md.split("## toy_fid: its values")[1]
    assert "| toy_fid | cov_term | mean_term |" in fid_part and "count_acc" not in fid_part
    assert "## toy_diag: its values" in md and "| count_acc | hf_rel | pix_std_rel |" in md
    for name in ("frontier.png", "convergence.png"):
        assert (rep / name).stat().st_size > 5000
    assert "data:image/png;base64" in (rep / "report.html").read_text()


def test_the_report_names_the_teacher_and_refuses_cells_of_different_teachers(done, tmp_path):
    import json
    import shutil

    spec, out = done
    ev = pd.read_csv(out / "report" / "evaluations.csv") if (out / "report").is_dir() else None
    if ev is None:
        sweep(spec, "--out", out, "--report")
        ev = pd.read_csv(out / "report" / "evaluations.csv")
    hashes = ev.loc[ev["kind"] == "cell", "teacher_sha256"].unique()
    assert len(hashes) == 1 and len(hashes[0]) == 64  # both cells: one teacher, recorded
    assert f"`{hashes[0][:16]}` (2 cells)" in (out / "report" / "frontier.md").read_text()
    copy = tmp_path / "out"
    shutil.copytree(out, copy, ignore=shutil.ignore_patterns("report"))
    meta = copy / "cells" / CELLS[1] / "checkpoint-000003" / "meta.json"
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "teacher_sha256": "f" * 64}))
    refused = sweep(spec, "--out", copy, "--report", check=False)
    assert refused.returncode != 0 and "2 different teacher weights" in refused.stderr
    assert hashes[0][:12] in refused.stderr and "ffffffffffff" in refused.stderr
    assert not (copy / "report").exists()  # nothing written
    allowed = yaml.safe_load(spec.read_text())
    allowed["report"]["allow_mixed_teachers"] = True
    spec2 = tmp_path / "mixed.yaml"
    spec2.write_text(yaml.safe_dump(allowed, sort_keys=False))
    sweep(spec2, "--out", copy, "--report")
    assert "Warning: 2 different teacher weights" in (copy / "report" / "frontier.md").read_text()


def test_a_cell_killed_with_sigkill_resumes_to_the_same_numbers(done, tmp_path):
    spec, out = done
    spec2 = spec_file(tmp_path)
    proc = subprocess.Popen([sys.executable, "-m", "cdm_bench", "sweep", str(spec2), "--out", str(tmp_path / "out"),
                             "--only", CELLS[0]], cwd=ROOT, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    target = tmp_path / "out" / "cells" / CELLS[0] / "checkpoint-000002"
    deadline = time.time() + 240
    while not target.is_dir() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert target.is_dir(), "the cell never reached step 2"
    assert "at step" in sweep(spec2, "--out", tmp_path / "out", "--dry-run", "--only", CELLS[0]).stdout
    sweep(spec2, "--out", tmp_path / "out", "--only", CELLS[0])
    pd.testing.assert_frame_equal(_csv(tmp_path / "out", CELLS[0]), _csv(out, CELLS[0]), rtol=1e-6)


def test_submitit_local_executor_runs_the_cells_with_the_same_results(done, tmp_path):
    pytest.importorskip("submitit")
    spec, out = done
    sweep(spec, "--out", tmp_path / "out", "--executor", "submitit-local", "--only", "dmd-*")
    for cell in CELLS:
        pd.testing.assert_frame_equal(_csv(tmp_path / "out", cell), _csv(out, cell), rtol=1e-6)
    assert any((tmp_path / "out" / "submitit").iterdir())


def _variant(tmp_path: Path, name: str, cells: list) -> Path:
    spec = yaml.safe_load(spec_file(tmp_path).read_text())
    spec["cells"] += cells
    spec.pop("reference")
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def test_a_failing_cell_is_reported_and_the_others_run(tmp_path):
    path = _variant(tmp_path, "bad", [{"recipe": "dmd", "label": "broken", "set": {"model.teacher": "/no/such/teacher"}}])
    proc = sweep(path, "--out", tmp_path / "out", "--jobs", "2", "--only", "broken-*", "--only", CELLS[0], check=False)
    assert proc.returncode == 1 and "1 job(s) failed" in proc.stderr and "broken-seed_0.log" in proc.stderr
    assert "/no/such/teacher" in (tmp_path / "out" / "logs" / "broken-seed_0.log").read_text()
    assert (tmp_path / "out" / "cells" / CELLS[0] / "validation.csv").is_file()  # the other cell ran


def test_a_bad_recipe_or_override_is_refused_before_anything_runs(tmp_path):
    for i, cell in enumerate([{"recipe": "no_such_recipe"}, {"recipe": "dmd", "label": "b", "set": {"losses.nope.weight": 1}}]):
        proc = sweep(_variant(tmp_path, f"v{i}", [cell]), "--out", tmp_path / "out", check=False)
        assert proc.returncode == 2 and "sweep cell" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_an_edited_spec_under_a_finished_cell_is_refused(done, tmp_path):
    spec, out = done
    edited = yaml.safe_load(spec.read_text())
    edited["set"]["train.batch_size"] = 3  # same cell names, another recipe
    path = tmp_path / "edited.yaml"
    path.write_text(yaml.safe_dump(edited, sort_keys=False))
    assert "changed: train.batch_size: 2 -> 3" in sweep(path, "--out", out, "--dry-run").stdout
    proc = sweep(path, "--out", out, check=False)
    assert proc.returncode == 2 and "hold runs of another recipe" in proc.stderr


def test_a_two_process_cell_trains_under_torchrun(done, tmp_path):
    spec = yaml.safe_load(spec_file(tmp_path, steps=2).read_text())
    spec["cells"] = [{"recipe": "dmd", "label": "dmd_2proc", "nproc": 2, "set": {"train.batch_size": 1}}]
    spec.pop("reference")
    path = tmp_path / "two.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    sweep(path, "--out", tmp_path / "out")
    v = _csv(tmp_path / "out", "dmd_2proc-seed_0")
    assert sorted(v["step"].unique()) == [0, 1, 2]
    log = (tmp_path / "out" / "logs" / "dmd_2proc-seed_0.log").read_text()
    assert "torch.distributed.run --standalone --nproc_per_node 2" in log
