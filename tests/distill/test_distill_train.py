"""Training runs on a tiny random teacher (seconds): exact resume, refusals, NaN stop, logging,
export, CLI."""

import json
from dataclasses import dataclass

import pytest
import torch
from distill_helpers import tiny_overrides

from cdm_bench.distill import export, train
from cdm_bench.distill.checkpoint import ResumeError, list_checkpoints, load_state
from cdm_bench.distill.losses import LOSSES, StudentLoss
from cdm_bench.distill.losses.base import Plan
from cdm_bench.distill.trainer import NonFiniteLossError


def _assert_same_weights(a, b, tol=1e-6):
    for key in ("student", "ema", "fake"):
        assert a[key].keys() == b[key].keys()
        for name in a[key]:
            torch.testing.assert_close(a[key][name], b[key][name], atol=tol, rtol=0,
                                       msg=lambda m: f"{key}.{name}: {m}")


def test_resume_reproduces_an_uninterrupted_run(tmp_path):
    straight = train("cdm", tiny_overrides(steps=4), tmp_path / "a")
    half = train("cdm", tiny_overrides(steps=2), tmp_path / "b")
    assert half.name == "checkpoint-000002"
    resumed = train("cdm", tiny_overrides(steps=4), tmp_path / "b", resume=True)
    assert resumed.name == straight.name == "checkpoint-000004"
    a, b = load_state(straight), load_state(resumed)
    assert a["iteration"] == b["iteration"] == 8  # update_ratio 2: 2 fake steps per student step
    _assert_same_weights(a, b)
    for opt in ("optim_student", "optim_fake"):
        for name, st in a[opt]["state"].items():
            torch.testing.assert_close(st["exp_avg_sq"], b[opt]["state"][name]["exp_avg_sq"], atol=1e-9, rtol=0)
    # the student, the fake teacher and the EMA all moved away from the teacher
    assert any((a["student"][k] - a["ema"][k]).abs().max() > 0 for k in a["student"])
    # every loss term, the fake loss and both grad norms are logged for every student step
    lines = [json.loads(x) for x in (tmp_path / "a" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2, 3, 4]
    for key in ("loss/ca", "loss/dm", "loss/cdm_offtraj", "loss/total", "loss/fake",
                "grad_norm/student", "grad_norm/fake", "evals", "step_time", "schedule/length"):
        assert all(key in r for r in lines), key


def test_refuses_overwrite_and_resume_with_a_different_recipe(tmp_path):
    train("ddmd", tiny_overrides(steps=1), tmp_path)
    with pytest.raises(ResumeError, match="already holds a run"):
        train("ddmd", tiny_overrides(steps=1), tmp_path)
    with pytest.raises(ResumeError, match=r"different recipe; changed: .*losses.ca.guidance: 1.0 -> 3.0"):
        train("ddmd", tiny_overrides(steps=2, **{"losses.ca.guidance": 3.0}), tmp_path, resume=True)
    with pytest.raises(ResumeError, match=r"different recipe; changed: .*name: 'ddmd' -> 'cdm'"):
        train("cdm", tiny_overrides(steps=2), tmp_path, resume=True)


def test_resume_with_other_teacher_weights_is_refused_and_checkpoints_name_the_teacher(tmp_path):
    from distill_helpers import TINY_MODEL

    from cdm_bench.distill.checkpoint import load_meta
    from cdm_bench.generator import module_sha256
    from cdm_bench.toy.adapter import random_toy_model

    folder = tmp_path / "teacher"
    random_toy_model(TINY_MODEL, seed=0).save_pretrained(str(folder))
    over = {**tiny_overrides(steps=1), "model.teacher": str(folder)}
    over.pop("model.model_config")
    ckpt = train("ddmd", over, tmp_path / "run")
    _, meta = load_meta(ckpt)
    assert meta["teacher_sha256"] == module_sha256(random_toy_model(TINY_MODEL, seed=0))
    assert meta["torch"] == torch.__version__
    random_toy_model(TINY_MODEL, seed=1).save_pretrained(str(folder))  # same recipe, other weights
    with pytest.raises(ResumeError, match=rf"teacher weights sha256 {meta['teacher_sha256'][:12]}"):
        train("ddmd", {**over, "train.steps": 2}, tmp_path / "run", resume=True)
    random_toy_model(TINY_MODEL, seed=0).save_pretrained(str(folder))  # the original again: resumes
    assert train("ddmd", {**over, "train.steps": 2}, tmp_path / "run", resume=True).name == "checkpoint-000002"


_calls = {"n": 0}


@dataclass
class _NaNParams:
    at_call: int = 3


class _NaNAtCall(StudentLoss):
    """A loss that turns NaN on its ``at_call``-th evaluation (student step ``at_call``)."""

    Params = _NaNParams

    def plan(self, x0_sg, sigma_in, generator):
        return Plan()

    def forward(self, x0_student, plan, answers):
        _calls["n"] += 1
        bad = float("nan") if _calls["n"] >= self.params.at_call else 0.0
        return (x0_student * 0).mean() + bad, {}


def test_nan_loss_stops_with_step_and_term_and_keeps_last_good_checkpoint(tmp_path):
    LOSSES.register("test_nan", _NaNAtCall, overwrite=True)
    _calls["n"] = 0
    with pytest.raises(NonFiniteLossError, match=r"student step 3 .*loss/test_nan = nan.*checkpoint-000002"):
        train("ddmd", tiny_overrides(steps=5, **{"losses.test_nan": {"at_call": 3}}), tmp_path)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-000001", "checkpoint-000002"]
    for tensor in load_state(tmp_path / "checkpoint-000002")["student"].values():
        assert torch.isfinite(tensor).all()


def test_export_ema_and_raw_student(tmp_path, monkeypatch):
    import yaml

    from cdm_bench.generate import generate
    from cdm_bench.toy.model import ToyFlowModel

    ckpt = train("dmd", tiny_overrides(steps=2, **{"train.tensorboard": True}), tmp_path / "run")
    assert list((tmp_path / "run" / "tensorboard").iterdir())  # event files
    state = load_state(ckpt)
    for ema, key in ((True, "ema"), (False, "student")):
        out = export(tmp_path / "run", tmp_path / key, ema=ema)  # a run dir -> its latest checkpoint
        model = ToyFlowModel.from_pretrained(str(out))
        for name, tensor in model.state_dict().items():
            torch.testing.assert_close(tensor, state[key][name])
        spec = yaml.safe_load((out / "generator.yaml").read_text())
        assert spec["generator"] == "toy" and spec["model"] == "."  # relative to the yaml's folder
        assert (spec["nfe"], spec["guidance"], spec["sigmas"], spec["recipe"]) == (4, 1.0, [1.0, 0.75, 0.5, 0.25],
                                                                                 "dmd")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the export generates at its trained NFE from any working directory
    run = generate(str(tmp_path / "ema" / "generator.yaml"), "toy-small", "gen", limit=3, progress=False)
    ident = json.loads((run / "generation.json").read_text())
    assert ident["provenance"]["nfe_measured"] == 4 and ident["generator"]["nfe_total"] == 4
    assert ident["generator"]["recipe"] == "dmd" and ident["generator"]["model"] == str((tmp_path / "ema").resolve())
    # the generator registry loads the exported directory by path
    from cdm_bench.generator import build_generator

    gen, full = build_generator({"generator": "toy", "model": str(tmp_path / "ema"), "nfe": 2, "preset": "tiny"})
    images = gen.generate(["a red circle", ""], [0, 1])
    assert images.shape == (2, 32, 32, 3) and images.dtype.name == "uint8"


def test_bf16_and_gradient_checkpointing_run(tmp_path):
    ckpt = train("cdm", tiny_overrides(steps=1, **{"train.precision": "bf16",
                                                   "train.gradient_checkpointing": True}), tmp_path)
    assert all(torch.isfinite(t).all() for t in load_state(ckpt)["student"].values())


def test_cli_train_and_export(tmp_path, capsys):
    from cdm_bench.cli import export as export_cli
    from cdm_bench.cli import train as train_cli

    sets = []
    for key, value in tiny_overrides(steps=1).items():
        sets += ["--set", f"{key}={json.dumps(value)}"]
    assert train_cli.main(["ddmd", *sets, "--out", str(tmp_path / "run")]) == 0
    assert "final checkpoint" in capsys.readouterr().out
    assert train_cli.main(["ddmd", "--set", "train.update_ratio=0", "--out", str(tmp_path / "x")]) == 2
    assert "train.update_ratio must be >= 1" in capsys.readouterr().err
    import argparse
    parser = argparse.ArgumentParser()
    export_cli.add_parser(parser.add_subparsers())
    args = parser.parse_args(["export", str(tmp_path / "run"), "--out", str(tmp_path / "student"), "--no-ema"])
    assert args.func(args) == 0 and (tmp_path / "student" / "generator.yaml").is_file()
