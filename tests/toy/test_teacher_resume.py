"""The toy teacher's training resumes exactly: a run killed and resumed from its saved state
gives the same weights as an uninterrupted one; the bench preset is sampled with shift 3."""

import dataclasses

import pytest
import torch

from cdm_bench.toy.train import PRESETS, _TeacherRun, preset_shift, train_teacher


def _cfg():
    return dataclasses.replace(PRESETS["tiny"][1], steps=6, threads=1)


def test_resumed_teacher_training_equals_an_uninterrupted_run(tmp_path):
    cfg = _cfg()
    whole = train_teacher(cfg, tmp_path / "whole", progress=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as train_teacher does for threads=1
    try:
        run = _TeacherRun(cfg, tmp_path / "resume")  # "killed" after 3 steps, its state saved
        run.model.train()
        for _ in range(3):
            run.one_step()
        run.save()
    finally:
        torch.set_num_threads(threads)
    resumed = train_teacher(cfg, tmp_path / "resumed", progress=False, resume_dir=tmp_path / "resume")
    a, b = whole.state_dict(), resumed.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    moved = train_teacher(dataclasses.replace(cfg, steps=3), tmp_path / "short", progress=False).state_dict()
    assert any(not torch.equal(a[k], moved[k]) for k in a)  # the comparison can fail


def test_resume_state_of_another_config_is_refused(tmp_path):
    run = _TeacherRun(_cfg(), tmp_path / "resume")
    run.one_step()
    run.save()
    with pytest.raises(ValueError, match="another teacher config"):
        _TeacherRun(dataclasses.replace(_cfg(), lr=1e-3), tmp_path / "resume")


def test_bench_preset_is_sampled_with_shift_3():
    assert preset_shift("bench") == 3.0 and preset_shift("demo") == 1.0
    assert PRESETS["bench"][0] == PRESETS["demo"][0]  # same scorer: numbers comparable with demo's
