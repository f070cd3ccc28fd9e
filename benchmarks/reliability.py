"""Reliability report: SIGKILL generate and evaluate at random points (1 and 2 processes, and the
torchrun launcher alone), resume, and count what a user would find; then try bad inputs and
record the one-line messages. Writes benchmarks/results/reliability.md (and .json).

    python benchmarks/reliability.py [--seeds 3] [--fuzz-minutes 20]

It also runs the fuzz suite (tests/test_fuzz.py) in its CI mode and, with ``--fuzz-minutes``,
its long mode, and records the examples, exit codes and seeds.

Uses the test doubles of tests/dummy.py (a deterministic generator and a counting metric that
can SIGKILL their own process after N images), so it needs no trained model (~2 min).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).parent / "results"
N_PROMPTS, SAMPLES, GEN_SLEEP, EVAL_SLEEP = 40, 2, 0.05, 0.02


def env(**extra) -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT / "tests") + os.pathsep + os.environ.get("PYTHONPATH", ""),
            **{k: str(v) for k, v in extra.items()}}


def launch(nproc: int, port: int) -> list[str]:
    if nproc == 1:
        return [sys.executable, "-m", "cdm_bench"]
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
            "--master_port", str(port), "-m", "cdm_bench"]


def gen_args(tmp: Path, out: Path) -> list[str]:
    spec, prompts = tmp / "spec.yaml", tmp / "prompts.txt"
    spec.write_text('generator: "dummy:DummyGenerator"\nname: d\n')
    prompts.write_text("".join(f"prompt number {i}\n" for i in range(N_PROMPTS)))
    return ["generate", "--generator", str(spec), "--prompts", str(prompts), "--out", str(out),
            "--samples-per-prompt", str(SAMPLES), "--batch-size", "4"]


def inspect_run(out: Path) -> dict:
    """Images expected / found / duplicated / corrupt in a finished run directory."""
    from PIL import Image

    from cdm_bench.rundir import RunDir

    recs = RunDir(out).read_manifest()
    keys = [(r["prompt_id"], r["k"]) for r in recs]
    corrupt = 0
    for r in recs:
        data = (out / r["file"]).read_bytes() if (out / r["file"]).exists() else b""
        try:
            Image.open(io.BytesIO(data)).load()
            ok = hashlib.sha256(data).hexdigest() == r["sha256"]
        except Exception:
            ok = False
        corrupt += not ok
    pngs = len(list((out / "images").glob("*.png")))
    return {"expected": N_PROMPTS * SAMPLES, "found": len(set(keys)), "pngs": pngs,
            "duplicated": len(keys) - len(set(keys)), "corrupt": corrupt}


def hashes(out: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((out / "images").glob("*.png"))}


def generate_kills(tmp: Path, seeds: int) -> list[dict]:
    ref = tmp / "gen-ref"
    t0 = time.perf_counter()
    subprocess.run(launch(1, 0) + gen_args(tmp, ref), env=env(CDM_TEST_GEN_SLEEP=GEN_SLEEP), check=True,
                   capture_output=True)
    per_image = (time.perf_counter() - t0) / (N_PROMPTS * SAMPLES)
    rows = []
    for nproc in (1, 2):
        for seed in range(seeds):
            rng = np.random.default_rng(seed)
            out = tmp / f"gen-{nproc}-{seed}"
            before = 0
            kill_at = int(rng.integers(2, 30))
            rank = int(rng.integers(0, nproc))
            proc = subprocess.run(launch(nproc, 29800 + seed) + gen_args(tmp, out), capture_output=True,
                                  env=env(CDM_TEST_GEN_SLEEP=GEN_SLEEP, CDM_TEST_KILL_GEN_AFTER=kill_at,
                                          CDM_TEST_KILL_RANK=rank))
            saved = len(list((out / "images").glob("*.png"))) - before
            made = kill_at + (kill_at if nproc == 2 else 0)  # the other rank runs about as far
            subprocess.run(launch(nproc, 29810 + seed) + gen_args(tmp, out), env=env(), check=True,
                           capture_output=True)
            rows.append({"phase": "generate", "processes": nproc, "kill": f"rank {rank} after {kill_at} images",
                         "exit": proc.returncode, **inspect_run(out), "identical": hashes(out) == hashes(ref),
                         "lost_s": max(made - saved, 0) * per_image})
    rows.append(launcher_kill(tmp, per_image, ref))
    return rows


def launcher_kill(tmp: Path, per_image: float, ref: Path) -> dict:
    out = tmp / "gen-launcher"
    p = subprocess.Popen(launch(2, 29830) + gen_args(tmp, out), env=env(CDM_TEST_GEN_SLEEP=0.3),
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    while len(list((out / "images").glob("*.png"))) < 12:
        time.sleep(0.05)
    workers = subprocess.run(["pgrep", "-P", str(p.pid)], capture_output=True, text=True).stdout.split()
    p.send_signal(signal.SIGKILL)
    p.wait()
    time.sleep(2)
    survivors = [w for w in workers if Path(f"/proc/{w}").exists()]
    subprocess.run(launch(2, 29831) + gen_args(tmp, out), env=env(), check=True, capture_output=True)
    return {"phase": "generate", "processes": 2, "kill": f"torchrun launcher only ({len(workers)} workers; "
            f"{len(survivors)} survived it)", "exit": -9, **inspect_run(out), "identical": hashes(out) == hashes(ref),
            "lost_s": float("nan")}


def evaluate_kills(tmp: Path, seeds: int) -> list[dict]:
    import pandas as pd

    ref = tmp / "gen-ref"
    metrics = "counting=dummy:CountingMetric,set_mean=dummy:SetMean"
    args = ["evaluate", "--metrics", metrics, "--batch-size", "4", "--chunk-size", "16"]
    base = tmp / "eval-ref"
    shutil.copytree(ref, base)
    t0 = time.perf_counter()
    subprocess.run(launch(1, 0) + args + ["--images", str(base)], capture_output=True, check=True,
                   env=env(CDM_TEST_CALL_LOG=tmp / "ref.log", CDM_TEST_SLEEP=EVAL_SLEEP))
    per_image = (time.perf_counter() - t0) / (N_PROMPTS * SAMPLES)
    want = pd.read_parquet(base / "scores.parquet")
    rows = []
    for nproc in (1, 2):
        for seed in range(seeds):
            rng = np.random.default_rng(100 + seed)
            run = tmp / f"eval-{nproc}-{seed}"
            shutil.copytree(ref, run)
            kill_at, rank = int(rng.integers(2, 30)), int(rng.integers(0, nproc))
            log = tmp / f"eval-{nproc}-{seed}.log"
            proc = subprocess.run(launch(nproc, 29850 + seed) + args + ["--images", str(run)], capture_output=True,
                                  env=env(CDM_TEST_CALL_LOG=log, CDM_TEST_SLEEP=EVAL_SLEEP, CDM_TEST_KILL_AFTER=kill_at,
                                          CDM_TEST_KILL_RANK=rank))
            scored = len(log.read_text().split()) if log.exists() else 0
            saved = sum(len(pd.read_parquet(f)) for f in (run / "scoring").glob("counting-*/chunk-*.parquet"))
            subprocess.run(launch(nproc, 29860 + seed) + args + ["--images", str(run)], capture_output=True,
                           check=True, env=env(CDM_TEST_CALL_LOG=tmp / "resume.log", CDM_TEST_SLEEP=EVAL_SLEEP))
            got = pd.read_parquet(run / "scores.parquet")
            rows.append({"phase": "evaluate", "processes": nproc, "kill": f"rank {rank} after {kill_at} images",
                         "exit": proc.returncode, "expected": len(want), "found": int(got["counting"].notna().sum()),
                         "pngs": len(got), "duplicated": int(got.duplicated(["prompt_id", "k"]).sum()),
                         "corrupt": int((got["counting"] != want["counting"]).sum()),
                         "identical": bool(got.equals(want)), "lost_s": max(scored - saved, 0) * per_image})
    return rows


BAD_INPUTS = [
    ("prompt file not UTF-8", lambda t: ["generate", "--generator", "dummy:DummyGenerator", "--prompts", str(t / "latin.txt"), "--out", str(t / "o")]),
    ("CSV row with an empty prompt", lambda t: ["generate", "--generator", "dummy:DummyGenerator", "--prompts", str(t / "rows.csv"), "--out", str(t / "o")]),
    ("missing prompt file", lambda t: ["generate", "--generator", "dummy:DummyGenerator", "--prompts", str(t / "nope.txt"), "--out", str(t / "o")]),
    ("unsafe prompt id ../../escaped", lambda t: ["generate", "--generator", "dummy:DummyGenerator", "--prompts", str(t / "escape.jsonl"), "--out", str(t / "o")]),
    ("--samples-per-prompt 0", lambda t: ["generate", "--generator", "dummy:DummyGenerator", "--prompts", "smoke", "--samples-per-prompt", "0", "--out", str(t / "o")]),
    ("nfe: abc in a generator spec", lambda t: ["generate", "--generator", str(t / "nfe.yaml"), "--prompts", "smoke", "--out", str(t / "o")]),
    ("generator: os:system in a spec", lambda t: ["generate", "--generator", str(t / "os.yaml"), "--prompts", "smoke", "--out", str(t / "o")]),
    ("--metrics nope:Thing", lambda t: ["evaluate", "--images", str(t / "gen-ref"), "--metrics", "nope:Thing"]),
    ("--metrics os:getcwd", lambda t: ["evaluate", "--images", str(t / "gen-ref"), "--metrics", "os:getcwd"]),
    ("--metric-options bad JSON", lambda t: ["evaluate", "--images", str(t / "gen-ref"), "--metrics", "toy_align", "--metric-options", "{bad"]),
    ("--metric-options unknown option", lambda t: ["evaluate", "--images", str(t / "gen-ref"), "--metrics", "toy_align", "--metric-options", '{"toy_align": {"bogus": 1}}']),
    ("evaluate --batch-size 0", lambda t: ["evaluate", "--images", str(t / "gen-ref"), "--metrics", "toy_align", "--batch-size", "0"]),
    ("evaluate --images typo/dir", lambda t: ["evaluate", "--images", str(t / "typo" / "dir"), "--metrics", "toy_align"]),
    ("evaluate --out another run's directory", lambda t: ["evaluate", "--images", str(t / "gen-ref"), "--metrics", "counting=dummy:CountingMetric", "--out", str(t / "gen-other")]),
    ("unknown metric toy_fdi", lambda t: ["evaluate", "--images", str(t / "gen-ref"), "--metrics", "toy_fdi"]),
    # round 2 (issue 20)
    ("--samples-per-prompt 1000000000", lambda t: ["generate", "--generator", "dummy:DummyGenerator", "--prompts", "smoke", "--samples-per-prompt", "1000000000", "--out", str(t / "o")]),
    ("--limit -1", lambda t: ["generate", "--generator", "dummy:DummyGenerator", "--prompts", "smoke", "--limit", "-1", "--out", str(t / "o")]),
    ("JSONL id ending in a newline", lambda t: ["generate", "--generator", "dummy:DummyGenerator", "--prompts", str(t / "newline.jsonl"), "--out", str(t / "o")]),
    ("JSONL row that is an array", lambda t: ["generate", "--generator", "dummy:DummyGenerator", "--prompts", str(t / "array.jsonl"), "--out", str(t / "o")]),
    ("--out at an existing file", lambda t: ["generate", "--generator", "dummy:DummyGenerator", "--prompts", "smoke", "--out", str(t / "latin.txt")]),
    ("--out a folder cdm-bench did not write", lambda t: ["generate", "--generator", "dummy:DummyGenerator", "--prompts", "smoke", "--out", str(t / "photos")]),
    ("generator name ../../x in a run spec", lambda t: ["run", str(t / "run-name.yaml"), "--out", str(t / "o")]),
    ("missing eval_python in a run spec", lambda t: ["run", str(t / "run-python.yaml"), "--out", str(t / "o")]),
    ("malformed YAML", lambda t: ["generate", "--generator", str(t / "broken.yaml"), "--prompts", "smoke", "--out", str(t / "o")]),
    ("YAML alias bomb", lambda t: ["run", str(t / "bomb.yaml"), "--out", str(t / "o")]),
    ("YAML nested 20,000 deep", lambda t: ["generate", "--generator", str(t / "deep.yaml"), "--prompts", "smoke", "--out", str(t / "o")]),
    ("all-digit sha256 in a prompt-set spec", lambda t: ["generate", "--generator", "dummy:DummyGenerator", "--prompts", str(t / "digits.yaml"), "--out", str(t / "o")]),
    ("2,048 junk lines against the pickapic pin", lambda t: ["generate", "--generator", "dummy:DummyGenerator", "--prompts", str(t / "junk.yaml"), "--out", str(t / "o")]),
    ("malformed COCO captions JSON", lambda t: ["generate", "--generator", "dummy:DummyGenerator", "--prompts", str(t / "coco.yaml"), "--out", str(t / "o")]),
    ("metric instance ../../x", lambda t: ["evaluate", "--images", str(t / "gen-ref"), "--metrics", "../../x=dummy:CountingMetric"]),
    ("metric instance /abs", lambda t: ["evaluate", "--images", str(t / "gen-ref"), "--metrics", "/abs=dummy:CountingMetric"]),
    ("--metric-options wrong type", lambda t: ["evaluate", "--images", str(t / "gen-ref"), "--metrics", "m=dummy:MeanValue", "--metric-options", '{"m": {"scale": "2"}}']),
    ("--metric-options nested 30,000 deep", lambda t: ["evaluate", "--images", str(t / "gen-ref"), "--metrics", "m=dummy:MeanValue", "--metric-options", '{"m": ' + "[" * 30000 + "]" * 30000 + "}"]),
    ("manifest joined with itself", lambda t: ["evaluate", "--images", str(t / "doubled"), "--metrics", "counting=dummy:CountingMetric"]),
    ("truncated results.json", lambda t: ["evaluate", "--images", str(t / "cut-results"), "--metrics", "counting=dummy:CountingMetric"]),
    ("truncated scores.parquet", lambda t: ["evaluate", "--images", str(t / "cut-scores"), "--metrics", "counting=dummy:CountingMetric"]),
    ("evaluate --out holding a foreign results.json", lambda t: ["evaluate", "--images", str(t / "gen-ref"), "--metrics", "counting=dummy:CountingMetric", "--out", str(t / "foreign"), "--force"]),
]


def bad_inputs(tmp: Path) -> list[dict]:
    (tmp / "latin.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    (tmp / "rows.csv").write_text("id,prompt\na,first\nb,\n")
    (tmp / "escape.jsonl").write_text('{"id": "../../escaped", "prompt": "x"}\n')
    (tmp / "nfe.yaml").write_text("generator: toy\npreset: tiny\nnfe: abc\n")
    (tmp / "os.yaml").write_text(f'generator: "os:system"\ncommand: "touch {tmp / "PWNED"}"\n')
    _round2_inputs(tmp)
    subprocess.run(launch(1, 0) + gen_args(tmp, tmp / "gen-other") + ["--seed", "7"], env=env(), check=True,
                   capture_output=True)
    subprocess.run(launch(1, 0) + ["evaluate", "--images", str(tmp / "gen-other"), "--metrics",
                                   "counting=dummy:CountingMetric"], capture_output=True, check=True,
                   env=env(CDM_TEST_CALL_LOG=tmp / "other.log"))
    for name, target, how in (("doubled", "manifest.jsonl", "double"), ("cut-results", "results.json", "cut"),
                              ("cut-scores", "scores.parquet", "cut")):
        shutil.copytree(tmp / "gen-other", tmp / name)
        data = (tmp / name / target).read_bytes()
        (tmp / name / target).write_bytes(data * 2 if how == "double" else data[: len(data) // 2])
    rows = []
    for what, argv in BAD_INPUTS:
        proc = subprocess.run(launch(1, 0) + argv(tmp), env=env(CDM_TEST_CALL_LOG=tmp / "bad.log"),
                              capture_output=True, text=True)
        err = proc.stderr.strip().splitlines()
        rows.append({"input": what, "exit": proc.returncode, "lines": len(err), "traceback": "Traceback" in proc.stderr,
                     "message": err[-1][:220] if err else ""})
    rows.append({"input": "(os:system spec created its file?)", "exit": "", "lines": "",
                 "traceback": False, "message": "yes" if (tmp / "PWNED").exists() else "no"})
    return rows


def _round2_inputs(tmp: Path) -> None:
    """The files issue 20's bad inputs need."""
    (tmp / "newline.jsonl").write_text('{"id": "a\\n", "prompt": "x"}\n')
    (tmp / "array.jsonl").write_text('["a prompt"]\n')
    (tmp / "photos").mkdir()
    (tmp / "photos" / "holiday.jpg").write_bytes(b"jpeg")
    gen = '{generator: "dummy:DummyGenerator", name: d}'
    (tmp / "run-name.yaml").write_text('prompts: [smoke]\nmetrics: [counting=dummy:CountingMetric]\n'
                                       'generators: [{generator: "dummy:DummyGenerator", name: ../../x}]\n')
    (tmp / "run-python.yaml").write_text(f"prompts: [smoke]\ngenerators: [{gen}]\nmetrics: [{{name: 'dummy:CountingMetric', "
                                         f"eval_python: {tmp / 'no-env' / 'bin' / 'python'}}}]\n")
    (tmp / "broken.yaml").write_text("generator: [unclosed\n")
    bomb = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"] + [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]"
                                                     for i in range(1, 9)]
    (tmp / "bomb.yaml").write_text("\n".join(bomb) + "\ngenerators: [*a8]\nprompts: [smoke]\n")
    (tmp / "deep.yaml").write_text("generator: " + "[" * 20000 + "]" * 20000 + "\n")
    (tmp / "p.txt").write_text("".join(f"junk {i}\n" for i in range(2048)))
    (tmp / "digits.yaml").write_text("name: d\nsource: {type: file, path: p.txt, sha256: 1234567890123456789}\n")
    pin = "d75c025fa451866e70f7e36243f7cdd93095523cb51f5f9651f2ce3236d20262"  # the reference's pickapic test.txt
    (tmp / "junk.yaml").write_text(f'name: pickapic\ncount: 2048\nsource: {{type: file, path: p.txt, sha256: "{pin}"}}\n')
    (tmp / "c.json").write_text('{"images": [{"id": 1}], "annotations": [{"id": 1}]}')
    (tmp / "coco.yaml").write_text("name: c\nsource: {type: coco, path: c.json, n: 1}\n")
    (tmp / "foreign").mkdir()
    (tmp / "foreign" / "results.json").write_text('{"mine": true}')


