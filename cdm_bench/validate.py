"""Value checks shared by every command: numbers in range and keyword arguments of the declared
type, checked before anything is written.

* :func:`int_in_range`: an integer option (``--samples-per-prompt``, ``--limit``, batch and chunk
  sizes, seeds) within the bounds below; a bool, a string or a fractional float is refused.
* :func:`check_kwargs`: the keyword arguments a spec or ``--metric-options`` passes to a class's
  ``__init__``, against its annotations (``int``, ``float``, ``str``, ``bool``, ``list``, ``dict``,
  ``X | None``; ``Any`` and other classes are left to the class).

Bounds are what one machine can hold: a job list of :data:`MAX_IMAGES` images is ~2 GB of
Python objects, so more is refused before it is built.
"""

from __future__ import annotations

import inspect
import types
import typing

from cdm_bench.errors import SpecError

MAX_SAMPLES_PER_PROMPT = 10_000
MAX_IMAGES = 10_000_000
MAX_BATCH = 65_536
MAX_CHUNK = 1_000_000
MAX_SEED = 2**63 - 1
#: the most bytes of decoded images one batch may hold (generate's output, evaluate's input);
#: a batch size that asks for more is lowered to fit (images never depend on the batch size)
BATCH_BYTES = 1 << 30


def fitting_batch(batch_size: int, bytes_per_image: int, what: str) -> int:
    """``batch_size``, lowered so that a batch of ``bytes_per_image`` images fits
    :data:`BATCH_BYTES` (at least 1); says so in the log when it lowers it."""
    fit = max(1, BATCH_BYTES // max(int(bytes_per_image), 1))
    if fit < batch_size:
        import logging

        logging.getLogger("cdm_bench").warning("%s: batch size %d lowered to %d (%d images of %.1f MB fit in %d MiB)",
                                               what, batch_size, fit, fit, bytes_per_image / 1e6, BATCH_BYTES >> 20)
        return fit
    return batch_size


def known_keys(value, keys, what: str) -> dict:
    """``value`` if it is a mapping whose keys are all in ``keys`` (one-line SpecError otherwise)."""
    if not isinstance(value, dict):
        raise SpecError(f"{what} must be a mapping with keys {sorted(keys)}, got {value!r}"[:300])
    unknown = sorted(set(value) - set(keys), key=str)
    if unknown:
        raise SpecError(f"{what}: unknown keys {unknown}; known: {sorted(keys)}")
    return value


def int_in_range(value, name: str, lo: int, hi: int) -> int:
    """``value`` as an int within ``[lo, hi]``, else a one-line :class:`SpecError`."""
    if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, float) and value.is_integer())):
        try:
            import numpy as np

            if isinstance(value, np.integer):
                return int_in_range(int(value), name, lo, hi)
        except ImportError:  # pragma: no cover
            pass
        raise SpecError(f"{name} must be an integer, got {value!r}")
    if not lo <= int(value) <= hi:
        raise SpecError(f"{name} must be between {lo:,} and {hi:,}, got {int(value):,}")
    return int(value)


_PLAIN = {int: (int,), float: (int, float), str: (str,), bool: (bool,), list: (list, tuple), tuple: (list, tuple),
          dict: (dict,)}


_TYPE_WORDS = {type(None): "null", bool: "true or false", int: "an integer", float: "a number", str: "a string",
               list: "a list", tuple: "a list", dict: "a mapping"}


def _accepts(annotation):
    """The plain types an annotation allows, or None when it cannot be checked here."""
    if annotation in _PLAIN:
        return _PLAIN[annotation]
    if annotation is type(None) or annotation is None:
        return (type(None),)
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        parts = [_accepts(a) for a in typing.get_args(annotation)]
        return None if any(p is None for p in parts) else tuple(t for p in parts for t in p)
    if origin in _PLAIN:
        return _PLAIN[origin]
    return None


def _matches(value, allowed: tuple) -> bool:
    if isinstance(value, bool):
        return bool in allowed
    if isinstance(value, float) and int in allowed and float not in allowed:
        return value.is_integer()
    return isinstance(value, allowed)


def check_kwargs(cls: type, kwargs: dict, what: str) -> None:
    """Refuse values whose type ``cls.__init__``'s annotations do not allow."""
    try:
        params = inspect.signature(cls.__init__, eval_str=True).parameters
    except (NameError, TypeError, SyntaxError):  # annotations that do not resolve: names only
        return
    for key, value in kwargs.items():
        if key not in params:
            continue
        allowed = _accepts(params[key].annotation)
        if allowed is not None and not _matches(value, allowed):
            names = " or ".join(sorted({_TYPE_WORDS.get(t, t.__name__) for t in allowed}))
            raise SpecError(f"{what}: {key} must be {names}, got {type(value).__name__} {str(value)[:60]!r}")
