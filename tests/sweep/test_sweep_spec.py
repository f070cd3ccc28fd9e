"""Sweep specs: cells = entries x grid x seeds, folder names from the overrides, one-line errors."""

from __future__ import annotations

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from cdm_bench.errors import SpecError
from cdm_bench.sweep.spec import SweepSpec

BASE = {"name": "s", "steps": 10, "cells": [{"recipe": "world/cdm", "grid": {"losses.ca.guidance": [4, 7]}}]}


def test_cells_are_the_grid_times_the_seeds_named_from_their_overrides():
    spec = SweepSpec.from_dict({**BASE, "seeds": [0, 1], "set": {"model.teacher": "bench"}})
    assert [c.name for c in spec.cells] == ["cdm-ca.guidance_4-seed_0", "cdm-ca.guidance_4-seed_1",
                                            "cdm-ca.guidance_7-seed_0", "cdm-ca.guidance_7-seed_1"]
    c = spec.cells[0]
    assert c.overrides(None) == ["model.teacher=bench", "losses.ca.guidance=4", "train.seed=0", "train.steps=10"]
    assert c.setting == "ca.guidance=4"


def test_validate_block_travels_as_one_yaml_override():
    val = {"every": 5, "prompts": "toy-small", "metrics": ["toy_fid"], "nfe": [1, {"steps": 2, "guidance": 1.5}]}
    spec = SweepSpec.from_dict({**BASE, "validate": val})
    key, _, text = spec.cells[0].overrides(spec.validate)[-1].partition("=")
    assert key == "validate" and yaml.safe_load(text) == val


@settings(max_examples=30, deadline=None)
@given(values=st.lists(st.one_of(st.integers(0, 100), st.floats(0.01, 100, allow_nan=False)), min_size=1,
                       max_size=4, unique_by=lambda v: float(v)),
       seeds=st.lists(st.integers(0, 1000), min_size=1, max_size=3, unique=True), extra=st.integers(1001, 2000))
def test_adding_a_seed_or_a_value_only_adds_cells(values, seeds, extra):
    entry = {"recipe": "world/dmd", "grid": {"losses.dmd2.real_guidance": values}, "seeds": seeds}
    before = {c.name: c for c in SweepSpec.from_dict({**BASE, "cells": [entry]}).cells}
    more = {**entry, "seeds": [*seeds, extra], "grid": {"losses.dmd2.real_guidance": [*values, 1234.5]}}
    after = {c.name: c for c in SweepSpec.from_dict({**BASE, "cells": [more]}).cells}
    assert len(before) == len(values) * len(seeds) and len(after) == (len(values) + 1) * (len(seeds) + 1)
    assert all(after[n] == c for n, c in before.items())


@settings(max_examples=50, deadline=None)
@given(values=st.lists(st.one_of(st.integers(-10**6, 10**6), st.floats(-1e6, 1e6, allow_nan=False),
                                 st.sampled_from([0, 0.0, -0.0, 1, 1.0, 0.1, 0.1 + 1e-12])), min_size=1, max_size=5))
def test_grid_values_are_distinct_cells_or_refused(values):
    """Values that are one number (99 and 99.0) are refused, never silently one cell; distinct
    numbers (however close) get distinct folders."""
    entry = {"recipe": "world/dmd", "grid": {"losses.dmd2.real_guidance": values}}
    if len({float(v) for v in values}) != len(values):
        with pytest.raises(SpecError, match="distinct values"):
            SweepSpec.from_dict({**BASE, "cells": [entry]})
        return
    cells = SweepSpec.from_dict({**BASE, "cells": [entry]}).cells
    assert len({c.name for c in cells}) == len(values)


def test_a_repeated_cell_is_kept_once_two_cells_with_one_name_are_refused():
    entry = BASE["cells"][0]
    assert len(SweepSpec.from_dict({**BASE, "cells": [entry, entry]}).cells) == 2
    other = {**entry, "set": {"train.batch_size": 4}}
    with pytest.raises(SpecError, match="give one a 'label'"):
        SweepSpec.from_dict({**BASE, "cells": [entry, other]})
    assert len(SweepSpec.from_dict({**BASE, "cells": [entry, {**other, "label": "b4"}]}).cells) == 4


@pytest.mark.parametrize("bad,match", [
    ({"cells": []}, "at least one"),
    ({"typo": 1}, "unknown keys"),
    ({"cells": [{"recipe": "world/cdm", "gird": {}}]}, "unknown keys"),
    ({"cells": [{"recipe": "world/cdm", "grid": {"losses.ca.guidance": []}}]}, "distinct values"),
    ({"cells": [{"recipe": "world/cdm", "grid": {"losses.ca.guidance": [1, 1]}}]}, "distinct values"),
    ({"cells": [{"recipe": "world/cdm", "set": {"train.seed": 3}}]}, "set by the sweep"),
    ({"cells": [{"recipe": "world/cdm", "label": "../x"}]}, "not safe"),
    ({"seeds": [0, 0]}, "twice"),
    ({"executor": "pbs"}, "executor"),
    ({"validate": {"every": 0, "metrics": ["toy_fid"]}}, "every"),
    ({"validate": {"evry": 1}}, "evry"),
    ({"reference": [{"label": "t", "generator": "toy"}]}, "generator spec"),
])
def test_bad_specs_are_one_line_errors(bad, match):
    with pytest.raises(SpecError, match=match) as err:
        SweepSpec.from_dict({**BASE, **bad})
    assert "\n" not in str(err.value)


def test_the_shipped_sweeps_parse():
    from cdm_bench.paths import recipes_dir

    world = SweepSpec.from_yaml(recipes_dir() / "sweeps" / "world.yaml")
    assert len(world.cells) == 33 and len(world.reference) == 27
    names = {c.name for c in world.cells}
    assert "cdm-ca.guidance_7-seed_2" in names and "dmd-dmd2.real_guidance_8-seed_1" in names
    b128 = SweepSpec.from_yaml(recipes_dir() / "sweeps" / "world_b128.yaml")
    assert {c.nproc for c in b128.cells} == {2} and all("train.batch_size=64" in c.overrides(None) for c in b128.cells)


def test_a_multi_process_cell_runs_under_torchrun_with_its_share_of_the_threads(tmp_path):
    from cdm_bench.sweep.run import cell_job

    spec = SweepSpec.from_dict({**BASE, "threads": 4, "cells": [{"recipe": "world/cdm", "nproc": 2}]})
    job = cell_job(tmp_path, spec.cells[0], spec, python="py")
    argv = job.commands[0]
    assert argv[:7] == ["py", "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m"]
    assert argv[-3:] == ["--out", str(tmp_path / "cells" / "cdm-seed_0"), "--resume"]
    assert job.env["OMP_NUM_THREADS"] == "2" and job.log == tmp_path / "logs" / "cdm-seed_0.log"


def test_executor_slurm_without_sbatch_is_one_line(tmp_path, monkeypatch):
    pytest.importorskip("submitit")
    from cdm_bench.errors import CdmBenchError
    from cdm_bench.sweep.run import cell_job, run_submitit

    monkeypatch.setenv("PATH", str(tmp_path))
    spec = SweepSpec.from_dict(BASE)
    with pytest.raises(CdmBenchError, match="sbatch, which is not on PATH"):
        run_submitit([cell_job(tmp_path, spec.cells[0], spec)], tmp_path, "slurm", {}, None)
