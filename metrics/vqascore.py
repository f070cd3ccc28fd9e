"""``vqascore``: VQAScore (Lin et al., 2024; the t2v_metrics package) — the probability that a
vision-language model answers "Yes" when asked whether the image shows the prompt.

The definition is t2v_metrics' own Qwen2-VL / Qwen2.5-VL scorer
(``t2v_metrics/models/vqascore_models/qwen2vl_model.py``, ``Qwen2VLModel.forward``):

* the question ``question_template.format(prompt)``; default the t2v_metrics 3.1 template
  ``Does this figure show "{}"? Please answer Yes or No.`` (the PyPI release 3.0 uses
  ``Does this image show "{}"?``: pass it as ``question_template`` to reproduce 3.0's numbers);
* one user turn ``[image, question]`` through the model's chat template with the generation
  prompt; the image resized as qwen-vl-utils' ``process_vision_info`` does, then the processor
  with ``do_resize=False``;
* ``model.generate(max_new_tokens=1, do_sample=False, temperature=1.0, output_scores=True)``:
  the score is ``softmax(scores[0])[id]``, ``id`` the first token of ``answer_template``
  ("Yes") encoded without special tokens. ``scores`` are the generation's processed logits, so
  a repetition penalty in the model's ``generation_config.json`` applies, as in t2v_metrics.

Per-image scores in [0, 1], higher is better; the set value is their mean. When the prompt rows
carry skill tags (the GenAI-Bench set: a ``skills`` list per row), ``skill/<tag>`` is the mean
over the images whose prompt has that tag, as t2v_metrics' GenAI-Bench evaluation reports them.
The tests check the number against the t2v-metrics package itself on a tiny random model.

Options: ``model`` (a local Qwen2-VL / Qwen2.5-VL folder, or a hub id in the local Hugging Face
cache; default t2v_metrics' ``qwen2.5-vl-7b``: Qwen/Qwen2.5-VL-7B-Instruct), ``question_template``
(must hold one ``{}``), ``answer_template``, ``device``, ``dtype`` (t2v_metrics runs bfloat16).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Sequence

import numpy as np

from cdm_bench.errors import MissingDependencyError, SpecError
from cdm_bench.metric import PerImageMetric, missing_packages, weights_fingerprint

DEFAULT_MODEL = "Qwen/Qwen2.5-VL-7B-Instruct"
QUESTION = 'Does this figure show "{}"? Please answer Yes or No.'
QUESTION_T2V_3_0 = 'Does this image show "{}"?'
ANSWER = "Yes"


class VQAScore(PerImageMetric):
    """P("Yes") per image, with per-skill sub-values when the prompts carry skill tags."""

    name = "vqascore"
    version = "1"
    higher_is_better = True
    input_format = "pil"
    requires = ("torch", "transformers")
    extra = "eval"
    env_hint = "make eval-env"
    batch_size = 8

    def __init__(self, device: str = "cpu", dtype: str = "float32", model: str = DEFAULT_MODEL,
                 question_template: str = QUESTION, answer_template: str = ANSWER):
        super().__init__(device, dtype)
        if not isinstance(model, str) or not model.strip():
            raise SpecError(f"metric 'vqascore': model must be a local folder or a hub id, got {model!r}")
        if not isinstance(question_template, str) or question_template.count("{}") != 1:
            raise SpecError(f"metric 'vqascore': question_template must hold exactly one {{}} (the prompt), "
                            f"got {question_template!r}")
        if not isinstance(answer_template, str) or not answer_template.strip():
            raise SpecError(f"metric 'vqascore': answer_template must be a non-empty string, got {answer_template!r}")
        self.model_ref, self.question, self.answer = model, question_template, answer_template
        self.model: Any = None
        self.processor: Any = None
        self._answer_id: int | None = None

    def check(self) -> None:
        missing = missing_packages(self.requires)
        if missing:
            raise MissingDependencyError(f"metric 'vqascore' needs package(s) {', '.join(missing)}: "
                                         f"pip install 'cdm-bench[{self.extra}]' or use the eval env ({self.env_hint})")
        from metrics.vlm_local import check_model

        check_model("metric 'vqascore'", self.model_ref, self.extra)

    def setup(self) -> None:
        from metrics.vlm_local import check_model, load_vlm

        folder = check_model("metric 'vqascore'", self.model_ref, self.extra)
        self.model, self.processor = load_vlm(folder, self.device, self.dtype)
        ids = self.processor.tokenizer.encode(self.answer, add_special_tokens=False)
        if not ids:
            raise SpecError(f"metric 'vqascore': answer_template {self.answer!r} encodes to no token")
        self._answer_id = int(ids[0])

    def teardown(self) -> None:
        self.model = self.processor = None
        super().teardown()

    def score_one(self, image, prompt: str) -> float:
        import torch

        from metrics.vlm_local import chat_inputs

        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": self.question.format(prompt)}]}]
        inputs = chat_inputs(self.processor, messages, [image], self.device)
        with torch.inference_mode():
            out = self.model.generate(**inputs, max_new_tokens=1, do_sample=False, temperature=1.0,
                                      output_scores=True, return_dict_in_generate=True)
        probs = torch.softmax(out.scores[0][0].float(), dim=-1)
        return float(probs[self._answer_id])

    def score(self, images, prompts: Sequence[str], meta: Sequence[dict]) -> np.ndarray:
        if self.model is None:
            raise RuntimeError("metric 'vqascore': score() before setup()")
        return np.asarray([self.score_one(im, p) for im, p in zip(images, prompts)], dtype=np.float64)

    def aggregate(self, scores: np.ndarray, meta: Sequence[dict]) -> dict[str, float]:
        out = {self.name: float(np.mean(scores))}
        by_skill: dict[str, list[float]] = defaultdict(list)
        for s, m in zip(scores, meta):
            for tag in m.get("skills") or []:
                by_skill[str(tag)].append(float(s))
        out.update({f"skill/{tag}": float(np.mean(v)) for tag, v in sorted(by_skill.items())})
        return out

    def describe(self) -> dict:
        from metrics.vlm_local import config_sha256, locate_model

        return {**super().describe(), "model": self.model_ref, "config_sha256": config_sha256(locate_model(self.model_ref)),
                "weights_fingerprint": weights_fingerprint(self.model_ref),
                "question_template": self.question, "answer_template": self.answer, "definition": "t2v_metrics"}
