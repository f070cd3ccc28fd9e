"""CLIP-based preference and alignment scorers, on ``transformers``' CLIP (the scorers' own
models and processors; never a hand-rolled preprocessing copy).

* ``clipscore``: ``max(100 * cos(image, text), 0)`` with openai/clip-vit-large-patch14 (the
  definition of torchmetrics' ``CLIPScore``; the paper's table reports ~28).
* ``pickscore``: PickScore_v1's ``logit_scale.exp() * cos(image, text)`` (its model card), with
  the processor of laion/CLIP-ViT-H-14-laion2B-s32B-b79K.
* ``aesthetic``: the LAION improved aesthetic predictor (an MLP, ``sac+logos+ava1-l14-linearMSE``)
  on the L2-normalised CLIP ViT-L/14 image embedding.

Text longer than CLIP's 77 tokens is truncated as the tokenizer does (``truncation=True``, the
end-of-text token kept); the number of truncated prompts is the sub-value ``truncated_prompts``.
Every model is a local folder or a hub id found in the local Hugging Face cache (``HF_HOME``);
nothing is downloaded at import, and a missing one fails before scoring.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Sequence

import numpy as np

from cdm_bench.metric import PerImageMetric, Weights, torch_dtype, weights_fingerprint

CLIP_L14 = "openai/clip-vit-large-patch14"
PICKSCORE = "yuvalkirstain/PickScore_v1"
PICKSCORE_PROCESSOR = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"
AESTHETIC_REPO, AESTHETIC_FILE = "camenduru/improved-aesthetic-predictor", "sac+logos+ava1-l14-linearMSE.pth"
MAX_TOKENS = 77


def hf_weights(what: str, ref: str, option: str, filename: str = "config.json") -> Weights:
    """A model folder given as a local path or a hub id (checked in the local HF cache)."""
    if Path(ref).expanduser().exists() or "/" not in ref or ref.startswith((".", "/", "~")):
        return Weights(what, path=str(ref), option=option)
    return Weights(what, repo_id=ref, filename=filename, option=option, snapshot=True)


def expected_image_backend() -> str:
    """The backend transformers (5) gives CLIP's image processor here: its torchvision one when
    torchvision is installed, else its PIL one (the same test as transformers' own
    ``is_torchvision_available``, without importing transformers). Their pixel values differ
    (up to 0.015 on natural 512 px images), so the backend is part of a CLIP metric's identity."""
    return "torchvision" if importlib.util.find_spec("torchvision") is not None else "pil"


def image_backend(image_processor) -> str:
    """The backend of a loaded image processor (transformers 5: its ``TorchvisionBackend`` /
    ``PilBackend`` base; transformers 4: the ``...Fast`` classes are torchvision's)."""
    names = [c.__name__ for c in type(image_processor).__mro__]
    return "torchvision" if any("Torchvision" in n or n.endswith("Fast") for n in names) else "pil"


def _embedding(out):
    """transformers 4 returns the projected embedding, 5 a ModelOutput holding it."""
    return out if hasattr(out, "dim") else out.pooler_output


class _ClipMetric(PerImageMetric):
    """Shared loading, text/image embedding and truncation accounting."""

    version = "1"
    higher_is_better = True
    input_format = "pil"
    requires = ("transformers",)
    extra = "eval"
    env_hint = "make eval-env"
    default_model = CLIP_L14
    default_processor: str | None = None

    def __init__(self, device: str = "cpu", dtype: str = "float32", model: str | None = None,
                 processor: str | None = None):
        super().__init__(device, dtype)
        self.model_ref = str(model or self.default_model)
        self.processor_ref = str(processor or self.default_processor or self.model_ref)
        self.model = self.processor = None

    def weights(self) -> list[Weights]:
        out = [hf_weights(f"{self.name} CLIP model", self.model_ref, "model")]
        if self.processor_ref != self.model_ref:
            out.append(hf_weights(f"{self.name} processor", self.processor_ref, "processor", "preprocessor_config.json"))
        return out

    def setup(self) -> None:
        if importlib.util.find_spec("torchvision") is not None:  # transformers may import it
            from metrics._compat_torchvision import ensure_torchvision

            ensure_torchvision()
        from transformers import CLIPModel, CLIPProcessor

        self.model = CLIPModel.from_pretrained(self.model_ref, dtype=torch_dtype(self.dtype)).to(self.device).eval()
        self.processor = CLIPProcessor.from_pretrained(self.processor_ref)
        got, expected = image_backend(self.processor.image_processor), expected_image_backend()
        if got != expected:  # the identity said another preprocessing: never score under it
            cls, self.processor = type(self.processor.image_processor).__name__, None
            raise RuntimeError(f"metric {self.name!r}: transformers loaded the {got} image processor ({cls}) where "
                               f"{expected} was expected; the scores would not match this metric's identity")

    def teardown(self) -> None:
        self.model = self.processor = None
        super().teardown()

    #: what preprocess() prepares: the image processor's pixels, and the tokens unless image-only
    uses_text = True

    def preprocess(self, images, prompts, meta) -> dict:
        """The scorer's own processor on one batch (in an input worker): pixel values and, for
        the text-image scores, the tokens padded to 77."""
        out = {"pixel_values": self.processor(images=list(images), return_tensors="pt")["pixel_values"]}
        if self.uses_text:
            tokens = self.processor(text=list(prompts), return_tensors="pt", padding="max_length", truncation=True,
                                    max_length=MAX_TOKENS)
            out.update(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])
        return out

    def image_embeddings(self, images):
        """L2-normalised image embeddings (float32), through the scorer's image processor (or
        the pixel values :meth:`preprocess` made)."""
        import torch

        pixels = images["pixel_values"] if isinstance(images, dict) else \
            self.processor(images=list(images), return_tensors="pt")["pixel_values"]
        with torch.inference_mode():
            img = _embedding(self.model.get_image_features(pixel_values=pixels.to(self.device, self.model.dtype)))
        return torch.nn.functional.normalize(img.float(), dim=-1)

    def text_embeddings(self, prompts: Sequence[str], prepared: dict | None = None):
        """L2-normalised text embeddings (float32); padded to 77 so batches never change a number
        (the tokens :meth:`preprocess` made, when given)."""
        import torch

        tokens = prepared if prepared is not None and "input_ids" in prepared else \
            self.processor(text=list(prompts), return_tensors="pt", padding="max_length", truncation=True,
                           max_length=MAX_TOKENS)
        with torch.inference_mode():
            txt = _embedding(self.model.get_text_features(input_ids=tokens["input_ids"].to(self.device),
                                                          attention_mask=tokens["attention_mask"].to(self.device)))
        return torch.nn.functional.normalize(txt.float(), dim=-1)

    def aggregate(self, scores: np.ndarray, meta: Sequence[dict]) -> dict:
        return {self.name: float(np.mean(scores)), "truncated_prompts": float(self.truncated(meta))}

    def truncated(self, meta: Sequence[dict]) -> int:
        """Prompts (distinct) longer than CLIP's context, counted with the scorer's tokenizer."""
        from transformers import CLIPTokenizer

        tok = self.processor.tokenizer if self.processor is not None else CLIPTokenizer.from_pretrained(self.processor_ref)
        prompts = sorted({m["prompt"] for m in meta})
        return sum(len(ids) > MAX_TOKENS for ids in tok(prompts)["input_ids"])

    def describe(self) -> dict:
        return {**super().describe(), "model": self.model_ref, "processor": self.processor_ref,
                "image_processor_backend": expected_image_backend(),
                "weights_fingerprint": weights_fingerprint(self.model_ref)}


