import subprocess
import sys

import pytest

from cdm_bench.registry import GENERATORS, METRICS, PROMPTS, Registry, UnknownNameError


def test_unknown_name_suggests_close_match():
    with pytest.raises(UnknownNameError, match=r"did you mean 'toy_fid'"):
        METRICS.get("toy_fdi")
    with pytest.raises(UnknownNameError, match=r"unknown generator 'nope'"):
        GENERATORS.get("nope")
    with pytest.raises(UnknownNameError, match="did you mean 'toy-small'"):
        PROMPTS.get("toy-smal")


def test_lazy_targets_are_not_imported_until_used():
    reg = Registry("thing")
    reg.register("json", "json:dumps")
    assert not reg.entry("json").is_loaded
    assert reg.get("json")({"a": 1}) == '{"a": 1}'
    assert reg.entry("json").is_loaded


def test_conflicting_registration_is_an_error():
    reg = Registry("thing")
    reg.register("a", "json:dumps")
    with pytest.raises(ValueError, match="already registered"):
        reg.register("a", "json:loads")
    reg.register("a", "json:loads", overwrite=True)
    assert reg.get("a").__name__ == "loads"


def test_module_path_is_accepted_as_a_name():
    assert GENERATORS.get("dummy:DummyGenerator").__name__ == "DummyGenerator"


def test_ls_lists_without_importing_heavy_libraries():
    code = ("import sys; from cdm_bench.cli import main; main(['ls', 'metrics']); main(['ls', 'generators']);"
            "heavy = [m for m in ('torch', 'diffusers', 'transformers', 'metrics.toy') if m in sys.modules];"
            "print('HEAVY', heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "toy_fid\tmetrics.toy:ToyFID" in out
    names = [ln.split("\t")[0] for ln in out.splitlines() if "\t" in ln]
    assert "toy_align" in names and "clipscore" in names and names[:len(names) // 2] == sorted(names[:len(names) // 2])
    assert "HEAVY []" in out


def test_entry_points_are_discovered(monkeypatch):
    from importlib.metadata import EntryPoint

    import cdm_bench.registry as registry

    eps = [EntryPoint("third_party", "json:dumps", "cdm_bench.metrics")]
    monkeypatch.setattr(registry, "entry_points", lambda group: eps if group == "cdm_bench.metrics" else [])
    reg = Registry("metric", "cdm_bench.metrics")
    assert reg.names() == ["third_party"]
    assert reg.get("third_party").__name__ == "dumps"
