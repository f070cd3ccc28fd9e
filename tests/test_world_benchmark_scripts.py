"""The world benchmark's scripts: distill_world.py (guidance sweeps, teacher CFG sweep, resume),
distill_frontier.py (hierarchical-bootstrap frontiers, plots), distill_diagnose.py and
distill_report.py, on a seconds-long run of the tiny preset."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"
sys.path.insert(0, str(BENCH))

import distill_diagnose as diagnose  # noqa: E402
import distill_frontier as frontier  # noqa: E402
import distill_world as world  # noqa: E402

SWEEP = ["--teacher", "tiny", "--steps", "2", "--eval-every", "1", "--seeds", "0,1", "--prompts", "4",
         "--samples", "1", "--recipes", "ddmd,dmd", "--guidance", "ddmd=1,2", "--guidance", "dmd=2",
         "--teacher-cfg", "1.5,2", "--threads", "1", "--set", "train.batch_size=2"]


def run_script(name: str, *args: str, cache: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "CDM_BENCH_CACHE": str(cache), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(BENCH / name), *args], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """One tiny sweep shared by the tests below: (tmp dir, cache, the command's arguments)."""
    tmp = tmp_path_factory.mktemp("world")
    cache = tmp_path_factory.getbasetemp() / "cdm-bench-cache"  # the session's (tests/conftest.py)
    args = SWEEP + ["--work", str(tmp / "work"), "--out", str(tmp / "dw.csv")]
    run_script("distill_world.py", *args, cache=cache)
    return tmp, cache, args


def _read(path: Path) -> tuple[list[str], list[dict]]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return reader.fieldnames, list(reader)


def test_sweep_writes_one_row_per_recipe_guidance_nfe_seed(sweep):
    tmp, _, _ = sweep
    cols, rows = _read(tmp / "dw.csv")
    assert cols == ["recipe", "nfe", "seed", "steps", "guidance", "toy_fid", "toy_align"]
    keys = [(r["recipe"], float(r["guidance"]), int(r["nfe"]), int(r["seed"])) for r in rows]
    assert len(keys) == len(set(keys))
    students = {k for k in keys if k[0] in ("ddmd", "dmd")}
    assert students == {(rec, g, n, s) for rec, gs in (("ddmd", (1.0, 2.0)), ("dmd", (2.0,)))
                        for g in gs for n in (1, 2, 4) for s in (0, 1)}
    teacher = {k for k in keys if k[0].startswith("teacher")}
    assert teacher == {("teacher", 1.0, n, 0) for n in (1, 2, 4, 50)} | {("teacher_cfg", g, 50, 0) for g in (1.5, 2.0)}
    assert all(np.isfinite(float(r["toy_fid"])) and np.isfinite(float(r["toy_align"])) for r in rows)
    # the evaluation curve: one row per evaluation point (steps 1 and 2) of every run
    _, evals = _read(tmp / "dw_evals.csv")
    steps = {(r["recipe"], r["guidance"], r["nfe"], r["seed"]): set() for r in evals if r["recipe"] in ("ddmd", "dmd")}
    for r in evals:
        if r["recipe"] in ("ddmd", "dmd"):
            steps[(r["recipe"], r["guidance"], r["nfe"], r["seed"])].add(int(r["steps"]))
    assert len(steps) == 18 and all(s == {1, 2} for s in steps.values())


def test_runs_train_with_their_guidance_and_shift(sweep):
    import yaml

    work = sweep[0] / "work"
    assert sorted(p.name for p in work.iterdir() if p.is_dir()) == [
        "ddmd-g1-seed0", "ddmd-g1-seed1", "ddmd-g2-seed0", "ddmd-g2-seed1", "dmd-g2-seed0", "dmd-g2-seed1"]
    ddmd = yaml.safe_load((work / "ddmd-g2-seed1" / "recipe.yaml").read_text())
    dmd = yaml.safe_load((work / "dmd-g2-seed0" / "recipe.yaml").read_text())
    assert ddmd["losses"]["ca"]["guidance"] == 2.0 and ddmd["train"]["seed"] == 1
    assert dmd["losses"]["dmd2"]["real_guidance"] == 2.0
    assert ddmd["model"]["shift"] == 1.0  # the tiny preset's shift, used for training and sampling


def test_resumed_sweep_reuses_finished_runs(sweep):
    tmp, cache, args = sweep
    ckpts = sorted((tmp / "work").glob("*/checkpoint-*/state.pt"))
    before = {p: p.stat().st_mtime_ns for p in ckpts}
    evals = (tmp / "dw_evals.csv").read_text()
    proc = run_script("distill_world.py", *args, cache=cache)
    assert "toy_fid=" not in proc.stdout  # nothing trained or evaluated again: all cached
    assert {p: p.stat().st_mtime_ns for p in sorted((tmp / "work").glob("*/checkpoint-*/state.pt"))} == before
    assert (tmp / "dw_evals.csv").read_text() == evals
    # a longer budget continues one run from its checkpoint and evaluates only the new step
    more = ["--teacher", "tiny", "--steps", "3", "--eval-every", "1", "--seeds", "0", "--prompts", "4",
            "--samples", "1", "--recipes", "dmd", "--guidance", "dmd=2", "--threads", "1", "--set",
            "train.batch_size=2", "--no-teacher", "--work", str(tmp / "work"), "--out", str(tmp / "more.csv")]
    proc = run_script("distill_world.py", *more, cache=cache)
    assert "step=3" in proc.stdout and "step=1 " not in proc.stdout and "step=2 " not in proc.stdout
    assert (tmp / "work" / "dmd-g2-seed0" / "checkpoint-000003").is_dir()


def test_frontier_report_writes_table_and_plots(sweep):
    tmp, cache, _ = sweep
    proc = run_script("distill_frontier.py", "--evals", str(tmp / "dw_evals.csv"), "--last", "2", "--boot", "200",
                      cache=cache)
    for name in ("dw_frontier.md", "dw_frontier.csv", "dw_frontier.png", "dw_convergence.png"):
        assert (tmp / name).is_file() and (tmp / name).stat().st_size > 0, name
    md = (tmp / "dw_frontier.md").read_text()
    assert all(f"## {n} NFE" in md for n in (1, 2, 4)) and "Dominated beyond the CIs" in md and "## Targets" in md
    assert "two-level bootstrap" in proc.stdout
    pts = pd.read_csv(tmp / "dw_frontier.csv")
    ddmd = pts[pts.method == "ddmd"]
    assert sorted(ddmd.guidance.unique()) == [1.0, 2.0] and set(ddmd.nfe) == {1, 2, 4}
    assert (ddmd.seeds == 2).all() and (ddmd.evals_per_seed == 2).all()
    assert sorted(pts[pts.method == "teacher@50"].guidance) == [1.0, 1.5, 2.0]
    assert ((pts.fid_lo <= pts.toy_fid + 1e-12) & (pts.toy_fid <= pts.fid_hi + 1e-12)).all()
    report = run_script("distill_report.py", "--csv", str(tmp / "dw.csv"), cache=cache)
    assert "ddmd g=2" in report.stdout and "teacher_cfg g=1.5" in report.stdout


def _tiny_evals(noise: float) -> pd.DataFrame:
    """3 seeds x 3 evaluations whose per-seed means are 10, 11, 12 / 0.2, 0.3, 0.4 whatever the noise."""
    rows = []
    for seed, (fid, align) in enumerate([(10.0, 0.2), (11.0, 0.3), (12.0, 0.4)]):
        for step, d in zip((10, 20, 30), (-1.0, 0.0, 1.0)):
            rows.append({"recipe": "cdm", "guidance": 2.0, "nfe": 4, "seed": seed, "steps": step,
                         "toy_fid": fid + noise * d, "toy_align": align + noise * d / 10})
    return pd.DataFrame(rows)


def test_hierarchical_bootstrap_ci_includes_within_run_noise():
    quiet = frontier.frontier_points(_tiny_evals(0.0), last=3, n_boot=2000).iloc[0]
    noisy = frontier.frontier_points(_tiny_evals(3.0), last=3, n_boot=2000).iloc[0]
    for p in (quiet, noisy):
        assert p.toy_fid == pytest.approx(11.0) and p.toy_align == pytest.approx(0.3)
        assert p.fid_lo <= p.toy_fid <= p.fid_hi and p.align_lo <= p.toy_align <= p.align_hi
        assert p.seeds == 3 and p.evals_per_seed == 3
    assert noisy.fid_hi - noisy.fid_lo > quiet.fid_hi - quiet.fid_lo
    assert noisy.align_hi - noisy.align_lo > quiet.align_hi - quiet.align_lo
    # one seed: only the within-run noise is left
    one = frontier.hier_bootstrap([np.array([[1.0], [2.0], [3.0]])], n_boot=500)
    assert one[0][0] == pytest.approx(2.0) and one[1][0] < 2.0 < one[2][0]
    flat = frontier.hier_bootstrap([np.array([[2.0], [2.0]])], n_boot=100)
    assert flat[1][0] == flat[2][0] == 2.0


def test_dominance_needs_separated_intervals():
    def point(method, fid, align, half=0.5):
        return pd.Series({"method": method, "nfe": 4, "guidance": 1.0, "toy_fid": fid, "fid_lo": fid - half,
                          "fid_hi": fid + half, "toy_align": align, "align_lo": align - half / 10,
                          "align_hi": align + half / 10})

    assert frontier.dominates(point("cdm", 10, 0.4), point("dmd", 12, 0.2))
    assert not frontier.dominates(point("cdm", 10, 0.4), point("dmd", 10.8, 0.2))  # toy_fid CIs overlap
    assert not frontier.dominates(point("cdm", 10, 0.22), point("dmd", 12, 0.2))  # toy_align CIs overlap


def test_seed_check_counts_each_methods_own_frontier_points():
    def pts(rows):
        return pd.DataFrame([{"method": m, "nfe": 4, "guidance": g, "seeds": s, "toy_fid": f, "toy_align": a}
                             for m, g, s, f, a in rows])

    base = [("dmd", 1.0, 1, 19.0, 0.70), ("dmd", 5.0, 3, 14.5, 0.80),  # g=1 dominated by g=5 (means)
            ("cdm", 7.0, 3, 16.8, 0.79), ("teacher", 1.0, 1, 15.5, 0.59)]
    assert [(p.method, p.guidance) for p in frontier.own_frontier(pts(base), 4)] == [("cdm", 7.0), ("dmd", 5.0)]
    ok, text = frontier.check_seeds(pts(base))
    assert ok and "2 points" in text and "fewer: none" in text
    # a one-seed point that trades fidelity for alignment is on its method's frontier: it needs seeds
    ok, text = frontier.check_seeds(pts(base + [("dmd", 8.0, 1, 15.0, 0.82)]))
    assert not ok and "dmd@4 g=8 (1)" in text


def test_guidance_keys_and_errors(tmp_path):
    assert world.guidance_setting("dmd") == ("losses.dmd2.real_guidance", 2.0)
    assert world.guidance_setting("cdm_no_offtraj")[0] == "losses.ca.guidance"
    assert world.guidance_setting("ddmd", {"losses.ca.guidance": 4})[1] == 4.0
    bare = tmp_path / "no_guidance.yaml"
    bare.write_text("base: ddmd\nname: no_guidance\nlosses:\n  ca: null\n")
    with pytest.raises(ValueError, match="neither a 'dmd2' nor a 'ca' loss"):
        world.guidance_setting(str(bare))
    with pytest.raises(ValueError, match="RECIPE=v1,v2"):
        world.parse_sweeps(["cdm=1,2"], ["ddmd", "dmd"])
    assert world.parse_sweeps(["no_guidance=3"], [str(bare)]) == {str(bare): [3.0]}


def test_shift_defaults_to_the_teacher_preset():
    ap = world.build_parser()
    assert world.resolve_args(ap, ["--teacher", "bench"]).shift == 3.0
    assert world.resolve_args(ap, ["--teacher", "tiny"]).shift == 1.0
    assert world.resolve_args(ap, ["--teacher", "bench", "--shift", "2"]).shift == 2.0


def test_old_csv_without_guidance_column(tmp_path):
    old = tmp_path / "old_evals.csv"
    old.write_text("recipe,nfe,seed,steps,toy_fid,toy_align\n"
                   "teacher,4,0,0,40.0,0.2\nteacher_cfg,50,0,0,35.0,0.3\n"
                   "ddmd,4,0,10,37.0,0.19\nddmd,4,0,20,36.0,0.21\ndmd,4,1,20,33.0,0.28\n")
    assert world.main(["--summarise", str(old), str(old), "--out", str(tmp_path / "old.csv")]) == 0
    cols, rows = _read(tmp_path / "old.csv")
    assert cols == world.FIELDS and len(rows) == 4
    assert len(_read(tmp_path / "old_evals.csv")[1]) == 5  # the combined evaluations, duplicates once
    g = {r["recipe"]: r["guidance"] for r in rows}
    assert g == {"teacher": "1.0", "teacher_cfg": "", "ddmd": "1.0", "dmd": "2.0"}
    pts = frontier.frontier_points(frontier.load_evals(old), last=3, n_boot=100)
    assert set(pts.method) == {"teacher", "teacher@50", "ddmd", "dmd"}


def test_help_runs():
    for name in ("distill_world.py", "distill_frontier.py"):
        proc = subprocess.run([sys.executable, str(BENCH / name), "--help"], capture_output=True, text=True)
        assert proc.returncode == 0 and "--" in proc.stdout, proc.stderr


# -- distill_diagnose.py ------------------------------------------------------------------------------
def test_frechet_terms_known_answers():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4000, 3))
    a -= a.mean(0)
    mean_term, cov_term = diagnose.frechet_terms(a, a + np.array([3.0, 0.0, 4.0]))
    assert mean_term == pytest.approx(25.0) and abs(cov_term) < 1e-6  # shifted copy: mean term only
    mean_term, cov_term = diagnose.frechet_terms(a, 2.0 * a)
    # covariances S and 4S: tr(S + 4S - 2 * 2S) = tr(S), about d = 3 for N(0, I)
    assert mean_term < 1e-20 and cov_term == pytest.approx(np.trace(np.cov(a, rowvar=False)), rel=1e-6)


