"""Evaluation after training: ``cdm-bench train RECIPE --then SPEC.yaml``.

Exports the selected student (``best/`` when the recipe's ``validate.select`` made one, else the
final EMA) into ``TRAIN_DIR/after/student``, adds it as a generator to the benchmark spec beside
the spec's own rows (teacher, baselines), and runs the spec (generate, evaluate, each metric in
its ``eval_python``, leaderboard) into ``TRAIN_DIR/after``; the leaderboard files land there.
Every part resumes: a killed run re-run continues where it stopped (generate and evaluate skip
finished work, the export is kept when it came from the same checkpoint), and a finished one
does nothing new.
"""

from __future__ import annotations

import json
from pathlib import Path

AFTER = "after"


def evaluate_after_training(train_dir, spec_path, checkpoint) -> Path | None:
    """Run ``spec_path`` with the run's student added; returns the leaderboard folder (rank 0)."""
    from cdm_bench import dist
    from cdm_bench.benchmark import BenchmarkSpec, run_benchmark
    from cdm_bench.distill.checkpoint import BEST

    train_dir = Path(train_dir)
    spec = BenchmarkSpec.from_yaml(spec_path)  # a bad spec fails before anything is exported
    source = train_dir / BEST if (train_dir / BEST / "state.pt").is_file() else Path(checkpoint)
    student = train_dir / AFTER / "student"
    rank, _ = dist.world()
    if rank == 0:
        _export_once(source, student)
    dist.barrier()
    spec.generators = list(spec.generators) + [str(student / "generator.yaml")]  # named <recipe>-step<N>-ema
    return run_benchmark(spec, train_dir / AFTER)


def _export_once(source: Path, student: Path) -> None:
    from cdm_bench.distill import export

    info = student / "distill.json"
    if info.is_file() and json.loads(info.read_text()).get("checkpoint") == str(source.resolve()) \
            and json.loads(info.read_text()).get("checkpoint_time") == _mtime(source):
        return  # exported from this very checkpoint already
    export(source, student)
    data = json.loads(info.read_text())
    data["checkpoint_time"] = _mtime(source)
    info.write_text(json.dumps(data, indent=1))


def _mtime(checkpoint: Path) -> float:
    return (Path(checkpoint) / "state.pt").stat().st_mtime