def _prepared(images) -> dict | None:
    return images if isinstance(images, dict) else None


class ClipScore(_ClipMetric):
    name = "clipscore"

    def score(self, images, prompts, meta) -> np.ndarray:
        img, txt = self.image_embeddings(images), self.text_embeddings(prompts, _prepared(images))
        return (100.0 * (img * txt).sum(-1)).clamp(min=0).numpy()


class PickScore(_ClipMetric):
    name = "pickscore"
    default_model = PICKSCORE
    default_processor = PICKSCORE_PROCESSOR

    def score(self, images, prompts, meta) -> np.ndarray:
        img, txt = self.image_embeddings(images), self.text_embeddings(prompts, _prepared(images))
        return (self.model.logit_scale.exp().float() * (img * txt).sum(-1)).detach().numpy()


class AestheticMLP:
    """The LAION improved-aesthetic predictor's head (layer layout of its published state dict)."""

    @staticmethod
    def build(dim: int = 768):
        from torch import nn

        class MLP(nn.Module):
            def __init__(self):
                super().__init__()
                self.layers = nn.Sequential(nn.Linear(dim, 1024), nn.Dropout(0.2), nn.Linear(1024, 128),
                                            nn.Dropout(0.2), nn.Linear(128, 64), nn.Dropout(0.1),
                                            nn.Linear(64, 16), nn.Linear(16, 1))

            def forward(self, x):
                return self.layers(x)

        return MLP()


class Aesthetic(_ClipMetric):
    name = "aesthetic"
    uses_text = False

    def __init__(self, device: str = "cpu", dtype: str = "float32", model: str | None = None,
                 processor: str | None = None, head: str | None = None):
        super().__init__(device, dtype, model, processor)
        self.head_ref = head
        self.head = None

    def _head_weights(self) -> Weights:
        if self.head_ref:
            return Weights("LAION aesthetic MLP", path=self.head_ref, option="head")
        return Weights("LAION aesthetic MLP", repo_id=AESTHETIC_REPO, filename=AESTHETIC_FILE, option="head")

    def weights(self) -> list[Weights]:
        return super().weights() + [self._head_weights()]

    def setup(self) -> None:
        import torch

        super().setup()
        state = torch.load(self._head_weights().locate(), map_location="cpu", weights_only=True)
        self.head = AestheticMLP.build(state["layers.0.weight"].shape[1])
        self.head.load_state_dict(state)
        self.head.to(self.device).eval()

    def teardown(self) -> None:
        self.head = None
        super().teardown()

    def score(self, images, prompts, meta) -> np.ndarray:
        import torch

        img = self.image_embeddings(images)
        with torch.inference_mode():
            return self.head(img.to(self.device)).float().reshape(-1).cpu().numpy()

    def aggregate(self, scores: np.ndarray, meta: Sequence[dict]) -> dict:
        return {self.name: float(np.mean(scores))}  # image-only: no text, nothing truncated

    def describe(self) -> dict:
        head = self._head_weights()
        return {**super().describe(), "head": head.describe(),
                "head_fingerprint": weights_fingerprint(head.path) if head.path else None}
