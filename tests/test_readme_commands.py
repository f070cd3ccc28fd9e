"""Every shell command in the README is a test.

Each command of a ```bash block (continuation lines joined, comments dropped) must be listed in
:data:`COMMANDS` as either

* ``run``: executed in a scratch folder on this CPU, as written, at tiny size — the only
  changes are the ones :data:`TINY` states (2 processes for 8, the random tiny toy teacher or
  the tiny random SD3 pipeline for real weights, ``--limit`` on a public prompt set), or
* ``parse``: it needs GPUs, real weights or a user's own files: the launcher's and cdm-bench's
  own argument parsers must accept it (``make -n`` for make targets, ``bash -n`` for scripts).

A README command that is not listed fails (so a new one cannot go untested), and so does a
listed one that the README no longer has.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT / "tests" / "distill"))

#: synopsis placeholders -> values the parsers accept
PLACEHOLDERS = {"NAME_OR_YAML": "toy", "SET_OR_FILE": "toy-small", "DIR": "d", "K": "2", "B": "4", "S": "0",
                "JSON": "{}", "C": "16", "D": "cpu", "T": "float32", "NAME": "x", "SPEC.yaml": "s.yaml",
                "PATH": "python", "RECIPE": "cdm", "CHECKPOINT": "c", "RUN_DIR...": "r", "M,...": "m",
                "G,...": "g", "PIPELINE_DIR_OR_HUB_ID": "a/b", "PROMPT_SET": "toy-small", "$HEAD": "localhost",
                "key=value": "train.steps=1", "NAME[,INSTANCE=NAME...]": "toy_align", "W": "1", "SPEC": "s.yaml",
                "N|best": "best", "N": "2", "PATTERN": "x*", "E": "local"}


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    out = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = re.sub(r"(^|\s)#.*$", "", line).strip()
            if line and not line.startswith("..."):
                out.append(" ".join(line.split()))
    return out


RUN, PARSE = "run", "parse"
COMMANDS = {
    "make demo": PARSE, "make test": PARSE,
    "cdm-bench ls metrics|generators|prompts|recipes|benchmarks|sweeps": RUN,
    "cdm-bench generate --generator NAME_OR_YAML --prompts SET_OR_FILE --out DIR [--samples-per-prompt K] "
    "[--batch-size B] [--seed S]": PARSE,
    "cdm-bench evaluate --images DIR --metrics NAME[,INSTANCE=NAME...] [--metric-options JSON] [--out DIR] "
    "[--batch-size B] [--chunk-size C] [--device D] [--dtype T] [--num-workers W]": PARSE,
    "cdm-bench leaderboard RUN_DIR... --out DIR [--reference NAME] [--metrics M,...] [--generators G,...]": PARSE,
    "cdm-bench run SPEC.yaml [--out DIR] [--eval-python PATH]": PARSE,
    "cdm-bench demo --out DIR [--quick] [--ablations]": PARSE,
    "cdm-bench train RECIPE [--set key=value ...] [--out DIR] [--resume] [--then SPEC]": PARSE,
    "cdm-bench export CHECKPOINT --out DIR [--ema/--no-ema] [--step N|best] [--fuse]": PARSE,
    "cdm-bench sweep SPEC [--out DIR] [--jobs N] [--executor E] [--only PATTERN] "
    "[--dry-run] [--report]": PARSE,
    "cdm-bench ls benchmarks": RUN,
    "cdm-bench run --dry-run sd3-medium-paper": RUN,
    "torchrun --nproc_per_node 8 -m cdm_bench run recipes/benchmarks/sd3-medium-paper.yaml": PARSE,
    "torchrun --nproc_per_node 8 -m cdm_bench generate --generator my-student.yaml --prompts PROMPT_SET "
    "--samples-per-prompt 1 --out runs/my-student/PROMPT_SET": PARSE,
    "/path/to/eval-env/bin/cdm-bench evaluate --images runs/my-student/PROMPT_SET --metrics hpsv2,pickscore": PARSE,
    "cdm-bench leaderboard runs/ --out runs/leaderboard": RUN,
    "cdm-bench run my-benchmark.yaml --eval-python /path/to/eval-env/bin/python": PARSE,
    "torchrun --nproc_per_node 8 -m cdm_bench.cli.train sd3_medium/cdm --out runs/distill/sd3-cdm": RUN,
    "torchrun --nnodes 4 --nproc_per_node 8 --rdzv_backend c10d --rdzv_endpoint $HEAD:29500 --rdzv_id sd3-cdm -m "
    "cdm_bench.cli.train sd3_medium/cdm --out /shared/runs/sd3-cdm": PARSE,
    "accelerate launch --config_file recipes/accelerate_fsdp2.yaml --num_processes 8 -m cdm_bench.cli.train "
    "longcat/cdm --out runs/distill/longcat-cdm": PARSE,
    "torchrun --nproc_per_node 8 -m cdm_bench.cli.train sd3_medium/cdm --out runs/distill/sd3-cdm --resume": RUN,
    "cdm-bench export runs/distill/sd3-cdm --out runs/students/sd3-cdm [--copy-base]": RUN,
    "torchrun --nproc_per_node 2 -m cdm_bench.cli.train sd3_medium/cdm_lora --out runs/distill/sd3-cdm-lora": RUN,
    "cdm-bench export runs/distill/sd3-cdm-lora --out runs/students/sd3-cdm-lora [--fuse]": RUN,
    "cdm-bench generate --generator runs/students/sd3-cdm/generator.yaml --prompts pickapic --out "
    "runs/sd3-cdm/pickapic": RUN,
    "torchrun --nproc_per_node 2 -m cdm_bench.cli.train cdm --out runs/distill/cdm-2proc": RUN,
    "accelerate launch --config_file recipes/accelerate_fsdp2.yaml -m cdm_bench.cli.train cdm --out "
    "runs/distill/cdm-accelerate": RUN,
    "cdm-bench export runs/distill/cdm-2proc --out runs/students/cdm": RUN,
    "accelerate launch --multi_gpu --num_processes 2 -m cdm_bench generate --generator "
    "runs/students/cdm/generator.yaml --prompts toy-small --out runs/cdm-student/toy-small": RUN,
    "cdm-bench train dmd --set validate.every=50 --set 'validate.metrics=[toy_fid, toy_align]' --set "
    "validate.select.metric=toy_fid --out runs/distill/dmd-watched": RUN,
    "cdm-bench leaderboard runs/distill/dmd-watched/validation --out runs/distill/dmd-watched/report": RUN,
    "cdm-bench export runs/distill/dmd-watched --step best --out runs/students/dmd-best": RUN,
    "cdm-bench train dmd --out runs/distill/dmd-then --then recipes/benchmarks/toy-world.yaml": PARSE,
    "python benchmarks/world_validation.py --preset bench --cfg-sweep 2 3 4 6 --grid "
    "benchmarks/results/world_validation_bench.png --out benchmarks/results/world_validation_bench.csv --md "
    "benchmarks/results/world_validation_bench.md": PARSE,
    "benchmarks/world_sweep.sh": PARSE, "benchmarks/world_sweep.sh report": PARSE,
    "cdm-bench sweep recipes/sweeps/world.yaml --dry-run": RUN,
    "cdm-bench sweep recipes/sweeps/world.yaml --jobs 2": PARSE,
    "cdm-bench sweep recipes/sweeps/world.yaml --only 'cdm-*'": PARSE,
    "cdm-bench sweep recipes/sweeps/world.yaml --report": PARSE,
    "cdm-bench sweep my-sweep.yaml --executor slurm": PARSE,
    "cdm-bench sweep recipes/sweeps/world_b128.yaml": PARSE,
    "cdm-bench evaluate --images runs/sd3-cdm/pickapic --against runs/sd3-teacher/pickapic --metrics llm_judge "
    "--metric-options '{\"llm_judge\": {\"base_url\": \"http://localhost:8000/v1\", \"model\": "
    "\"Qwen/Qwen2.5-VL-72B-Instruct\", \"api_key_env\": \"OPENAI_API_KEY\"}}'": PARSE,
}


def test_every_readme_command_is_listed_and_every_listed_one_is_there():
    found = readme_commands()
    assert sorted(set(found) - set(COMMANDS)) == [], "README commands not in COMMANDS (list them as run or parse)"
    assert sorted(set(COMMANDS) - set(found)) == [], "COMMANDS the README no longer has"


# -- parse: the launchers' and cdm-bench's own parsers ---------------------------------------------------------
def _expand(cmd: str) -> list[list[str]]:
    """Placeholders filled; ``a|b`` alternatives and ``[optional]`` groups expanded (each optional
    group with and without, ``--a/--b`` as each form)."""
    words = shlex.split(cmd.replace("$HEAD", "localhost"))
    variants = [[]]
    i = 0
    while i < len(words):
        w = words[i]
        if w.startswith("["):
            group = [w[1:]]
            while not group[-1].endswith("]"):
                i += 1
                group.append(words[i])
            group[-1] = group[-1][:-1]
            if group[-1] == "...":
                group = group[:-1]
            forms = [[]] + ([[g] for g in group[0].split("/")] if "/" in group[0] and group[0].startswith("--")
                            and len(group) == 1 else [group])
            variants = [v + [PLACEHOLDERS.get(x, x) for x in f] for v in variants for f in forms]
        elif "|" in w:
            variants = [v + [alt] for v in variants for alt in w.split("|")]
        else:
            variants = [v + [PLACEHOLDERS.get(w, w)] for v in variants]
        i += 1
    return variants


def _parse_one(argv: list[str]) -> None:
    from cdm_bench.cli import build_parser

    if argv[0] == "make":
        subprocess.run(["make", "-n", *argv[1:]], cwd=ROOT, check=True, capture_output=True)
        return
    if argv[0].endswith(".sh"):
        subprocess.run(["bash", "-n", str(ROOT / argv[0])], check=True)
        return
    if argv[0] == "python":
        script = ROOT / argv[1]
        helptext = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True,
                                  check=True, cwd=ROOT).stdout
        assert all(a in helptext for a in argv[2:] if a.startswith("--")), argv
        return
    if argv[0] == "torchrun":
        from torch.distributed.run import get_args_parser

        args = get_args_parser().parse_args(argv[1:])
        assert args.module and args.training_script.startswith("cdm_bench"), argv
        rest = [args.training_script, *args.training_script_args]
    elif argv[:2] == ["accelerate", "launch"]:
        from accelerate.commands.launch import launch_command_parser

        args = launch_command_parser().parse_args(argv[2:])
        assert args.module, argv
        rest = [args.training_script, *args.training_script_args]
    else:
        assert argv[0].endswith("cdm-bench"), argv
        rest = ["cdm_bench", *argv[1:]]
    if rest[0] == "cdm_bench.cli.train":
        rest = ["cdm_bench", "train", *rest[1:]]
    assert rest[0] == "cdm_bench", argv
    build_parser().parse_args(rest[1:])  # SystemExit on anything the parser refuses


@pytest.mark.parametrize("cmd", sorted(c for c, how in COMMANDS.items() if how == PARSE))
def test_gpu_and_weights_commands_parse(cmd):
    for argv in _expand(cmd):
        _parse_one(argv)


# -- run: executed as written, at tiny size -----------------------------------------------------------------------
def _tiny_toy() -> list[str]:
    from distill_helpers import tiny_overrides

    return [x for k, v in tiny_overrides(steps=2, batch=4).items() for x in ("--set", f"{k}={json.dumps(v)}")]


def _tiny_sd3(model_dir: Path) -> list[str]:
    sets = {"model.pretrained": str(model_dir), "model.prompts": "smoke", "model.resolution": 32,
            "train.batch_size": 2, "train.steps": 1, "train.checkpoint_every": 1, "train.progress": False}
    return [x for k, v in sets.items() for x in ("--set", f"{k}={json.dumps(v) if not isinstance(v, str) else v}")]


#: the only changes a RUN command gets: (what is replaced, by what), or arguments appended
TINY = {
    "--nproc_per_node 8": "--nproc_per_node 2",
    "--prompts pickapic": "--prompts pickapic --limit 2",
}


def _argv(cmd: str, tiny_sd3_dir: Path) -> list[list[str]]:
    for old, new in TINY.items():
        cmd = cmd.replace(old, new)
    out = []
    for argv in _expand(cmd):
        if "cdm_bench.cli.train" in argv or argv[:2] == ["cdm-bench", "train"]:  # the model's weights -> tiny ones
            argv = argv + (_tiny_sd3(tiny_sd3_dir) if any(a.startswith("sd3_medium/") for a in argv) else _tiny_toy())
            if any(a.startswith("validate.") for a in argv):  # and the validation: the tiny scorer, 4 prompts
                argv += ["--set", "validate.prompts=toy-small", "--set", "validate.limit=4", "--set",
                         "validate.metrics=[{name: toy_fid, scorer: tiny}, {name: toy_align, scorer: tiny}]"]
        if argv[0] == "cdm-bench":
            argv = [str(BIN / "cdm-bench"), *argv[1:]]
        elif argv[0] == "torchrun":
            argv = [sys.executable, "-m", "torch.distributed.run", "--master_port", "29671", *argv[1:]]
        elif argv[:2] == ["accelerate", "launch"]:
            argv = [str(BIN / "accelerate"), "launch", "--main_process_port", "29672", *argv[2:]]
        out.append(argv)
    return out


def _prepare(scratch: Path) -> None:
    """A scratch copy of the repository's working directory (its recipes/ and prompts/ linked, a
    fresh runs/), and what the leaderboard command reads: two evaluated toy runs under runs/."""
    from dummy import MeanValue

    from cdm_bench.evaluate import evaluate
    from cdm_bench.generate import generate
    from cdm_bench.registry import METRICS

    METRICS.register("mean_value", MeanValue, overwrite=True)
    for folder in ("recipes", "prompts"):
        (scratch / folder).symlink_to(ROOT / folder)
    for name, shade in (("a", 0), ("b", 9)):
        run = generate({"generator": "dummy", "name": name, "shade": shade}, "smoke", scratch / "runs" / name / "smoke",
                       progress=False)
        evaluate(run, "mean_value", progress=False)


def test_cpu_commands_run_as_written(tiny_sd3_dir, tmp_path):
    """In README order (the export needs the training before it), in one scratch folder."""
    from cdm_bench.toy.artifacts import get_teacher

    get_teacher("tiny")
    _prepare(tmp_path)
    env = {**os.environ, "CDM_BENCH_HOME": str(ROOT)}
    ran = 0
    for cmd in (c for c in readme_commands() if COMMANDS.get(c) == RUN):
        for argv in _argv(cmd, tiny_sd3_dir):
            proc = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
            assert proc.returncode == 0, f"{cmd}\n{proc.stderr[-3000:]}"
            ran += 1
    assert (tmp_path / "runs" / "leaderboard" / "leaderboard.csv").is_file()
    assert json.loads((tmp_path / "runs" / "cdm-student" / "toy-small" / "generation.json").read_text()
                      )["provenance"]["nfe_measured"] == 4  # the exported student, at its trained NFE
    assert (tmp_path / "runs" / "sd3-cdm" / "pickapic" / "manifest.jsonl").is_file()
    assert ran >= 13
