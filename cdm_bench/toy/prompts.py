"""The embedded world's prompt source (``source: {type: toy, seed: S}`` in a prompt-set spec).

Registered through the ``cdm_bench.prompt_sources`` entry-point group (pyproject.toml), so the
core prompt-set code never imports the toy world.
"""

from __future__ import annotations

from cdm_bench.prompts import PromptSource


class ToyPromptSource(PromptSource):
    """``count`` captions of the embedded world, a pure function of ``seed``."""

    keys = frozenset({"seed"})
    makes_count = True

    def load(self, source, *, name, count, spec_path):
        from cdm_bench.toy.world import sample_prompts

        texts = sample_prompts(int(count or 64), int(source.get("seed", 0)))
        return [{"id": f"{name}-{i:05d}", "prompt": t} for i, t in enumerate(texts)]
