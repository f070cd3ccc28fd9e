"""Content hashes of files and folders (weights, prompt files, images): the one place that reads
bytes to name them.

* :func:`file_sha256`: the sha256 of a file's whole content, computed once per
  (real path, size, mtime, inode) and remembered in memory and in
  ``cache_dir()/file-sha256.json``, so a 5 GB checkpoint is read once, not at every run. A
  file replaced in place changes its mtime or size, so its hash is computed again. A file in
  the Hugging Face cache (a symlink to a blob named by its sha256) is named by its blob.
* :func:`tree_sha256`: a file's hash, or for a folder the sha256 over ``relative path  sha256``
  lines of every regular file in it (hidden files and folders, e.g. ``.cache/``, skipped).

No partial-file fingerprints: two different files never share a hash.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from pathlib import Path

HEX64 = re.compile(r"[0-9a-f]{64}")
CACHE_FILE = "file-sha256.json"
_memory: dict[str, list] = {}
_loaded = False
_lock = threading.Lock()


def bytes_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _stream_sha256(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def _cache_path() -> Path | None:
    try:
        from cdm_bench.paths import cache_dir

        return cache_dir() / CACHE_FILE
    except OSError:  # an unwritable cache: hashes are remembered in memory only
        return None


def _load_disk() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    path = _cache_path()
    try:
        data = json.loads(path.read_text()) if path is not None and path.is_file() else {}
    except (OSError, ValueError):
        data = {}
    if isinstance(data, dict):
        _memory.update({k: v for k, v in data.items() if isinstance(v, list) and len(v) == 2})


def _save_disk() -> None:
    from cdm_bench.atomic import atomic_write_text

    path = _cache_path()
    if path is None:
        return
    try:
        atomic_write_text(path, json.dumps(_memory))
    except OSError:
        pass


def file_sha256(path, trust_hub_blobs: bool = True) -> str:
    """The sha256 of ``path``'s content (cached per real path, size, mtime and inode)."""
    path = Path(path)
    if trust_hub_blobs and path.is_symlink():  # HF cache: snapshots/<rev>/f -> blobs/<sha256>
        blob = Path(os.readlink(path)).name
        if HEX64.fullmatch(blob):
            return blob
    real = path.resolve()
    st = real.stat()
    stamp = f"{st.st_size}:{st.st_mtime_ns}:{st.st_ino}"
    with _lock:
        _load_disk()
        hit = _memory.get(str(real))
        if hit and hit[0] == stamp:
            return hit[1]
    digest = _stream_sha256(real)
    with _lock:
        _memory[str(real)] = [stamp, digest]
        _save_disk()
    return digest


def tree_files(root: Path) -> list[Path]:
    """Every regular file under ``root`` (sorted; hidden entries skipped)."""
    root = Path(root)
    if root.is_file():
        return [root]
    return sorted(f for f in root.rglob("*")
                  if f.is_file() and not any(p.startswith(".") for p in f.relative_to(root).parts))


def tree_sha256(path) -> str | None:
    """A file's sha256, or a folder's over its files' relative paths and hashes; None when the
    path does not exist."""
    if path is None:
        return None
    root = Path(path).expanduser()
    if not root.exists():
        return None
    if root.is_file():
        return file_sha256(root)
    lines = [f"{f.relative_to(root).as_posix()}  {file_sha256(f)}\n" for f in tree_files(root)]
    return hashlib.sha256("".join(lines).encode()).hexdigest()
