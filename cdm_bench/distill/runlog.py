"""The training log: one JSON line per logged student step (+ TensorBoard scalars if enabled)."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np


class RunLogger:
    """JSONL of every logged student step (+ TensorBoard scalars if enabled)."""

    def __init__(self, out_dir: Path, tensorboard: bool):
        self.file = open(Path(out_dir) / "log.jsonl", "a")
        self.tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter
            self.tb = SummaryWriter(str(Path(out_dir) / "tensorboard"))

    def write(self, record: dict) -> None:
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        if self.tb is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)):
                    self.tb.add_scalar(key, value, record["step"])

    def close(self) -> None:
        self.file.close()
        if self.tb is not None:
            self.tb.close()


def mean_dicts(dicts: list[dict]) -> dict:
    acc = defaultdict(list)
    for d in dicts:
        for k, v in d.items():
            acc[k].append(v)
    return {k: float(np.mean(v)) for k, v in acc.items()}
