"""Shared settings of the distillation tests: a random 2-level ToyFlowModel "teacher"."""

TINY_MODEL = {"block_out_channels": [8, 16], "text_dim": 16, "temb_dim": 16, "text_layers": 1, "heads": 2}


def tiny_overrides(steps: int = 2, batch: int = 2, **extra) -> dict:
    """Recipe overrides for a seconds-long CPU run on the random tiny teacher."""
    out = {"model.teacher": "random", "model.model_config": TINY_MODEL, "train.steps": steps,
           "train.batch_size": batch, "train.progress": False, "train.checkpoint_every": 1,
           "train.keep_checkpoints": 0}
    out.update(extra)
    return out
