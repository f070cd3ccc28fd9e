"""The pairwise judge protocol (metrics/llm_judge_protocol.py): verdict parsing (strict and loose
forms, the final decision wins, no verdict is None), the agreement rule over swapped rounds, and
the image data URLs (PNG, long side <= 1024, aspect kept)."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from metrics.llm_judge_protocol import TEMPLATE_VERSION, combine, image_data_url, parse_verdict, user_prompt


@pytest.mark.parametrize("text,want", [
    ("... so A is better. [[Winner: Image A]]", "A"), ("[[winner:image b]]", "B"), ("[[Winner: Tie]]", "Tie"),
    ("Options: [[Winner: Image A]] / [[Winner: Image B]] ... final: [[Winner: Image B]]", "B"),
    ("Winner: Image A", "A"), ("I cannot decide.", None), ("", None), (None, None),
    ("[[Winner: Image C]]", None),
])
def test_verdicts_parse(text, want):
    assert parse_verdict(text) == want


@given(st.text(max_size=200), st.sampled_from(["Image A", "Image B", "Tie"]))
def test_a_strict_verdict_at_the_end_always_wins(noise, verdict):
    assert parse_verdict(noise + f"\n[[Winner: {verdict}]]") == {"Image A": "A", "Image B": "B", "Tie": "Tie"}[verdict]


@pytest.mark.parametrize("r1,r2,want", [
    ("A", "B", ("a", True)),    # a first in round 1, a second (as image B) in round 2
    ("B", "A", ("b", True)),
    ("Tie", "Tie", ("tie", True)),
    ("A", "A", ("tie", False)),  # position bias: image A both times
    ("A", "Tie", ("tie", False)),
])
def test_the_agreement_rule(r1, r2, want):
    assert combine(r1, r2) == want


def test_images_are_png_data_urls_at_most_1024_px():
    from PIL import Image

    url = image_data_url(np.zeros((1536, 2048, 3), np.uint8))
    assert url.startswith("data:image/png;base64,")
    img = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert img.format == "PNG" and img.size == (1024, 768)
    small = Image.open(io.BytesIO(base64.b64decode(image_data_url(np.zeros((32, 48, 3), np.uint8)).split(",", 1)[1])))
    assert small.size == (48, 32)


def test_the_prompt_names_the_text_and_the_version_is_set():
    assert '"a red cube"' in user_prompt("a red cube") and "[[Winner: Tie]]" in user_prompt("x")
    assert TEMPLATE_VERSION