def test_high_freq_share_known_answers():
    flat = np.full((1, 16, 16, 3), 100, np.uint8)
    checker = (np.indices((16, 16)).sum(0) % 2 * 255).astype(np.uint8)[None, :, :, None].repeat(3, -1)
    ramp = np.tile(np.linspace(0, 255, 16).astype(np.uint8)[None, :, None], (16, 1, 3))[None]
    shares = diagnose.high_freq_share(np.concatenate([flat, checker, ramp]))
    assert shares[0] == 0.0 and shares[1] == pytest.approx(1.0) and 0.0 < shares[2] < 0.2


def test_diagnose_reports_every_source(sweep, tmp_path):
    tmp, cache, _ = sweep
    out = tmp_path / "diag.md"
    run_script("distill_diagnose.py", "--teacher", "tiny", "--scorer", "tiny", "--runs", str(tmp / "work" / "dmd-g2-seed0"),
               "--nfe", "1", "2", "--teacher-points", "2:1", "--prompts", "4", "--samples", "2",
               "--out", str(out), "--grid", str(tmp_path / "grid.png"), "--grid-n", "3", cache=cache)
    from PIL import Image

    assert Image.open(tmp_path / "grid.png").size[1] > 4 * 32  # a row per source
    lines = [ln for ln in out.read_text().splitlines() if ln.startswith("| ") and not ln.startswith("| images")]
    assert [ln.split(" | ")[0][2:] for ln in lines] == [
        "real renders (other seeds)", "teacher@2 CFG 1", "dmd-g2-seed0@1", "dmd-g2-seed0@2"]
    real = lines[0].strip("| ").split(" | ")[1:]
    assert float(real[4]) == pytest.approx(1.0, abs=0.5)  # real renders: about the reference's high frequencies
    assert 0.0 <= float(real[3]) <= 1.0 and 0.0 <= float(real[6]) <= 1.0 and 0.0 <= float(real[7]) <= 1.0
    assert sum(float(v) for v in real[8].split(" / ")) == pytest.approx(1.0, abs=0.02)  # a distribution
