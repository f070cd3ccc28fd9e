"""Property-based fuzzing of the command line (hypothesis): generated prompt files, prompt ids,
option values, metric-option JSON, spec YAML and run-directory corruptions, each run through
``cdm-bench`` in a scratch folder. Invariants, for every input:

1. the exit code is 0 or 2;
2. on 2, stderr is one line and no traceback (anything else escaping ``main`` is a failure);
3. nothing outside ``--out`` is created, changed or deleted (a snapshot of the scratch folder);
4. no file the tool did not write is deleted or changed (sentinel files placed inside ``--out``);
5. results are correct or absent: every image in a manifest is the generator's image for its
   (prompt, seed), and every score is the metric of that image.

In CI each property runs a fixed number of examples from a fixed seed (``FUZZ_SEED``, default
0; ``FUZZ_EXAMPLES``, default 20). ``RUN_FUZZ=1`` is the long mode: each property runs batches of
examples from new seeds for ``FUZZ_MINUTES`` (default 20) minutes in all, and every seed used is
appended to ``$FUZZ_LOG`` (JSON lines) when set.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import string
import time
from pathlib import Path

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from cdm_bench.cli import main  # noqa: E402

LONG = bool(os.environ.get("RUN_FUZZ"))
if LONG:  # an input that makes cdm-bench allocate without bound fails as a MemoryError (with its
    import resource  # example) instead of the kernel killing the whole run

    _GIB = int(os.environ.get("FUZZ_MEMORY_GIB", "10"))
    resource.setrlimit(resource.RLIMIT_AS, (_GIB << 30, resource.getrlimit(resource.RLIMIT_AS)[1]))
BASE_SEED = int(os.environ.get("FUZZ_SEED", "0"))
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "20"))
PROPERTIES = 6  # the long mode's minutes are shared by the properties below
LONG_SECONDS = float(os.environ.get("FUZZ_MINUTES", "20")) * 60 / PROPERTIES
COUNTS = {"examples": 0, "exit0": 0, "exit2": 0}


def check_property(strategy, body, name: str) -> None:
    """Run ``body(value)`` for values of ``strategy``: bounded in CI, time-boxed in the long mode."""
    def once(seed_value: int, n: int) -> None:
        wrapped = hypothesis.seed(seed_value)(settings(
            max_examples=n, deadline=None, database=None, derandomize=False, print_blob=True,
            suppress_health_check=list(HealthCheck))(given(strategy)(body)))
        wrapped()
        if os.environ.get("FUZZ_LOG"):
            with open(os.environ["FUZZ_LOG"], "a") as f:
                f.write(json.dumps({"property": name, "seed": seed_value, "examples": n}) + "\n")

    if not LONG:
        once(BASE_SEED, EXAMPLES)
        return
    stop, seed_value = time.monotonic() + LONG_SECONDS, BASE_SEED
    while time.monotonic() < stop:
        once(seed_value, 50)
        seed_value += 1


# -- the harness: one CLI call in a scratch folder, and the invariants ---------------------------------------
class Scratch:
    """``root/in`` holds inputs, ``root/out`` is ``--out``, the working directory is deep inside
    ``root`` (so a relative ``../../x`` escape still lands where the snapshot sees it)."""

    def __init__(self, root: Path):
        self.root = root
        shutil.rmtree(root, ignore_errors=True)
        (root / "in").mkdir(parents=True)
        self.cwd = root / "w" / "x" / "y" / "z"
        self.cwd.mkdir(parents=True)
        self.out = root / "out"

    def snapshot_outside(self) -> dict:
        return {str(p.relative_to(self.root)): (p.read_bytes() if p.is_file() else None)
                for p in sorted(self.root.rglob("*")) if self.out not in (p, *p.parents)}

    def cli(self, argv: list[str], sentinels: dict[str, bytes] | None = None) -> tuple[int, str]:
        sentinels = sentinels or {}
        for rel, data in sentinels.items():
            (self.out / rel).parent.mkdir(parents=True, exist_ok=True)
            (self.out / rel).write_bytes(data)
        before = self.snapshot_outside()
        tqdm_was = os.environ.get("TQDM_DISABLE")
        os.environ["TQDM_DISABLE"] = "1"  # progress bars are not error lines (restored below)
        err = io.StringIO()
        old = os.getcwd()
        os.chdir(self.cwd)
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                try:
                    code = main(argv)
                except SystemExit as exc:  # argparse
                    code = exc.code
        finally:
            os.chdir(old)
            if tqdm_was is None:
                os.environ.pop("TQDM_DISABLE", None)
            else:
                os.environ["TQDM_DISABLE"] = tqdm_was
        text = err.getvalue().strip()
        assert code in (0, 2), (argv, code, text)
        if code == 2:
            assert len(text.splitlines()) == 1 and "Traceback" not in text, (argv, text)
        assert self.snapshot_outside() == before, f"{argv}: changed something outside --out"
        for rel, data in sentinels.items():
            assert (self.out / rel).read_bytes() == data, f"{argv}: changed or deleted {rel}"
        COUNTS["examples"] += 1
        COUNTS[f"exit{code}"] += 1
        return code, text


def check_run(out: Path) -> None:
    """A finished run's manifest: each record's PNG is the generator's image for its seed (the
    generator rebuilt from the run's own identity)."""
    from dummy import DummyGenerator

    from cdm_bench.rundir import RunDir

    run = RunDir(out)
    spec = run.read_identity()["generator"]
    gen = DummyGenerator(shade=spec["shade"], size=spec["size"])
    recs = run.read_manifest()
    for r, img in zip(recs, run.load_images(recs)):
        assert np.array_equal(img, gen.generate([r["prompt"]], [r["seed"]])[0]), r


