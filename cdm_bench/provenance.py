"""What results record about themselves: code version, environment, seeds."""

from __future__ import annotations

import hashlib
import platform
import subprocess
import sys
import time
from importlib.metadata import PackageNotFoundError, version

from cdm_bench.paths import REPO_ROOT

TRACKED_PACKAGES = ("cdm-bench", "torch", "numpy", "diffusers", "transformers", "accelerate",
                    "torchmetrics", "pandas", "pillow", "open_clip_torch")


def sample_seed(base_seed: int, prompt_id: str, k: int) -> int:
    """The seed of sample k of a prompt: a function of (base seed, prompt id, k) only."""
    digest = hashlib.sha256(f"{base_seed}:{prompt_id}:{k}".encode()).digest()
    return int.from_bytes(digest[:8], "little") % (2**31 - 1)


def git_info() -> dict:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True,
                              timeout=10).stdout.strip()

    try:
        return {"commit": git("rev-parse", "HEAD") or "unknown",
                "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}
    except (OSError, subprocess.SubprocessError):
        return {"commit": "unknown", "dirty": None}


def package_versions() -> dict:
    out = {}
    for name in TRACKED_PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out


def environment() -> dict:
    """Versions, git hash and platform (importing nothing heavy)."""
    return {"git": git_info(), "packages": package_versions(), "python": sys.version.split()[0],
            "platform": platform.platform(), "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


from cdm_bench.hashing import file_sha256  # noqa: E402,F401 - re-exported (the one file hasher)
