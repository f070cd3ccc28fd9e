"""The recipe's ``validate:`` block (see :mod:`cdm_bench.distill.validate`)::

    validate:
      every: 200                 # student steps between validations (and at step 0 and the end)
      prompts: toy               # a prompt set or file; ``limit``: only its first N prompts
      samples_per_prompt: 2
      seed: 0                    # the same noise at every validation
      nfe: [4, 2, {steps: 1}]    # sampler steps, or {steps, sigmas, guidance} per entry
      metrics: [toy_fid, {name: toy_align, scorer: demo}]
      models: [ema]              # and/or student
      select: {metric: toy_fid, nfe: 4}   # best/ keeps the EMA of the best validation
      stop_on_drift: 0           # stop after N validations in a row worse than the best beyond both CIs
      tracker: tensorboard       # or wandb / mlflow (validation scalars and grids; TensorBoard always)

The block may change on resume (it does not change the training).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cdm_bench.distill.recipe_files import RecipeError

TRACKERS = ("tensorboard", "wandb", "mlflow")
MODELS = ("ema", "student")


@dataclass
class NFEEntry:
    steps: int
    sigmas: list | None = None
    guidance: float = 1.0

    @property
    def label(self) -> str:
        return f"nfe{self.steps}" + (f"-g{self.guidance:g}" if self.guidance != 1.0 else "")


@dataclass
class ValidateConfig:
    every: int = 200
    prompts: str = "toy"
    limit: int = 0  # 0: every prompt
    samples_per_prompt: int = 1
    seed: int = 0
    nfe: list = field(default_factory=lambda: [4])
    metrics: list = field(default_factory=list)
    models: list = field(default_factory=lambda: ["ema"])
    select: dict = field(default_factory=dict)
    stop_on_drift: int = 0
    batch_size: int = 64
    eval_batch_size: int = 64
    chunk_size: int = 32  # evaluate's chunks; set-level metrics' intervals resample them
    bootstrap: int = 200  # resamples for the set-level metrics' intervals
    grid_prompts: int = 8
    tracker: str = "tensorboard"

    def __post_init__(self):
        for key in ("every", "samples_per_prompt", "batch_size", "eval_batch_size", "chunk_size", "grid_prompts"):
            if getattr(self, key) < 1:
                raise RecipeError(f"validate.{key} must be >= 1, got {getattr(self, key)}")
        if self.limit < 0 or self.stop_on_drift < 0 or self.bootstrap < 0:
            raise RecipeError("validate.limit, validate.stop_on_drift and validate.bootstrap must be >= 0")
        if not self.metrics:
            raise RecipeError("validate.metrics lists no metric (e.g. [toy_fid, toy_align] on the world)")
        bad = [m for m in self.models if m not in MODELS]
        if bad or not self.models or len(set(self.models)) != len(self.models):
            raise RecipeError(f"validate.models must list some of {list(MODELS)} once each, got {self.models!r}")
        if self.tracker not in TRACKERS:
            raise RecipeError(f"validate.tracker must be one of {list(TRACKERS)}, got {self.tracker!r}")
        self.entries = [_entry(e) for e in self.nfe]
        if not self.entries or len({e.label for e in self.entries}) != len(self.entries):
            raise RecipeError(f"validate.nfe must list distinct entries, got {self.nfe!r}")
        if self.select:
            unknown = sorted(set(self.select) - {"metric", "nfe", "model"})
            if unknown or "metric" not in self.select:
                raise RecipeError(f"validate.select needs 'metric' (and optionally 'nfe', 'model'); got {self.select!r}")
            if self.select.get("nfe", self.entries[0].steps) not in [e.steps for e in self.entries]:
                raise RecipeError(f"validate.select.nfe {self.select['nfe']!r} is not one of validate.nfe")

    @property
    def select_key(self) -> tuple[str, str, str] | None:
        """(metric instance, model, nfe label) the best checkpoint is chosen by."""
        if not self.select:
            return None
        steps = self.select.get("nfe", self.entries[0].steps)
        entry = next(e for e in self.entries if e.steps == steps)
        return str(self.select["metric"]), str(self.select.get("model", self.models[0])), entry.label


def _entry(e) -> NFEEntry:
    if isinstance(e, bool) or not isinstance(e, (int, dict)):
        raise RecipeError(f"validate.nfe entries are step counts or {{steps, sigmas, guidance}}, got {e!r}")
    if isinstance(e, int):
        e = {"steps": e}
    unknown = sorted(set(e) - {"steps", "sigmas", "guidance"})
    steps = e.get("steps")
    if unknown or isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise RecipeError(f"validate.nfe entry {e!r}: steps (>= 1) and optionally sigmas, guidance")
    sigmas = e.get("sigmas")
    if sigmas is not None and (not isinstance(sigmas, list) or len(sigmas) != steps):
        raise RecipeError(f"validate.nfe entry {e!r}: sigmas must list one value per step")
    guidance = e.get("guidance", 1.0)
    if isinstance(guidance, bool) or not isinstance(guidance, (int, float)):
        raise RecipeError(f"validate.nfe entry {e!r}: guidance must be a number")
    return NFEEntry(steps, [float(s) for s in sigmas] if sigmas else None, float(guidance))