def check_scores(out: Path) -> None:
    """Every mean_value score is the mean of its image (correct or absent)."""
    import pandas as pd

    from cdm_bench.rundir import RunDir

    path = out / "scores.parquet"
    if not path.exists():
        return
    scores = pd.read_parquet(path)
    if "mean_value" not in scores:
        return
    run = RunDir(out)
    recs = {(r["prompt_id"], r["k"]): r for r in run.read_manifest()}
    for _, row in scores.iterrows():
        img = run.load_images([recs[(row["prompt_id"], row["k"])]])[0]
        assert np.isclose(row["mean_value"], img.astype(np.float64).mean()), row


@pytest.fixture(scope="module", autouse=True)
def _register():
    from dummy import MeanValue

    from cdm_bench.registry import METRICS

    METRICS.register("mean_value", MeanValue, overwrite=True)
    yield
    print(f"\nFUZZ_COUNTS {json.dumps(COUNTS)}")  # read by benchmarks/reliability.py (pytest -s)


@pytest.fixture
def scratch(tmp_path_factory):
    base = tmp_path_factory.mktemp("fuzz")
    counter = iter(range(10**9))
    return lambda: Scratch(base / f"s{next(counter)}")


# -- strategies ------------------------------------------------------------------------------------------------
nasty_text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=30)
name_like = st.one_of(
    st.text(alphabet=string.ascii_letters + string.digits + "_.-@+:/\\ \n\t\x00", min_size=0, max_size=12),
    st.sampled_from(["..", ".", "../../escape", "/abs/escape", "a/../b", "con", "NUL.txt", "x" * 300, "sha256",
                     "prompt_id", "-rf", "ok_name", "a\n", "\ufeffbom"]),
    nasty_text)
json_values = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(),
                                     nasty_text), lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(nasty_text, inner, max_size=3), max_leaves=8)
int_like = st.one_of(st.integers(-2**64, 2**64), st.sampled_from(["0", "-1", "1e3", "abc", "", "9" * 40, "1.5", " 2"]))


@st.composite
def prompt_files(draw):
    """(file name, bytes) of a prompt file in one of the formats, hostile or not."""
    fmt = draw(st.sampled_from(["txt", "jsonl", "csv", "tsv"]))
    bom = draw(st.booleans())
    n = draw(st.integers(0, 5))
    if fmt == "txt":
        lines = [draw(st.one_of(nasty_text, st.just("a prompt"))) for _ in range(n)]
        body = "\n".join(lines) + draw(st.sampled_from(["", "\n", "\r\n"]))
    elif fmt == "jsonl":
        rows = [draw(st.one_of(json_values, st.fixed_dictionaries(
            {"prompt": st.one_of(nasty_text, st.just("a prompt"), json_values)},
            optional={"id": st.one_of(name_like, json_values), "category": json_values}))) for _ in range(n)]
        body = "\n".join(json.dumps(r) for r in rows) + "\n"
    else:
        sep = "," if fmt == "csv" else "\t"
        cols = draw(st.sampled_from([["id", "prompt"], ["prompt"], ["prompt", "extra"], ["text"]]))
        rows = [[draw(st.one_of(name_like, nasty_text)).replace(sep, " ") for _ in cols] for _ in range(n)]
        body = "\n".join(sep.join(r) for r in [cols] + rows) + "\n"
    data = body.encode("utf-8", "surrogatepass")
    if draw(st.booleans()):
        data = data.replace(b"a", b"\xe9", 1)  # not UTF-8, sometimes
    return f"prompts.{fmt}", (b"\xef\xbb\xbf" if bom else b"") + data


