"""The run directory: the one place that knows its file names and how each file is written.

Layout (``generate`` writes the first four, ``evaluate`` the rest)::

    generation.json      identity: generator spec + hash, prompt set (name, version, sha256),
                         seed, samples per prompt, environment, timings; written first
    images/<prompt_id>_<k>.png
    parts/part-<rank>-of-<world>.jsonl   records appended as images land (during a run)
    manifest.jsonl       one record per image, in prompt order; written last (run complete)
    scoring/<instance>-<key>/chunk-<i>.{parquet,safetensors}
                         evaluate's flushed work (per-image scores / set-level state), merged
                         and removed when the metric finishes; a killed evaluate resumes from it
    scores.parquet       per-image scores, one column per per-image metric instance
    results.json         per-set values, metric identities, status, the generation identity

Every write is atomic (a uniquely named temporary file, then ``os.replace``), so a reader sees
a file whole or not at all, and concurrent writers never share a temporary name. Nothing
outside this module spells one of these names.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import socket
import uuid
from pathlib import Path
from typing import Iterable

import numpy as np

from cdm_bench.errors import RunConflictError, RunNotFoundError

IDENTITY = "generation.json"
MANIFEST = "manifest.jsonl"
IMAGES = "images"
PARTS = "parts"
SCORES = "scores.parquet"
RESULTS = "results.json"
SCORING = "scoring"
LOCK = ".lock"

# manifest fields written by generate; a prompt row's extra fields may not reuse these names
RECORD_FIELDS = ("prompt_id", "k", "prompt", "seed", "file", "sha256", "spec_hash", "gen_s")
SCORE_BASE_COLUMNS = ["prompt_id", "k", "prompt", "seed", "file", "sha256"]


# -- atomic writes -------------------------------------------------------------------------------
def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (unique temp name, fsync-free rename)."""
    path = Path(path)
    tmp = _tmp_name(path)
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, default=json_default))


def json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def append_record(fh, record: dict) -> None:
    """Append one JSON line to an open part file (a cut line is repaired on the next start)."""
    fh.write(json.dumps(record) + "\n")


