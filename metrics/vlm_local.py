"""A local Qwen2-VL / Qwen2.5-VL class vision-language model through transformers, shared by
``vqascore`` and the ``transformers`` backend of ``llm_judge``.

* :func:`locate_model`: ``model`` is a local folder (holding ``config.json``) or a hub id found in
  the local Hugging Face cache (``HF_HOME`` / ``HF_HUB_CACHE`` honoured; nothing is downloaded,
  as with every cdm-bench scorer); :func:`missing_model_message` is the one-line error naming
  the model and how to provide it.
* :func:`load_vlm`: ``AutoModelForImageTextToText`` + ``AutoProcessor`` from that folder
  (``local_files_only``), in eval mode, on ``device`` in ``dtype``.
* :func:`fetch_image`: the resize that qwen-vl-utils' ``fetch_image`` applies before the
  processor (the t2v-metrics scorers call ``process_vision_info``, then the processor with
  ``do_resize=False``): RGB, then PIL's default resize to the ``smart_resize`` size (both sides
  multiples of 28 = patch 14 x merge 2, 4 to 16,384 visual tokens, aspect ratio kept).
* :func:`chat_inputs`: chat template + processor for one conversation with PIL images.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from pathlib import Path

from cdm_bench.errors import MissingDependencyError

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
FACTOR = 28  # qwen-vl-utils: image patch size 14 x spatial merge size 2
MIN_TOKENS, MAX_TOKENS, MAX_RATIO = 4, 16384, 200


def is_hub_id(spec: str) -> bool:
    return bool(_HUB_ID.match(spec)) and not Path(spec).expanduser().exists()


def locate_model(spec: str, revision: str | None = None) -> Path | None:
    """The local folder of ``spec`` (a path, or a hub id in the local cache), or None."""
    path = Path(spec).expanduser()
    if not is_hub_id(spec):
        return path.resolve() if (path / "config.json").is_file() else None
    try:
        from huggingface_hub import snapshot_download

        found = Path(snapshot_download(spec, revision=revision, local_files_only=True))
    except Exception:  # not cached (or the hub library missing): not here
        return None
    return found if (found / "config.json").is_file() else None


def missing_model_message(who: str, spec: str, option: str = "model") -> str:
    """One line: which weights are missing and the two ways to provide them."""
    hub = os.environ.get("HF_HUB_CACHE") or os.path.join(os.environ.get("HF_HOME", "~/.cache/huggingface"), "hub")
    if is_hub_id(spec):
        return (f"{who} needs the weights of {spec}, which are not in the local Hugging Face cache ({hub}): fetch them "
                f"where the network is reachable with `huggingface-cli download {spec}` (HF_HOME set as when scoring), "
                f"or pass a local model folder as option {option!r}")
    return (f"{who} needs the model folder {spec}, which does not exist or has no config.json: pass a local "
            f"Qwen2-VL / Qwen2.5-VL folder (config, weights, processor files) as option {option!r}, or a hub id "
            f"fetched with `huggingface-cli download Qwen/Qwen2.5-VL-7B-Instruct`")


def check_model(who: str, spec: str, extra: str) -> Path:
    """The model's folder; else a one-line MissingDependencyError (packages first, then weights)."""
    from cdm_bench.metric import missing_packages

    missing = missing_packages(("torch", "transformers"))
    if missing:
        raise MissingDependencyError(f"{who} needs package(s) {', '.join(missing)}: pip install 'cdm-bench[{extra}]'")
    found = locate_model(spec)
    if found is None:
        raise MissingDependencyError(missing_model_message(who, spec))
    return found


def config_sha256(folder: Path | None) -> str | None:
    """The sha256 of the model folder's ``config.json`` (part of an identity), None when absent."""
    if folder is None or not (Path(folder) / "config.json").is_file():
        return None
    return hashlib.sha256((Path(folder) / "config.json").read_bytes()).hexdigest()


def load_vlm(folder: Path, device: str = "cpu", dtype: str = "float32"):
    """(model, processor) from a local folder, never the network."""
    import importlib.util

    if importlib.util.find_spec("torchvision") is not None:  # transformers' image processors may import it
        from metrics._compat_torchvision import ensure_torchvision

        ensure_torchvision()
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from cdm_bench.metric import torch_dtype

    model = AutoModelForImageTextToText.from_pretrained(str(folder), dtype=torch_dtype(dtype), local_files_only=True)
    processor = AutoProcessor.from_pretrained(str(folder), local_files_only=True)
    return model.to(device).eval(), processor


def smart_resize(height: int, width: int, factor: int = FACTOR, min_pixels: int = MIN_TOKENS * FACTOR ** 2,
                 max_pixels: int = MAX_TOKENS * FACTOR ** 2) -> tuple[int, int]:
    """qwen-vl-utils' ``smart_resize``: sides divisible by ``factor``, pixels in range, ratio kept."""
    if max(height, width) / min(height, width) > MAX_RATIO:
        raise ValueError(f"absolute aspect ratio must be smaller than {MAX_RATIO}, got {max(height, width) / min(height, width)}")
    h_bar = max(factor, round(height / factor) * factor)
    w_bar = max(factor, round(width / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = math.floor(height / beta / factor) * factor
        w_bar = math.floor(width / beta / factor) * factor
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def fetch_image(image):
    """An image as qwen-vl-utils hands it to the processor (RGB, resized to ``smart_resize``)."""
    from PIL import Image

    if not isinstance(image, Image.Image):
        import numpy as np

        image = Image.fromarray(np.asarray(image, dtype=np.uint8))
    if image.mode == "RGBA":
        rgb = Image.new("RGB", image.size, (255, 255, 255))
        rgb.paste(image, mask=image.split()[3])
        image = rgb
    else:
        image = image.convert("RGB")
    width, height = image.size
    h, w = smart_resize(height, width)
    return image.resize((w, h))


def chat_inputs(processor, messages: list[dict], images: list, device: str = "cpu"):
    """The processor's tensors for one conversation (``{"type": "image"}`` entries in the
    messages, ``images`` in the same order), with the generation prompt appended."""
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    inputs = processor(text=[text], images=[fetch_image(im) for im in images] or None, padding=True,
                       return_tensors="pt", do_resize=False)
    return inputs.to(device)
