"""HPSv2 (Human Preference Score v2): the diagonal of ``image_features @ text_features.T`` of the
HPS checkpoint on open_clip ViT-H-14 — the hpsv2 package's own scoring path.

The model, its preprocessing (``preprocess_val``: ToTensor, bicubic resize, centre crop,
normalise) and its tokenizer come from the ``hpsv2`` package's bundled open_clip, so the numbers
are the package's. ``hps_version`` selects the checkpoint: ``v2.1`` (default,
``HPS_v2.1_compressed.pt``) or ``v2.0`` (``HPS_v2_compressed.pt``), from the hub repo
``xswu/HPSv2`` in the local Hugging Face cache or a local file (``checkpoint``); nothing is
downloaded. The pip package ``hpsv2`` 1.2.0 lacks its BPE vocabulary file; ``hpsv2x`` (the same
code) ships it: ``make eval-env`` installs that one (``--no-deps``: it pins pytest 7.2).
Prompts longer than the tokenizer's 77-token context are truncated as the package does; their
number is the sub-value ``truncated_prompts``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from cdm_bench.metric import PerImageMetric, Weights, weights_fingerprint

HPS_REPO = "xswu/HPSv2"
HPS_FILES = {"v2.0": "HPS_v2_compressed.pt", "v2.1": "HPS_v2.1_compressed.pt"}
PRECISION = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}
CONTEXT = 77


class HPSv2(PerImageMetric):
    name = "hpsv2"
    version = "1"
    higher_is_better = True
    input_format = "pil"
    requires = ("hpsv2", "open_clip", "ftfy", "regex", "clint")
    extra = "eval"
    env_hint = "make eval-env"

    def __init__(self, device: str = "cpu", dtype: str = "float32", hps_version: str = "v2.1",
                 checkpoint: str | None = None, arch: str = "ViT-H-14", arch_config: str | None = None):
        super().__init__(device, dtype)
        if hps_version not in HPS_FILES:
            raise ValueError(f"hps_version must be one of {sorted(HPS_FILES)}, got {hps_version!r}")
        self.hps_version, self.checkpoint, self.arch, self.arch_config = hps_version, checkpoint, arch, arch_config
        self.model = self.transform = self.tokenizer = None

    def weights(self) -> list[Weights]:
        what = f"HPS {self.hps_version} checkpoint"
        if self.checkpoint:
            return [Weights(what, path=self.checkpoint, option="checkpoint")]
        return [Weights(what, repo_id=HPS_REPO, filename=HPS_FILES[self.hps_version], option="checkpoint")]

    def setup(self) -> None:
        import torch

        from metrics._compat_torchvision import ensure_torchvision

        ensure_torchvision()
        from hpsv2.src.open_clip import add_model_config, create_model_and_transforms, get_tokenizer

        if self.arch_config:  # an open_clip model config JSON (named by its file stem)
            add_model_config(self.arch_config)
        model, _, preprocess_val = create_model_and_transforms(
            self.arch, None, precision=PRECISION[self.dtype], device=self.device, jit=False,
            force_quick_gelu=False, force_custom_text=False, force_patch_dropout=False, force_image_size=None,
            pretrained_image=False, image_mean=None, image_std=None, light_augmentation=True, aug_cfg={},
            output_dict=True, with_score_predictor=False, with_region_predictor=False)
        state = torch.load(self.weights()[0].locate(), map_location="cpu", weights_only=True)
        model.load_state_dict(state["state_dict"])
        self.model, self.transform, self.tokenizer = model.to(self.device).eval(), preprocess_val, get_tokenizer(self.arch)

    def teardown(self) -> None:
        self.model = self.transform = self.tokenizer = None
        super().teardown()

    def preprocess(self, images, prompts: Sequence[str], meta) -> dict:
        """HPSv2's own ``preprocess_val`` and tokenizer on one batch (in an input worker)."""
        import torch

        return {"pixels": torch.stack([self.transform(im) for im in images]), "text": self.tokenizer(list(prompts))}

    def score(self, images, prompts: Sequence[str], meta) -> np.ndarray:
        import torch

        batch = images if isinstance(images, dict) else self.preprocess(images, prompts, meta)
        dtype = next(self.model.parameters()).dtype
        pixels, text = batch["pixels"].to(self.device, dtype), batch["text"].to(self.device)
        with torch.inference_mode():
            out = self.model(pixels, text)
            return (out["image_features"] * out["text_features"]).sum(-1).float().cpu().numpy()

    def aggregate(self, scores: np.ndarray, meta: Sequence[dict]) -> dict:
        from hpsv2.src.open_clip.tokenizer import _tokenizer

        prompts = sorted({m["prompt"] for m in meta})
        truncated = sum(len(_tokenizer.encode(p)) + 2 > CONTEXT for p in prompts)
        return {self.name: float(np.mean(scores)), "truncated_prompts": float(truncated)}

    def describe(self) -> dict:
        return {**super().describe(), "hps_version": self.hps_version, "arch": self.arch,
                "checkpoint_fingerprint": weights_fingerprint(self.checkpoint)}
