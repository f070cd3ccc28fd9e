"""``apply_overrides`` is the one door every recipe override passes (CLI ``--set``, sweep cells,
``base:`` recipes' callers): over generated recipes and overrides it never edits its inputs, its
result shares no mutable value with them, and the last override of a key wins."""

import copy

from hypothesis import given, settings
from hypothesis import strategies as st

from cdm_bench.distill.recipe_files import apply_overrides

KEYS = st.sampled_from(["train", "losses", "ca", "dm", "lora", "steps", "weight", "target_modules"])
LEAF = st.one_of(st.integers(-5, 5), st.floats(-2, 2, allow_nan=False), st.text("ab", max_size=2),
                 st.booleans())
VALUE = st.recursive(LEAF, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                   st.dictionaries(KEYS, inner, max_size=3)), max_leaves=8)
RAW = st.dictionaries(KEYS, st.dictionaries(KEYS, VALUE, max_size=3), max_size=4)
DOTTED = st.lists(KEYS, min_size=1, max_size=3).map(".".join)
OVERRIDES = st.lists(st.tuples(DOTTED, VALUE), max_size=5)


def _apply(raw, items):
    try:
        return apply_overrides(raw, dict(items))
    except Exception as exc:  # a path through a non-section is a named error, never a partial edit
        assert "is not a section" in str(exc), exc
        return None


def _mutate(node) -> None:
    if isinstance(node, dict):
        for key in list(node):
            _mutate(node[key])
        node["__mutated__"] = 1
    elif isinstance(node, list):
        for item in node:
            _mutate(item)
        node.append("__mutated__")


@settings(max_examples=300, deadline=None)
@given(raw=RAW, items=OVERRIDES)
def test_overrides_never_touch_their_inputs_and_share_nothing_with_them(raw, items):
    raw_before, items_before = copy.deepcopy(raw), copy.deepcopy(items)
    out = _apply(raw, items)
    assert raw == raw_before and items == items_before
    if out is None:
        return
    _mutate(out)  # editing the result (as a later override or the parser might) leaves both alone
    assert raw == raw_before and items == items_before


@settings(max_examples=200, deadline=None)
@given(raw=RAW, dotted=DOTTED, first=LEAF, last=LEAF)
def test_the_last_override_of_a_key_wins(raw, dotted, first, last):
    once = _apply(raw, [(dotted, last)])
    if once is None:
        return
    twice = apply_overrides(apply_overrides(raw, {dotted: first}), {dotted: last})
    node = twice
    for key in dotted.split("."):
        node = node[key]
    assert node == last and twice == once
