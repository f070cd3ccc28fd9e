"""A cached toy artefact is a function of its config: the thread count it trains with is the
config's, whatever else keeps the machine busy (the weights depend on it), and a cached artefact
trained with another count is not reused."""

import dataclasses
import json
from unittest import mock

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cdm_bench.toy import artifacts
from cdm_bench.toy import train as toy_train
from cdm_bench.toy.train import PRESETS, train_teacher


@settings(max_examples=40, deadline=None)
@given(requested=st.integers(1, 8), busy=st.floats(0.0, 8.0))
def test_training_threads_are_the_configs_whatever_the_load(requested, busy):
    with mock.patch.object(toy_train, "_busy_cores", return_value=busy):
        assert toy_train.training_threads(requested) == requested


def _weights(model) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def test_teacher_trained_on_a_busy_machine_equals_one_trained_on_an_idle_one(tmp_path):
    cfg = dataclasses.replace(PRESETS["tiny"][1], steps=6, threads=2)
    with mock.patch.object(toy_train, "_busy_cores", return_value=0.0):
        idle = _weights(train_teacher(cfg, tmp_path / "idle", progress=False))
    with mock.patch.object(toy_train, "_busy_cores", return_value=1.9):
        busy = _weights(train_teacher(cfg, tmp_path / "busy", progress=False))
    assert all(torch.equal(a, b) for a, b in zip(idle, busy))
    assert json.loads((tmp_path / "busy" / toy_train.TEACHER_LOG).read_text())["threads"] == 2
    # the comparison can fail: one thread gives other weights (the reason the count is fixed)
    one = _weights(train_teacher(dataclasses.replace(cfg, threads=1), tmp_path / "one", progress=False))
    assert any(not torch.equal(a, b) for a, b in zip(idle, one))


def test_cached_artefact_trained_with_another_thread_count_is_not_reused(tmp_path):
    cfg = dataclasses.replace(PRESETS["tiny"][1], threads=2)
    marker = "train_log.json"
    folder = tmp_path / "teacher-x"
    folder.mkdir()
    assert not artifacts._cached(folder, marker, cfg)  # nothing there
    for threads, reused in ((1, False), (2, True), (3, False), (None, True)):
        (folder / marker).write_text(json.dumps({"threads": threads} if threads is not None else {}))
        assert artifacts._cached(folder, marker, cfg) is reused, threads
    (folder / marker).write_text("{not json")
    assert not artifacts._cached(folder, marker, cfg)
