"""The pairwise VLM-judge protocol of the reference evaluation (``cdm/rewards/llm_judge_scorer.py``
in byliutao/cdm): its system prompt and criteria with chain-of-thought, the verdict format
``[[Winner: Image A|B|Tie]]``, two rounds with the positions swapped, and the agreement rule (a
winner only when both rounds name the same image; otherwise a tie), images sent as PNG data URLs
of at most 1024 px on the long side (LANCZOS).

One difference, on purpose: an answer without a verdict is ``None`` here (the reference counts it
as a tie), so a caller can retry it and count a pair that never gets one as failed, not as a tie.
``TEMPLATE_VERSION`` changes whenever the prompts or the parsing change (it is part of the judge
metric's identity and of every stored response's key).
"""

from __future__ import annotations

import base64
import io
import re

import numpy as np

TEMPLATE_VERSION = "cdm-ref-1"

SYSTEM_PROMPT = (
    "You are an expert image quality evaluator, specializing in distinguishing "
    "between natural photographic details and AI-generated artifacts."
)

USER_TEMPLATE = """**Task:** Compare Image A and Image B based on the given Text Prompt.

**Text Prompt:** "{prompt}"

**Evaluation Criteria (Prioritized):**
1. **Instruction Following:** Does the image accurately reflect the prompt (objects, colors, spatial relations)?
2. **Realism & Texture (CRITICAL):**
   * Look closely at high-frequency details.
   * **Penalize "Noise":** Does the image have unnatural grain, pixelation, or "fried" artifacts?
   * **Penalize "Oversaturation/Greasy":** Does the image look like plastic or have excessive contrast (reward hacking)?
   * **Favor "Natural Details":** Prefer natural skin texture, realistic lighting falloff, and clean edges.
3. **Text Rendering:** If there is text, which one is more legible and correct?

**Step-by-Step Thinking Process (CoT):**
1. Analyze Image A's adherence to the prompt and its visual quality. Note any artifacts.
2. Analyze Image B's adherence to the prompt and its visual quality. Note any artifacts.
3. Directly compare A and B on "Realism". Which one looks more like a real photo and less like a generated image with artifacts?
4. Explain your reasoning for the winner.

**Verdict:**
Output your final decision as one of the following:
* [[Winner: Image A]]
* [[Winner: Image B]]
* [[Winner: Tie]]"""

_STRICT = re.compile(r"\[\[Winner:\s*(Image\s*[AB]|Tie)\]\]", re.IGNORECASE)
_LOOSE = re.compile(r"winner:\s*(image\s*[ab]|tie)\b", re.IGNORECASE)


def user_prompt(prompt: str) -> str:
    return USER_TEMPLATE.format(prompt=prompt)


def parse_verdict(text: str | None) -> str | None:
    """``"A"``, ``"B"``, ``"Tie"``, or None when the answer holds no verdict. The strict
    ``[[Winner: ...]]`` form wins (its last occurrence: the final decision after the reasoning);
    else the reference's loose ``winner: image a`` fallback."""
    if not text:
        return None
    found = _STRICT.findall(text) or _LOOSE.findall(text)
    if not found:
        return None
    last = re.sub(r"\s+", " ", found[-1].strip().lower())
    return {"image a": "A", "image b": "B", "tie": "Tie"}[last]


def combine(round1: str, round2: str) -> tuple[str, bool]:
    """The pair's outcome from round 1 (image A = generator a) and round 2 (positions swapped:
    image A = generator b): ``("a" | "b" | "tie", consistent)``; disagreement is a tie."""
    first = {"A": "a", "B": "b", "Tie": "tie"}[round1]
    second = {"A": "b", "B": "a", "Tie": "tie"}[round2]
    return (first, True) if first == second else ("tie", False)


def image_data_url(image: np.ndarray, max_size: int = 1024) -> str:
    """A uint8 HxWx3 image as a PNG data URL, downscaled (LANCZOS) to at most ``max_size`` px."""
    from PIL import Image

    pil = Image.fromarray(np.asarray(image, dtype=np.uint8))
    w, h = pil.size
    if max(w, h) > max_size:
        scale = max_size / max(w, h)
        pil = pil.resize((int(w * scale), int(h * scale)), Image.LANCZOS)
    buf = io.BytesIO()
    pil.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
