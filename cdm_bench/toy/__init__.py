"""The embedded toy world: a tiny, offline, deterministic text-to-image world (32x32 RGB).

* :mod:`cdm_bench.toy.world` - scenes, captions, rendering, tokenizer (numpy only).
* :mod:`cdm_bench.toy.model` - ``ToyFlowModel``, the rectified-flow UNet (diffusers mixins).
* :mod:`cdm_bench.toy.sampling` - noise from per-sample seeds, Euler sampling with CFG.
* :mod:`cdm_bench.toy.scorer` - ``ToyScorer``, the world's attribute classifier (plain torch).
* :mod:`cdm_bench.toy.train` - training of teacher and scorer.
* :mod:`cdm_bench.toy.artifacts` - cached, config-hash-keyed teachers and scorers per preset.

Nothing heavy is imported here.
"""