# -- properties -------------------------------------------------------------------------------------------------
def _generate_argv(s: Scratch, prompts: str, extra=()) -> list[str]:
    return ["generate", "--generator", "dummy", "--prompts", prompts, "--out", str(s.out), *extra]


def test_fuzz_prompt_files(scratch):
    def body(case):
        name, data = case
        s = scratch()
        (s.root / "in" / name).write_bytes(data)
        code, _ = s.cli(_generate_argv(s, str(s.root / "in" / name), ["--samples-per-prompt", "2"]))
        if code == 0:
            check_run(s.out)

    check_property(prompt_files(), body, "prompt_files")


def test_fuzz_generate_options(scratch):
    options = st.lists(st.tuples(st.sampled_from(["--samples-per-prompt", "--batch-size", "--seed", "--limit"]),
                                 int_like), max_size=3)

    def body(opts):
        s = scratch()
        code, _ = s.cli(_generate_argv(s, "smoke", [x for k, v in opts for x in (k, str(v))]))
        if code == 0:
            check_run(s.out)

    check_property(options, body, "generate_options")


@pytest.fixture(scope="module")
def template_run(tmp_path_factory):
    """A finished, evaluated run to copy (and corrupt) in each example."""
    from cdm_bench.evaluate import evaluate
    from cdm_bench.generate import generate
    from cdm_bench.prompts import PromptSet

    out = tmp_path_factory.mktemp("template") / "run"
    ps = PromptSet("f", "1", [{"id": f"p{i}", "prompt": f"prompt {i}"} for i in range(3)])
    generate({"generator": "dummy", "name": "d"}, ps, out, 2, progress=False)
    evaluate(out, "mean_value", progress=False)
    return out


def test_fuzz_metric_names_and_options(scratch, template_run):
    metrics = st.lists(st.one_of(st.just("mean_value"), st.builds(lambda a: f"{a}=mean_value", name_like), name_like),
                       min_size=1, max_size=3).map(",".join)
    options = st.one_of(st.none(), json_values.map(json.dumps),
                        st.dictionaries(name_like, st.dictionaries(st.sampled_from(["scale", "batch_size", "device",
                                                                                    "dtype", "bogus"]), json_values,
                                                                   max_size=2), max_size=2).map(json.dumps),
                        st.sampled_from(["{", "[" * 5000, '{"mean_value": ' + "[" * 3000 + "]" * 3000 + "}"]))

    def body(case):
        names, opts = case
        s = scratch()
        shutil.copytree(template_run, s.out)
        argv = ["evaluate", "--images", str(s.out), "--metrics", names] + (["--metric-options", opts] if opts else [])
        s.cli(argv, {"mine.txt": b"user file"})
        check_scores(s.out)

    check_property(st.tuples(metrics, options), body, "metric_names_and_options")


@st.composite
def yaml_specs(draw):
    """YAML text: a generator or benchmark spec with hostile values, sometimes broken or bombs."""
    kind = draw(st.sampled_from(["generator", "benchmark", "raw", "bomb"]))
    if kind == "raw":
        return draw(st.text(max_size=60))
    if kind == "bomb":
        depth = draw(st.integers(2, 9))
        lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
        lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, depth)]
        return "\n".join(lines) + f"\ngenerator: *a{depth - 1}\n" if draw(st.booleans()) else \
            "generator: " + "[" * draw(st.integers(10, 30000)) + "\n"
    import yaml

    gen = {"generator": draw(st.sampled_from(["dummy", "dummy", "toyy", "os:system", "dummy:DummyGenerator"])),
           **draw(st.dictionaries(st.sampled_from(["name", "shade", "size", "recipe", "bogus"]),
                                  st.one_of(name_like, st.integers(-5, 300), json_values), max_size=3))}
    if kind == "generator":
        return yaml.safe_dump(gen)
    spec = {"generators": [gen], "prompts": draw(st.sampled_from([["smoke"], [{"set": "smoke", "limit": 2}], "smoke",
                                                                  [{"set": "smoke", "limit": -1}]])),
            "metrics": draw(st.sampled_from([["mean_value"], [{"name": "mean_value", "alias": "../x"}], []])),
            **draw(st.dictionaries(st.sampled_from(["name", "seed", "samples_per_prompt", "eval_python", "limit"]),
                                   st.one_of(name_like, int_like), max_size=2))}
    return yaml.safe_dump(spec)


