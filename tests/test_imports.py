"""The package's import structure: no import circle, and a core that knows nothing of the toy
world or the distillation backend (walked with ``ast``: every import statement counts, also
those inside functions)."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("cdm_bench", "metrics")
CORE = ("cdm_bench.registry", "cdm_bench.prompts", "cdm_bench.metric", "cdm_bench.generator",
        "cdm_bench.rundir", "cdm_bench.errors", "cdm_bench.evaluate", "cdm_bench.leaderboard")


def _modules() -> dict[str, Path]:
    mods = {}
    for pkg in PACKAGES:
        for f in (ROOT / pkg).rglob("*.py"):
            parts = list(f.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            mods[".".join(parts)] = f
    return mods


def import_graph() -> dict[str, set[str]]:
    """module -> the package modules it imports (``from pkg import submodule`` counts the
    submodule, not the package's ``__init__``)."""
    mods, graph = _modules(), {}
    for name, path in mods.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                mod = node.module or ""
                if node.level:
                    base = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                    mod = ".".join(base[: len(base) - node.level + 1] + ([mod] if mod else []))
                targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in mods else mod for a in node.names]
            else:
                continue
            for t in targets:
                while t and t not in mods:
                    t = t.rpartition(".")[0]
                if t and t != name:
                    deps.add(t)
        graph[name] = deps
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_import_circle():
    assert cycles(import_graph()) == []


def test_the_detector_finds_a_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_core_imports_neither_toy_nor_distill():
    graph = import_graph()
    for mod in CORE:
        bad = {d for d in graph[mod] if d.startswith(("cdm_bench.toy", "cdm_bench.distill"))}
        assert not bad, f"{mod} imports {bad}"


def test_only_rundir_names_run_directory_files():
    names = ("generation.json", "manifest.jsonl", "scores.parquet", "results.json", "leaderboard.csv",
             "leaderboard_long.csv", "leaderboard.html", "leaderboard.md")
    offenders = []
    for mod, path in _modules().items():
        if mod == "cdm_bench.rundir":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names:
                offenders.append(f"{mod}: {node.value!r}")
    assert not offenders, offenders


def test_progress_bars_in_a_log_are_whole_lines(capsys):
    from cdm_bench.progress import progress_bar

    bar = progress_bar(1000, "work", "it")  # stderr is captured: not a terminal
    for _ in range(1000):
        bar.update(1)
    bar.close()
    err = capsys.readouterr().err
    assert "\r" not in err and 1 <= len(err.splitlines()) <= 3 and "1000/1000" in err


def test_a_recipe_must_name_its_model_adapter():
    import pytest

    from cdm_bench.distill.config import load_recipe
    from cdm_bench.errors import RecipeError

    with pytest.raises(RecipeError, match="model.adapter"):
        load_recipe({"name": "x", "model": {"teacher": "tiny"}, "losses": {"dm": {"weight": 1.0}}})
