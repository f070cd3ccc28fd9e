"""ImageReward v1.0 (the ``image-reward`` pip package): a BLIP ViT-L image encoder, a BERT text
encoder cross-attending to it, and an MLP head; the score is the package's normalised reward.

The model is the package's own ``ImageReward.ImageReward`` class (its BLIP, its ``_transform``
preprocessing, its BERT tokenizer with ``[DEC]``/``[ENC]`` added) loaded with the published
checkpoint; batches go through the package's batched forward ``score_gard`` with the tokenizer
settings of its ``score`` (``padding="max_length", truncation=True, max_length=35``), so a
per-image score equals ``ImageReward.score(prompt, image)``. Prompts longer than 35 BERT tokens
are truncated as the package does; their number is the sub-value ``truncated_prompts``.

Nothing is downloaded. Three local inputs, each an option or found in the local Hugging Face
cache (``HF_HOME``): ``checkpoint`` (``THUDM/ImageReward`` ``ImageReward.pt``), ``med_config``
(``THUDM/ImageReward`` ``med_config.json``) and ``bert``, the ``bert-base-uncased`` tokenizer
folder (hub ``bert-base-uncased`` ``vocab.txt``), which the package would otherwise fetch from the
hub even offline. The patches the package needs on current libraries are applied by
:mod:`metrics._compat_imagereward`, each only when its breakage is detected.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Sequence

import numpy as np

from cdm_bench.errors import SpecError
from cdm_bench.metric import PerImageMetric, Weights, torch_dtype, weights_fingerprint

log = logging.getLogger(__name__)
HUB_REPO = "THUDM/ImageReward"
CHECKPOINT_FILE, MED_CONFIG_FILE = "ImageReward.pt", "med_config.json"
BERT_REPO, BERT_FILE = "bert-base-uncased", "vocab.txt"
MAX_TOKENS = 35  # ImageReward.score's tokenizer max_length
SCORED_PREFIXES = ("blip.visual_encoder.", "blip.text_encoder.", "mlp.")  # what score() runs


@contextmanager
def _bert_tokenizer_from(folder: Path):
    """While BLIP's ``init_tokenizer`` runs, its ``BertTokenizer.from_pretrained('bert-base-uncased')``
    reads the local ``folder`` instead of the hub."""
    from types import SimpleNamespace
    from unittest import mock

    from ImageReward.models.BLIP import blip
    from transformers import BertTokenizer

    def from_pretrained(_name, *args, **kwargs):
        return BertTokenizer.from_pretrained(str(folder), *args, local_files_only=True, **kwargs)

    with mock.patch.object(blip, "BertTokenizer", SimpleNamespace(from_pretrained=from_pretrained)):
        yield


class ImageReward(PerImageMetric):
    name = "imagereward"
    version = "1"
    higher_is_better = True
    input_format = "pil"
    # `import ImageReward` imports all of them; it is imported through the compat shim, as setup() does
    requires = ("ImageReward?", "fairscale", "timm", "torchvision", "transformers", "clip", "datasets", "diffusers",
                "accelerate", "metrics._compat_imagereward:import_imagereward()")
    extra = "eval"
    env_hint = "make eval-env"

    def __init__(self, device: str = "cpu", dtype: str = "float32", checkpoint: str | None = None,
                 med_config: str | None = None, bert: str | None = None):
        super().__init__(device, dtype)
        self.checkpoint, self.med_config, self.bert = checkpoint, med_config, bert
        self.model = None
        self._tokenizer = None

    def weights(self) -> list[Weights]:
        def one(what, path, option, repo, filename):
            if path:
                return Weights(what, path=str(path), option=option)
            return Weights(what, repo_id=repo, filename=filename, option=option)

        return [one("ImageReward-v1.0 checkpoint", self.checkpoint, "checkpoint", HUB_REPO, CHECKPOINT_FILE),
                one("ImageReward BLIP med_config", self.med_config, "med_config", HUB_REPO, MED_CONFIG_FILE),
                one("bert-base-uncased tokenizer", self.bert, "bert", BERT_REPO, BERT_FILE)]

    def _located(self) -> tuple[Path | None, Path | None, Path | None]:
        """(checkpoint file, med_config file, BERT tokenizer folder), None where missing."""
        ckpt, med, bert = (w.locate() for w in self.weights())
        if bert is not None and bert.is_file():  # the hub's vocab.txt, or a vocab file passed as `bert`
            bert = bert.parent
        return ckpt, med, bert

    def setup(self) -> None:
        import torch

        from metrics._compat_imagereward import import_imagereward

        import_imagereward()
        from ImageReward.ImageReward import ImageReward as RewardModel

        self.check()
        ckpt, med, bert = self._located()
        with _bert_tokenizer_from(bert):
            model = RewardModel(med_config=str(med), device=self.device)
        self._check_tokenizer(model, bert)
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
        self._load_state(model, state, ckpt)
        self.model = model.to(self.device, torch_dtype(self.dtype)).eval()

    @staticmethod
    def _check_tokenizer(model, bert: Path) -> None:
        n, want = len(model.blip.tokenizer), model.blip.text_encoder.config.vocab_size
        if n != want:  # e.g. a folder without the real vocab: transformers may build a 5-token one
            raise SpecError(f"metric 'imagereward': the BERT tokenizer in {bert} has {n} tokens with [DEC]/[ENC], "
                            f"the med_config's vocab_size is {want}: pass the bert-base-uncased tokenizer "
                            f"folder as option 'bert'")

    @staticmethod
    def _load_state(model, state: dict, ckpt: Path) -> None:
        """Load as the package does (``strict=False``), but refuse a checkpoint that lacks any
        weight the score uses; extra keys are logged."""
        result = model.load_state_dict(state, strict=False)
        missing = [k for k in result.missing_keys if k.startswith(SCORED_PREFIXES) and not k.endswith("position_ids")]
        if missing:
            raise SpecError(f"metric 'imagereward': {ckpt} lacks {len(missing)} weight(s) the score uses "
                            f"(e.g. {missing[0]!r}): not an ImageReward checkpoint for this med_config")
        if result.unexpected_keys:
            log.warning("imagereward: %d unexpected key(s) in %s ignored (e.g. %s)",
                        len(result.unexpected_keys), ckpt, result.unexpected_keys[0])

    def teardown(self) -> None:
        self.model = self._tokenizer = None
        super().teardown()

    def score(self, images, prompts: Sequence[str], meta) -> np.ndarray:
        import torch

        m = self.model
        text = m.blip.tokenizer(list(prompts), padding="max_length", truncation=True, max_length=MAX_TOKENS,
                                return_tensors="pt").to(self.device)
        pixels = torch.stack([m.preprocess(im) for im in images]).to(self.device, torch_dtype(self.dtype))
        with torch.inference_mode():
            rewards = m.score_gard(text.input_ids, text.attention_mask, pixels)
        return rewards.float().reshape(-1).cpu().numpy()

    def aggregate(self, scores: np.ndarray, meta: Sequence[dict]) -> dict:
        return {self.name: float(np.mean(scores)), "truncated_prompts": float(self.truncated(meta))}

    def truncated(self, meta: Sequence[dict]) -> int:
        """Distinct prompts longer than the package's 35 tokens, counted with its BERT tokenizer."""
        prompts = sorted({m["prompt"] for m in meta if "prompt" in m})
        if not prompts:
            return 0
        if self.model is not None:
            tok = self.model.blip.tokenizer
        else:
            if self._tokenizer is None:
                from transformers import BertTokenizer

                self._tokenizer = BertTokenizer.from_pretrained(str(self._located()[2]), local_files_only=True)
            tok = self._tokenizer
        return sum(len(ids) > MAX_TOKENS for ids in tok(prompts)["input_ids"])

    def describe(self) -> dict:
        ckpt, med, bert = self._located()
        vocab = bert / BERT_FILE if bert is not None and (bert / BERT_FILE).is_file() else bert
        return {**super().describe(), "max_tokens": MAX_TOKENS,
                "fingerprints": {"checkpoint": weights_fingerprint(ckpt), "med_config": weights_fingerprint(med),
                                 "bert_vocab": weights_fingerprint(vocab)}}