def test_fuzz_spec_yaml(scratch):
    def body(text):
        s = scratch()
        spec = s.root / "in" / "spec.yaml"
        spec.write_text(text, encoding="utf-8", errors="surrogatepass")
        code, _ = s.cli(["generate", "--generator", str(spec), "--prompts", "smoke", "--limit", "2",
                         "--out", str(s.out)])
        if code == 0:
            check_run(s.out)
        s2 = scratch()
        s2.cli(["run", str(spec), "--out", str(s2.out)])

    check_property(yaml_specs(), body, "spec_yaml")


CORRUPTIONS = ["truncate", "append_copy", "junk_bytes", "delete", "json_of_other_shape", "empty"]
TARGETS = ["manifest.jsonl", "generation.json", "results.json", "scores.parquet", "images/p0_0.png",
           "images/p1_1.png", "parts/part-0-of-1.jsonl", ".lock"]


def _corrupt(root: Path, target: str, how: str, data) -> None:
    path = root / target
    path.parent.mkdir(parents=True, exist_ok=True)
    old = path.read_bytes() if path.is_file() else b""
    new = {"truncate": old[: len(old) // 2], "append_copy": old + old, "junk_bytes": data, "delete": None,
           "json_of_other_shape": json.dumps(["not", {"what": "we wrote"}]).encode(), "empty": b""}[how]
    if new is None:
        path.unlink(missing_ok=True)
    else:
        path.write_bytes(new)


def test_fuzz_run_directory_corruptions(scratch, template_run):
    case = st.tuples(st.lists(st.tuples(st.sampled_from(TARGETS), st.sampled_from(CORRUPTIONS),
                                        st.binary(max_size=40)), min_size=1, max_size=3),
                     st.sampled_from(["evaluate", "evaluate-force", "generate", "generate-overwrite", "leaderboard"]))

    def body(c):
        corruptions, command = c
        s = scratch()
        shutil.copytree(template_run, s.out)
        for target, how, data in corruptions:
            _corrupt(s.out, target, how, data)
        sentinels = {"notes.txt": b"mine", "images/mine.png": b"not a png"}
        ps = s.root / "in" / "p.txt"
        ps.write_text("".join(f"prompt {i}\n" for i in range(3)))
        argv = {"evaluate": ["evaluate", "--images", str(s.out), "--metrics", "mean_value"],
                "evaluate-force": ["evaluate", "--images", str(s.out), "--metrics", "mean_value", "--force"],
                "generate": _generate_argv(s, str(ps), ["--samples-per-prompt", "2"]),
                "generate-overwrite": _generate_argv(s, str(ps), ["--samples-per-prompt", "2", "--overwrite"]),
                "leaderboard": ["leaderboard", str(s.out), "--out", str(s.out / "lb")]}[command]
        code, _ = s.cli(argv, sentinels)
        if code == 0 and command.startswith("generate"):
            check_run(s.out)
        if code == 0 and command.startswith("evaluate"):
            check_scores(s.out)

    check_property(case, body, "run_directory_corruptions")


def test_fuzz_prompt_ids_through_a_spec(scratch):
    rows = st.lists(st.fixed_dictionaries({"id": name_like, "prompt": st.just("a prompt")}), min_size=1, max_size=4)

    def body(r):
        s = scratch()
        spec = s.root / "in" / "set.yaml"
        spec.write_text(json.dumps({"name": "s", "source": {"type": "inline", "prompts": r}}))
        code, _ = s.cli(_generate_argv(s, str(spec)))
        if code == 0:
            check_run(s.out)

    check_property(rows, body, "prompt_ids")