def repair_jsonl(path: Path) -> None:
    """Cut a partial last line (a crash or a full disk mid-append) so appends start clean."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) == b"\n":
            return
        f.seek(0)
        data = f.read()
        f.truncate(data.rfind(b"\n") + 1)


def read_jsonl(path: Path) -> list[dict]:
    """Records of a JSON-lines file; a cut last line (a crash mid-append) is dropped."""
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    out = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1:  # the append that was cut short: its image is re-done
                break
            raise
    return out


def image_set_hash(records: list[dict]) -> str:
    h = hashlib.sha256()
    for r in records:
        h.update(f"{r['prompt_id']}:{r['k']}:{r.get('sha256')}".encode())
    return h.hexdigest()


def generation_key(ident: dict) -> dict:
    """What makes two generations the same run (results belong to exactly one)."""
    return {"spec_hash": ident.get("spec_hash"), "name": (ident.get("generator") or {}).get("name"),
            "seed": ident.get("seed"), "prompts_sha256": (ident.get("prompt_set") or {}).get("sha256")}


class RunDir:
    """One run directory (a generation, and its evaluation when ``out`` is the same folder)."""

    def __init__(self, root):
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"RunDir({str(self.root)!r})"

    # -- paths ----------------------------------------------------------------------------------
    @property
    def identity_path(self) -> Path:
        return self.root / IDENTITY

    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST

    @property
    def images_dir(self) -> Path:
        return self.root / IMAGES

    @property
    def parts_dir(self) -> Path:
        return self.root / PARTS

    @property
    def scores_path(self) -> Path:
        return self.root / SCORES

    @property
    def results_path(self) -> Path:
        return self.root / RESULTS

    @property
    def scoring_dir(self) -> Path:
        return self.root / SCORING

    @staticmethod
    def image_name(prompt_id: str, k: int) -> str:
        """The manifest's ``file`` value of sample ``k`` of a prompt (relative to the run)."""
        return f"{IMAGES}/{prompt_id}_{k}.png"

    def part_path(self, rank: int, size: int) -> Path:
        return self.parts_dir / f"part-{rank}-of-{size}.jsonl"

    # -- one writer at a time -----------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self, what: str):
        """Hold this directory's writer lock (an ``flock``, released by the OS even on SIGKILL);
        a second writer is refused with a message naming the holder."""
        import fcntl

        self.root.mkdir(parents=True, exist_ok=True)
        fh = open(self.root / LOCK, "a+")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            fh.close()
            raise RunConflictError(f"{self.root} is being written by {holder}; wait for it to finish "
                                   f"or stop it, then run again") from None
        try:
            fh.seek(0)
            fh.truncate()
            fh.write(f"pid {os.getpid()} on {socket.gethostname()} ({what})")
            fh.flush()
            yield
        finally:
            fh.truncate(0)
            fcntl.flock(fh, fcntl.LOCK_UN)
            fh.close()

    # -- generation identity and records ----------------------------------------------------------
    def has_identity(self) -> bool:
        return self.identity_path.exists()

    def read_identity(self) -> dict:
        return json.loads(self.identity_path.read_text()) if self.identity_path.exists() else {}

    def write_identity(self, identity: dict) -> None:
        atomic_write_json(self.identity_path, identity)

    def is_complete(self) -> bool:
        return self.manifest_path.exists()

    def read_manifest(self) -> list[dict]:
        return read_jsonl(self.manifest_path)

    def write_manifest(self, records: list[dict]) -> None:
        atomic_write_text(self.manifest_path, "".join(json.dumps(r) + "\n" for r in records))

    def read_records(self) -> list[dict]:
        """Records of the manifest and of any unmerged parts (later ones win on merge)."""
        parts = sorted(self.parts_dir.glob("*.jsonl")) if self.parts_dir.is_dir() else []
        records = []
        for f in [self.manifest_path, *parts]:
            records += read_jsonl(f)
        return records

    def has_images(self) -> bool:
        """Any image or record here (a start that failed before its first image has none)."""
        pngs = self.images_dir.is_dir() and any(self.images_dir.glob("*.png"))
        return bool(pngs or self.read_records())

    def prepare_images(self) -> None:
        self.images_dir.mkdir(parents=True, exist_ok=True)
        self.parts_dir.mkdir(exist_ok=True)

    def clear_generation(self) -> None:
        """Remove images, parts, the manifest and any evaluation of them (``--overwrite``)."""
        import shutil

        for d in (self.images_dir, self.parts_dir, self.scoring_dir):
            shutil.rmtree(d, ignore_errors=True)
        for f in (self.manifest_path, self.scores_path, self.results_path):
            f.unlink(missing_ok=True)

    def remove_parts(self) -> None:
        import shutil

        shutil.rmtree(self.parts_dir, ignore_errors=True)

    # -- images -------------------------------------------------------------------------------------
    def image_path(self, record: dict) -> Path:
        return self.root / record["file"]

    def write_png(self, name: str, image: np.ndarray) -> bytes:
        """Encode ``image`` as PNG at ``name`` (relative) atomically; return the bytes written."""
        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).save(buf, format="PNG")
        data = buf.getvalue()
        atomic_write_bytes(self.root / name, data)
        return data

    def load_images(self, records: Iterable[dict]) -> np.ndarray:
        """uint8 (B, H, W, 3) for ``records``, decoded in order."""
        from PIL import Image

        arrays = []
        for r in records:
            with Image.open(self.image_path(r)) as im:
                arrays.append(np.asarray(im.convert("RGB")))
        return np.stack(arrays)

    # -- evaluation ----------------------------------------------------------------------------------
    def is_evaluated(self) -> bool:
        return self.results_path.exists()

    def read_results(self) -> dict:
        return json.loads(self.results_path.read_text()) if self.results_path.exists() else {}

    def write_results(self, results: dict) -> None:
        atomic_write_json(self.results_path, results)

    def read_scores(self):
        import pandas as pd

        return pd.read_parquet(self.scores_path) if self.scores_path.exists() else None

    def write_scores(self, frame) -> None:
        buf = io.BytesIO()
        frame.to_parquet(buf, index=False)
        atomic_write_bytes(self.scores_path, buf.getvalue())

    def chunk_dir(self, instance: str, key: str) -> Path:
        return self.scoring_dir / f"{instance}-{key}"

    def remove_chunks(self, instance: str, key: str) -> None:
        import shutil

        shutil.rmtree(self.chunk_dir(instance, key), ignore_errors=True)
        if self.scoring_dir.is_dir() and not any(self.scoring_dir.iterdir()):
            self.scoring_dir.rmdir()


LEADERBOARD_FILES = {"csv": "leaderboard.csv", "long_csv": "leaderboard_long.csv",
                     "html": "leaderboard.html", "md": "leaderboard.md", "tex": "leaderboard.tex"}


def leaderboard_paths(out_dir) -> dict[str, Path]:
    """The files ``cdm-bench leaderboard --out DIR`` (and ``run``, ``demo``) write into DIR."""
    return {kind: Path(out_dir) / name for kind, name in LEADERBOARD_FILES.items()}


def find_evaluated(paths) -> list[RunDir]:
    """Each path is an evaluated run directory or a folder holding some (searched recursively)."""
    runs: list[Path] = []
    for p in map(Path, paths):
        if (p / RESULTS).exists():
            runs.append(p)
        elif p.is_dir():
            runs += sorted(r.parent for r in p.rglob(RESULTS))
        else:
            raise RunNotFoundError(f"{p}: not a directory")
    if not runs:
        raise RunNotFoundError(f"no {RESULTS} under {', '.join(map(str, paths))}: run `cdm-bench evaluate` first")
    return [RunDir(r) for r in dict.fromkeys(runs)]