def fuzz_suite(minutes: float) -> dict:
    """tests/test_fuzz.py: bounded (CI: the fixed seed) or, with ``minutes``, the long mode."""
    log = Path(tempfile.mkstemp(suffix=".jsonl")[1])
    extra = {"RUN_FUZZ": "1", "FUZZ_MINUTES": str(minutes), "FUZZ_SEED": str(int(time.time()))} if minutes else {}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", "--timeout",
                           str(int(minutes * 60 + 900)), str(ROOT / "tests" / "test_fuzz.py")],
                          env=env(FUZZ_LOG=log, **extra), capture_output=True, text=True, cwd=ROOT)
    counts = next((json.loads(ln.split(" ", 1)[1]) for ln in proc.stdout.splitlines() if ln.startswith("FUZZ_COUNTS")),
                  {})
    seeds = [json.loads(ln) for ln in log.read_text().splitlines() if ln.strip()]
    log.unlink()
    summary = (proc.stdout.strip().splitlines() or [""])[-1]
    return {"mode": f"long ({minutes:g} min)" if minutes else "CI (fixed seed)", "exit": proc.returncode,
            "seconds": time.perf_counter() - t0, "counts": counts, "seeds": seeds, "summary": summary,
            "failures": [ln for ln in proc.stdout.splitlines() if ln.startswith("FAILED")]}


