"""The ``transformers`` backend of ``llm_judge``: a local Qwen2-VL / Qwen2.5-VL class model
(``AutoModelForImageTextToText`` + ``AutoProcessor``) for offline judging.

It asks what :class:`metrics.llm_judge_backends.OpenAIBackend` asks, in the same message layout
(the system prompt, then one user turn: the text, image A, image B), decoded greedily (the
equivalent of temperature 0) up to ``max_new_tokens``. The pairwise code hands it the same PNG
data URLs as the OpenAI path; they are decoded back to the same pixels here, then resized as
qwen-vl-utils does (:func:`metrics.vlm_local.fetch_image`). Generation is serialised (one model,
any number of judge threads). Its identity holds the model reference, the sha256 of its
``config.json`` and the answer budget, so another model or config is another store key.
"""

from __future__ import annotations

import base64
import io
import threading

from metrics.llm_judge_protocol import SYSTEM_PROMPT


def decode_data_url(url: str):
    """A ``data:image/...;base64,`` URL -> the PIL image it holds (RGB)."""
    from PIL import Image

    if not url.startswith("data:image") or "base64," not in url:
        raise ValueError("the transformers judge backend takes base64 image data URLs")
    return Image.open(io.BytesIO(base64.b64decode(url.split("base64,", 1)[1]))).convert("RGB")


class TransformersBackend:
    def __init__(self, model: str, device: str = "cpu", dtype: str = "float32", max_new_tokens: int = 1024):
        from metrics.vlm_local import check_model, config_sha256

        self.model_ref, self.device, self.dtype, self.max_new_tokens = str(model), device, dtype, int(max_new_tokens)
        self.folder = check_model("llm_judge's transformers backend", self.model_ref, "eval")
        self.config_sha256 = config_sha256(self.folder)
        self.model = self.processor = None
        self._lock = threading.Lock()

    @property
    def identity(self) -> str:
        return f"transformers:{self.model_ref}:config-{(self.config_sha256 or 'none')[:16]}:{self.dtype}:max{self.max_new_tokens}"

    def load(self) -> None:
        if self.model is None:
            from metrics.vlm_local import load_vlm

            self.model, self.processor = load_vlm(self.folder, self.device, self.dtype)

    def messages(self, text: str, n_images: int) -> list[dict]:
        return [{"role": "system", "content": [{"type": "text", "text": SYSTEM_PROMPT}]},
                {"role": "user", "content": [{"type": "text", "text": text}] + [{"type": "image"}] * n_images}]

    def ask(self, text: str, image_urls: list[str]) -> str:
        import torch

        from metrics.vlm_local import chat_inputs

        images = [decode_data_url(u) for u in image_urls]
        with self._lock:
            self.load()
            inputs = chat_inputs(self.processor, self.messages(text, len(images)), images, self.device)
            with torch.inference_mode():
                out = self.model.generate(**inputs, do_sample=False, max_new_tokens=self.max_new_tokens)
            new = out[0][inputs["input_ids"].shape[1]:]
            return self.processor.batch_decode([new], skip_special_tokens=True)[0].strip()
