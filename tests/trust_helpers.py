"""Helpers of the reliability tests (tests/test_trust*.py): a dummy run, a folder snapshot, and
the one-line-error check."""

from __future__ import annotations

from cdm_bench.generate import generate
from cdm_bench.prompts import PromptSet


def ps(n=4, name="t"):
    return PromptSet(name, "1", [{"id": f"p{i}", "prompt": f"prompt {i}"} for i in range(n)])


def gen(out, samples=1, seed=0, overwrite=False, **spec):
    return generate({"generator": "dummy", "name": "d", **spec}, ps(), out, samples, seed=seed, overwrite=overwrite,
                    progress=False)


def tree(root):
    """Every path under ``root`` with its bytes (folders as None): a snapshot to compare."""
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


def one_line(capsys, code):
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err
