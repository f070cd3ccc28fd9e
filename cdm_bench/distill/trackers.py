"""Where validation scalars and image grids go: TensorBoard always (``TRAIN_DIR/tensorboard``),
and the recipe's ``validate.tracker`` (``wandb`` or ``mlflow``) as well, through the libraries
themselves. wandb honours its own environment (``WANDB_MODE=offline`` writes ``TRAIN_DIR/wandb``;
``WANDB_PROJECT`` ...); mlflow logs to ``MLFLOW_TRACKING_URI`` or, by default, a file store in
``TRAIN_DIR/mlruns``. A tracker whose package is missing is refused before any weights load
(:func:`check_tracker`)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from cdm_bench.errors import MissingDependencyError

PACKAGES = {"wandb": "wandb", "mlflow": "mlflow"}


def check_tracker(name: str) -> None:
    pkg = PACKAGES.get(name)
    if pkg and importlib.util.find_spec(pkg) is None:
        raise MissingDependencyError(f"validate.tracker {name!r} needs the {pkg} package: pip install {pkg} "
                                     f"(or tracker: tensorboard)")


class Trackers:
    """TensorBoard plus the chosen tracker; scalars and HWC uint8 images by step."""

    def __init__(self, out_dir: Path, name: str, run_name: str, config: dict):
        from torch.utils.tensorboard import SummaryWriter

        self.tb = SummaryWriter(str(Path(out_dir) / "tensorboard"))
        self.name, self.other = name, None
        if name == "wandb":
            import wandb

            self.other = wandb.init(dir=str(out_dir), name=run_name, config=config, reinit="finish_previous")
        elif name == "mlflow":
            import os

            import mlflow

            if not os.environ.get("MLFLOW_TRACKING_URI"):  # a local file store (mlflow 3 asks for the opt-in)
                os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
                mlflow.set_tracking_uri((Path(out_dir) / "mlruns").resolve().as_uri())
            mlflow.set_experiment(run_name)
            self.other = mlflow.start_run(run_name=run_name)
            mlflow.log_params({k: str(v)[:250] for k, v in _flat(config).items()})

    def scalars(self, values: dict[str, float], step: int) -> None:
        for key, value in values.items():
            self.tb.add_scalar(key, value, step)
        if self.name == "wandb":
            self.other.log(dict(values), step=step)
        elif self.name == "mlflow":
            import mlflow

            mlflow.log_metrics({_mlflow_key(k): float(v) for k, v in values.items() if np.isfinite(v)}, step=step)

    def image(self, tag: str, image: np.ndarray, step: int) -> None:
        self.tb.add_image(tag, image, step, dataformats="HWC")
        if self.name == "wandb":
            import wandb

            self.other.log({tag: wandb.Image(image)}, step=step)
        elif self.name == "mlflow":
            import mlflow

            mlflow.log_image(image, key=_mlflow_key(tag), step=step)

    def close(self) -> None:
        self.tb.close()
        if self.name == "wandb":
            self.other.finish()
        elif self.name == "mlflow":
            import mlflow

            mlflow.end_run()


def _mlflow_key(key: str) -> str:
    return "".join(c if c.isalnum() or c in "_-. /" else "_" for c in key)


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out
