"""Progress bars (tqdm) that stay readable in logs.

On a terminal: the usual live bar. When stderr is not a terminal (a batch job's log, CI): one
plain line at most every ``LOG_INTERVAL_S`` seconds instead of megabytes of carriage returns.
``TQDM_DISABLE=1`` turns them off.
"""

from __future__ import annotations

import sys
from typing import Any

LOG_INTERVAL_S = 30.0


class _LineWriter:
    """A file-like wrapper that turns tqdm's carriage-return redraws into whole lines."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text: str) -> None:
        text = text.replace("\r", "").strip("\n")
        if text.strip():
            self.stream.write(text + "\n")

    def flush(self) -> None:
        self.stream.flush()


def progress_bar(total: int | None = None, desc: str = "", unit: str = "it", disable: bool = False,
                 **kwargs: Any):
    """A ``tqdm`` bar; throttled to one line per ``LOG_INTERVAL_S`` when stderr is no terminal;
    none at all with ``TQDM_DISABLE=1`` (tqdm's own switch)."""
    import os

    from tqdm.auto import tqdm

    disable = disable or os.environ.get("TQDM_DISABLE", "").strip().lower() not in ("", "0", "false")
    stream = sys.stderr
    if not disable and not (hasattr(stream, "isatty") and stream.isatty()):
        kwargs.setdefault("mininterval", LOG_INTERVAL_S)
        kwargs.setdefault("maxinterval", LOG_INTERVAL_S * 10)
        kwargs.setdefault("ascii", True)
        kwargs.setdefault("dynamic_ncols", False)
        kwargs["file"] = _LineWriter(stream)
        from tqdm import tqdm as plain  # no notebook widgets in a log
        return plain(total=total, desc=desc, unit=unit, disable=disable, **kwargs)
    return tqdm(total=total, desc=desc, unit=unit, disable=disable, **kwargs)
