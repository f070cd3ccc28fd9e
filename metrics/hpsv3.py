"""``hpsv3``: HPSv3 (MizzenAI/HPSv3, a Qwen2-VL-7B reward model), the mean mu of its output.

HPSv3's model outputs (mu, sigma) per image at its ``<|Reward|>`` token; the score is mu
(EVAL_PROTOCOL.md), higher is better. Everything that makes the number comes from the ``hpsv3``
package (1.0.0) itself: its ``Qwen2VLRewardModelBT`` class, its own config file
(``hpsv3/config/HPSv3_7B.yaml``: head type, output size, reward token), the special token
it adds to the Qwen2-VL processor, and its inferencer's preprocessing and forward
(``HPSv3RewardInferencer.reward``: its resize to 256x28x28 pixels, chat template, batching with
right padding). The one difference from ``HPSv3RewardInferencer.__init__`` is how the model is
built: the package loads the full Qwen2-VL-7B base weights and then overwrites all of them
with the HPSv3 checkpoint; here the model is built from the base *config* alone (empty
weights) and the checkpoint is loaded strictly into it, so the 16 GB base weights are never
needed. The tests check agreement with the package's own inferencer.

The package pins transformers 4.45.2, so it lives in its own environment::

    bash scripts/make_hpsv3_env.sh            # -> .venv-hpsv3
    .venv-hpsv3/bin/cdm-bench evaluate --metrics hpsv3 ...

Options: ``checkpoint`` (a local ``HPSv3.safetensors``; default: MizzenAI/HPSv3's file, found
only in the local Hugging Face cache, never downloaded), ``base_model`` (a local folder, or a
hub id found in the cache, holding the Qwen2-VL-7B-Instruct config and processor files:
``config.json``, tokenizer files, ``preprocessor_config.json``, ``chat_template.json``; no
weights needed), plus ``device`` and ``dtype``. The package runs bfloat16 on CUDA; its head
stays float32 (its forward casts the head's input under CUDA autocast, and on other devices a
hook does the same cast, since its autocast region is CUDA-only).

This module imports nothing heavy: ``cdm-bench ls metrics`` and ``check()`` work without hpsv3.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from cdm_bench.errors import MissingDependencyError
from cdm_bench.metric import PerImageMetric, Weights, weights_fingerprint

HUB_CHECKPOINT = ("MizzenAI/HPSv3", "HPSv3.safetensors")
BASE_MODEL = "Qwen/Qwen2-VL-7B-Instruct"
REWARD_TOKEN = "<|Reward|>"  # the special token hpsv3's create_model_and_processor adds
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def _is_hub_id(spec: str) -> bool:
    return bool(_HUB_ID.match(spec)) and not Path(spec).expanduser().exists()


def package_model_config():
    """hpsv3's own ModelConfig, parsed from its own inference config file."""
    import hpsv3
    from hpsv3.utils.parser import ModelConfig, parse_args_with_yaml

    path = Path(hpsv3.__file__).parent / "config" / "HPSv3_7B.yaml"
    (model_config,), _ = parse_args_with_yaml((ModelConfig,), str(path), is_train=False)
    return model_config


def load_processor(base_dir: str | Path):
    """The Qwen2-VL processor, right padding and the reward token, as hpsv3 prepares it."""
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(str(base_dir), padding_side="right", local_files_only=True)
    processor.tokenizer.add_special_tokens({"additional_special_tokens": [REWARD_TOKEN]})
    return processor


def load_state_dict(path: str | Path) -> dict:
    """The checkpoint as hpsv3's inferencer reads it (safetensors, or a torch file)."""
    import torch

    if str(path).endswith(".safetensors"):
        import safetensors.torch

        state = safetensors.torch.load_file(str(path), device="cpu")
    else:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    return state.get("model", state)


def build_reward_model(base_dir: str | Path, checkpoint: str | Path, processor, dtype: str):
    """hpsv3's Qwen2VLRewardModelBT from the base config, the checkpoint loaded strictly.

    The same steps and dtypes as hpsv3's ``create_model_and_processor`` + inferencer (model in
    ``dtype``, ``rm_head`` float32, embeddings resized to the tokenizer with the reward token),
    with empty weights instead of the base model's, which the checkpoint replaces entirely."""
    import torch
    from accelerate import init_empty_weights
    from hpsv3 import train as hpsv3_train
    from hpsv3.model.qwen2vl_trainer import Qwen2VLRewardModelBT
    from transformers import AutoConfig

    mc = package_model_config()
    attn = "flash_attention_2" if hpsv3_train.flash_attn is not None else "sdpa"  # as hpsv3 chooses
    config = AutoConfig.from_pretrained(str(base_dir), local_files_only=True, use_cache=False,
                                        attn_implementation=attn)
    special_ids = processor.tokenizer.convert_tokens_to_ids([REWARD_TOKEN]) if mc.use_special_tokens else None
    with init_empty_weights():  # parameters on the meta device, buffers (rotary tables) real
        model = Qwen2VLRewardModelBT(config, output_dim=mc.output_dim, reward_token=mc.reward_token,
                                     special_token_ids=special_ids, rm_head_type=mc.rm_head_type,
                                     rm_head_kwargs=mc.rm_head_kwargs)
    if mc.use_special_tokens:
        model.resize_token_embeddings(len(processor.tokenizer))
    model.to(getattr(torch, dtype))
    model.rm_head.to(torch.float32)
    target = model.state_dict()
    state = {k: v.to(target[k].dtype) if k in target else v for k, v in load_state_dict(checkpoint).items()}
    model.load_state_dict(state, strict=True, assign=True)  # missing or extra keys: an error
    model.tie_weights()
    model.config.tokenizer_padding_side = processor.tokenizer.padding_side
    model.config.pad_token_id = processor.tokenizer.pad_token_id
    return model.eval()


