"""One reference point of a sweep (e.g. the teacher at one CFG and one noise seed): generated and
scored exactly as a cell's validation is (same prompts, samples, metrics, bootstrap), into its own
run directory. ``python -m cdm_bench.sweep.reference PLAN_JSON`` (run by ``cdm-bench sweep``)."""

from __future__ import annotations

import json
import sys


def main(argv: list[str] | None = None) -> int:
    from cdm_bench.distill.validate_config import ValidateConfig
    from cdm_bench.evaluate import evaluate
    from cdm_bench.generate import generate
    from cdm_bench.prompts import load_prompt_set

    plan = json.loads((argv or sys.argv[1:])[0])
    cfg = ValidateConfig(**plan["validate"]) if plan["validate"] else None
    if cfg is None:
        raise SystemExit("a sweep's reference points need the spec's validate block (prompts, metrics)")
    prompts = load_prompt_set(cfg.prompts, limit=cfg.limit or None)
    generate(plan["generator"], prompts, plan["out"], cfg.samples_per_prompt, cfg.batch_size, plan["seed"],
             progress=False)
    evaluate(plan["out"], cfg.metrics, batch_size=cfg.eval_batch_size, chunk_size=cfg.chunk_size, progress=False,
             num_workers=0, set_bootstrap=cfg.bootstrap)
    return 0


if __name__ == "__main__":
    sys.exit(main())