def write_markdown(res: dict, path: Path) -> None:
    minutes = next((f["mode"].split("(")[1].split()[0] for f in res.get("fuzz", []) if f["mode"].startswith("long")), None)
    lines = ["# Reliability", "", f"`python benchmarks/reliability.py --seeds {res['seeds']}"
             f"{f' --fuzz-minutes {minutes}' if minutes else ''}` on {res['cores']} cores, "
             f"{res['environment']['time']}. Test doubles from `tests/dummy.py`: {N_PROMPTS} prompts x {SAMPLES} "
             f"samples; generate sleeps {GEN_SLEEP}s per batch of 4, evaluate {EVAL_SLEEP}s per batch of 4 "
             "(chunks of 16 images).", "",
             "## SIGKILL at random points, then the same command again", "",
             "| phase | procs | killed | exit | expected | found | PNG files | duplicated | corrupt | identical to uninterrupted | work lost (s) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in res["kills"]:
        lines.append(f"| {r['phase']} | {r['processes']} | {r['kill']} | {r['exit']} | {r['expected']} | {r['found']} | "
                     f"{r['pngs']} | {r['duplicated']} | {r['corrupt']} | {'yes' if r['identical'] else 'NO'} | "
                     f"{r['lost_s']:.2f} |")
    lines += ["", "Work lost: images the killed process had made (or scored) but not saved, times the measured time "
              "per image. generate saves every image as it lands (loss: the batch in flight); evaluate saves every "
              "finished chunk (loss: at most one chunk per process). 'corrupt' counts images (or scores) whose "
              "bytes differ from the manifest (or from the uninterrupted run).", "",
              "## Bad inputs", "", "| input | exit | stderr lines | traceback | message |", "|---|---|---|---|---|"]
    for r in res["bad_inputs"]:
        msg = str(r["message"]).replace("|", "\\|")
        lines.append(f"| {r['input']} | {r['exit']} | {r['lines']} | {'YES' if r['traceback'] else 'no'} | {msg} |")
    lines += _fuzz_markdown(res.get("fuzz") or [])
    path.write_text("\n".join(lines) + "\n")


def _fuzz_markdown(runs: list[dict]) -> list[str]:
    lines = ["", "## Property-based fuzzing (`tests/test_fuzz.py`)", "",
             "Generated prompt files, prompt ids, option values, metric-option JSON, spec YAML and run-directory "
             "corruptions through the CLI in a scratch folder; invariants: exit 0 or 2, one stderr line and no "
             "traceback on 2, nothing outside `--out` changed, no file the tool did not write deleted, results "
             "correct or absent.", "",
             "| mode | examples | exit 0 | exit 2 | seeds | wall (s) | result |", "|---|---|---|---|---|---|---|"]
    for f in runs:
        c = f["counts"]
        seeds = sorted({s["seed"] for s in f["seeds"]})
        shown = ", ".join(map(str, seeds)) if len(seeds) <= 3 else f"{seeds[0]}..{seeds[-1]} ({len(seeds)})"
        result = "no failure" if f["exit"] == 0 else "FAILED: " + "; ".join(f["failures"])[:200]
        lines.append(f"| {f['mode']} | {c.get('examples', '?')} | {c.get('exit0', '?')} | {c.get('exit2', '?')} | "
                     f"{shown} | {f['seconds']:.0f} | {result} |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--fuzz-minutes", type=float, default=0,
                    help="also run the fuzz suite's long mode for this long (the CI mode always runs)")
    args = ap.parse_args()
    from cdm_bench.provenance import environment

    tmp = Path(tempfile.mkdtemp(prefix="reliability-"))
    try:
        res = {"seeds": args.seeds, "cores": os.cpu_count(), "kills": generate_kills(tmp, args.seeds)}
        res["kills"] += evaluate_kills(tmp, args.seeds)
        res["bad_inputs"] = bad_inputs(tmp)
        res["fuzz"] = [fuzz_suite(0)] + ([fuzz_suite(args.fuzz_minutes)] if args.fuzz_minutes else [])
        res["environment"] = environment()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "reliability.json").write_text(json.dumps(res, indent=2, default=str))
    write_markdown(res, RESULTS / "reliability.md")
    print((RESULTS / "reliability.md").read_text())


if __name__ == "__main__":
    main()