def make_inferencer(model, processor, device: str):
    """hpsv3's own ``HPSv3RewardInferencer`` around a built model: its ``prepare_batch`` and
    ``reward`` (preprocessing and forward) are used unchanged. Its ``__init__`` is skipped
    because it would load the full base weights first (see the module docstring)."""
    from hpsv3 import HPSv3RewardInferencer

    inferencer = object.__new__(HPSv3RewardInferencer)
    inferencer.model, inferencer.processor, inferencer.device = model, processor, device
    inferencer.use_special_tokens = model.special_token_ids is not None  # set iff hpsv3's config says so
    return inferencer


class HPSv3(PerImageMetric):
    """HPSv3 preference score (mu) of each image for its prompt."""

    name = "hpsv3"
    version = "1"
    higher_is_better = True
    input_format = "pil"
    requires = ("hpsv3", "transformers", "accelerate", "trl", "peft")
    extra = "hpsv3"
    env_hint = "make eval-env-hpsv3 (then evaluate with .venv-hpsv3/bin/cdm-bench)"
    #: the vision tower attends over all images of a batch at once (a block-diagonal mask), so
    #: without flash-attn its attention memory grows with the batch squared: 8 images ~ 2 GB
    batch_size = 8

    def __init__(self, device: str = "cpu", dtype: str = "float32", checkpoint: str | None = None,
                 base_model: str = BASE_MODEL):
        super().__init__(device, dtype)
        self.checkpoint, self.base_model = checkpoint, str(base_model)
        self._inferencer: Any = None

    def weights(self) -> list[Weights]:
        what = "HPSv3 checkpoint"
        ckpt = (Weights(what, path=str(self.checkpoint), option="checkpoint") if self.checkpoint else
                Weights(what, repo_id=HUB_CHECKPOINT[0], filename=HUB_CHECKPOINT[1], option="checkpoint"))
        what = "Qwen2-VL base folder (only its config and processor files are read)"
        base = (Weights(what, repo_id=self.base_model, filename="config.json", option="base_model", snapshot=True)
                if _is_hub_id(self.base_model) else
                Weights(what, path=str(Path(self.base_model) / "config.json"), option="base_model"))
        return [ckpt, base]

    def check(self) -> None:
        super().check()
        self._check_transformers_pin()

    def _check_transformers_pin(self) -> None:
        """hpsv3 pins transformers (4.45.2); another version breaks it: say so in one line."""
        from importlib.metadata import requires, version

        from packaging.requirements import Requirement

        pins = [q for q in map(Requirement, requires("hpsv3") or []) if q.name == "transformers"]
        found = version("transformers")
        if pins and not pins[0].specifier.contains(found, prereleases=True):
            raise MissingDependencyError(
                f"metric {self.name!r} needs {pins[0]} (hpsv3's pin), found transformers {found}: "
                f"use the eval env ({self.env_hint})")

    def setup(self) -> None:
        ckpt, base_config = (w.locate() for w in self.weights())
        if ckpt is None or base_config is None:
            self.check()  # raises the one-line missing-weights error
        processor = load_processor(base_config.parent)
        model = build_reward_model(base_config.parent, ckpt, processor, self.dtype).to(self.device)
        if self.dtype != "float32" and not str(self.device).startswith("cuda"):
            # hpsv3 runs its float32 head under a CUDA-only autocast; elsewhere cast its input here
            model.rm_head.register_forward_pre_hook(lambda _m, args: tuple(a.float() for a in args))
        self._inferencer = make_inferencer(model, processor, self.device)

    def teardown(self) -> None:
        self._inferencer = None
        super().teardown()

    def score(self, images, prompts: Sequence[str], meta: Sequence[dict]) -> np.ndarray:
        import torch

        if self._inferencer is None:
            raise RuntimeError(f"metric {self.name!r}: score() before setup()")
        with torch.inference_mode(), warnings.catch_warnings():
            # hpsv3's forward opens a CUDA autocast region, which warns on other devices
            warnings.filterwarnings("ignore", message=".*CUDA is not available.*Disabling autocast")
            rewards = self._inferencer.reward(list(images), list(prompts))
        return rewards[:, 0].float().cpu().numpy()  # (mu, sigma) per image: mu

    def describe(self) -> dict:
        return {**super().describe(), "base_model": self.base_model,
                "checkpoint_fingerprint": weights_fingerprint(self.checkpoint),
                "package": _package_version("hpsv3"), "transformers": _package_version("transformers")}


def _package_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None
