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
    pairwise/<instance>-<key>/   a pairwise metric against another run (``evaluate --against``):
                         responses.jsonl (every raw answer), verdicts.csv, summary.json

Every write is atomic (a uniquely named temporary file, then ``os.replace``), so a reader sees
a file whole or not at all, and concurrent writers never share a temporary name. Nothing
outside this module spells one of these names.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import socket
from pathlib import Path
from typing import Iterable

import numpy as np

from cdm_bench.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text, is_temp_name, json_default
from cdm_bench.errors import EvaluationInputError, RunConflictError
from cdm_bench.runrecords import (  # noqa: F401  (re-exported: the records' own module)
    IMAGES, SHA256_RE, _read_json, append_record, check_record, generation_key, image_name, image_set_hash,
    is_identity, read_jsonl, repair_jsonl)

__all__ = ["RunDir", "generation_key", "image_set_hash", "atomic_write_bytes", "atomic_write_json",
           "atomic_write_text", "json_default"]

IDENTITY = "generation.json"
MANIFEST = "manifest.jsonl"
PARTS = "parts"
SCORES = "scores.parquet"
RESULTS = "results.json"
SCORING = "scoring"
PAIRWISE = "pairwise"
LOCK = ".lock"
#: every name cdm-bench writes at the top of a run directory
OWN_NAMES = frozenset({IDENTITY, MANIFEST, IMAGES, PARTS, SCORES, RESULTS, SCORING, PAIRWISE, LOCK})
PART_RE = re.compile(r"part-\d+-of-\d+\.jsonl")
CHUNK_FILE_RE = re.compile(r"(chunk-\d+\.(parquet|safetensors)|(provenance|error)-r\d+\.json)")

# manifest fields written by generate; a prompt row's extra fields may not reuse these names
RECORD_FIELDS = ("prompt_id", "k", "prompt", "seed", "file", "sha256", "spec_hash", "gen_s")
SCORE_BASE_COLUMNS = ["prompt_id", "k", "prompt", "seed", "file", "sha256"]


class RunDir:
    """One run directory (a generation, and its evaluation when ``out`` is the same folder).

    Ownership: cdm-bench deletes or replaces only what it wrote here — the names in
    :data:`OWN_NAMES`, the images its records name, its part and chunk files and its own
    temporary names. Anything else in the folder (a user's file) is left alone."""

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

    def pairwise_dir(self, instance: str, against_key: str) -> Path:
        """``pairwise/<instance>-<key>/``: a pairwise metric's verdicts against another run
        (``key``: that run's generation key and the judge's identity, hashed)."""
        return self.root / PAIRWISE / f"{instance}-{against_key}"

    image_name = staticmethod(image_name)

    def part_path(self, rank: int, size: int) -> Path:
        return self.parts_dir / f"part-{rank}-of-{size}.jsonl"

    # -- locks: one writer, or any number of readers ----------------------------------------------------
    @contextlib.contextmanager
    def lock(self, what: str, shared: bool = False):
        """Hold this directory's lock (an ``flock``, released by the OS even on SIGKILL):
        exclusive for a writer (generate, or evaluate into this folder), shared for a reader
        (evaluate reading the images into another ``--out``). A conflict is refused at once with
        a message naming the holder. A reader creates nothing: without a lock file (a run copied
        without it, a read-only folder) it reads unlocked, and each image's sha256 is still checked
        when it is scored."""
        import fcntl

        if shared:
            try:
                fh = open(self.root / LOCK)
            except OSError:
                yield
                return
        else:
            self.root.mkdir(parents=True, exist_ok=True)
            fh = open(self.root / LOCK, "a+")
        try:
            fcntl.flock(fh, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "an evaluate that is reading its images"
            fh.close()
            raise RunConflictError(f"{self.root} is in use by {holder}; wait for it to finish "
                                   f"or stop it, then run again") from None
        try:
            if not shared:
                fh.seek(0)
                fh.truncate()
                fh.write(f"pid {os.getpid()} on {socket.gethostname()} ({what})")
                fh.flush()
            yield
        finally:
            if not shared:
                fh.truncate(0)
            fcntl.flock(fh, fcntl.LOCK_UN)
            fh.close()

    # -- generation identity and records ----------------------------------------------------------
    def has_identity(self) -> bool:
        return self.identity_path.exists()

    def read_identity(self) -> dict:
        """The generation identity ({} when absent); a file that is not one cdm-bench wrote is a
        one-line error (it is never replaced)."""
        ident = _read_json(self.identity_path, "the generation record",
                           "move it away or choose another folder (cdm-bench never replaces a file it did not write)")
        if ident is None:
            return {}
        if not is_identity(ident):
            raise RunConflictError(f"{self.identity_path} was not written by cdm-bench generate; move it away "
                                   f"or choose another folder")
        return ident

    def write_identity(self, identity: dict) -> None:
        atomic_write_json(self.identity_path, identity)

    def is_complete(self) -> bool:
        return self.manifest_path.exists()

    def read_manifest(self) -> list[dict]:
        """The manifest's records, each checked (file name, k, sha256); a record listed twice (a
        manifest joined with itself) is refused."""
        path = self.manifest_path
        records = read_jsonl(path)
        seen = set()
        for r in records:
            check_record(r, path)
            key = (r["prompt_id"], r["k"])
            if key in seen:
                raise EvaluationInputError(f"{path}: image {key[0]!r}/{key[1]} is listed twice "
                                           f"(a manifest joined with itself or edited?); regenerate it")
            seen.add(key)
        return records

    def write_manifest(self, records: list[dict]) -> None:
        atomic_write_text(self.manifest_path, "".join(json.dumps(r) + "\n" for r in records))

    def part_files(self) -> list[Path]:
        if not self.parts_dir.is_dir():
            return []
        return sorted(f for f in self.parts_dir.iterdir() if PART_RE.fullmatch(f.name))

    def read_records(self) -> list[dict]:
        """Records of the manifest and of any unmerged parts (later ones win on merge)."""
        records = self.read_manifest() if self.manifest_path.exists() else []
        for f in self.part_files():
            for r in read_jsonl(f):
                check_record(r, f)
                records.append(r)
        return records

    def own_image_files(self) -> set[str]:
        """The image files (relative names) that this run's records name."""
        return {r["file"] for r in self.read_records()}

    def has_images(self) -> bool:
        """Any record here, or a PNG one would name (a start that failed before its first image
        has none)."""
        return bool(self.read_records())

    def foreign_entries(self, known_images: set[str] | None = None) -> list[str]:
        """Entries here that cdm-bench did not write (relative names, sorted)."""
        if not self.root.is_dir():
            return []
        known_images = self.own_image_files() if known_images is None else known_images
        out = [e.name for e in self.root.iterdir() if e.name not in OWN_NAMES and not is_temp_name(e.name)]
        if self.images_dir.is_dir():
            out += [f"{IMAGES}/{e.name}" for e in self.images_dir.iterdir()
                    if f"{IMAGES}/{e.name}" not in known_images and not is_temp_name(e.name)]
        return sorted(out)

    def prepare_images(self) -> None:
        self.images_dir.mkdir(parents=True, exist_ok=True)
        self.parts_dir.mkdir(exist_ok=True)

    def clear_generation(self) -> None:
        """Remove this run's images, parts, manifest and evaluation (``--overwrite``, or a run
        replaced by another): only files its records name and its own files; a user's file stays."""
        for name in self.own_image_files():
            (self.root / name).unlink(missing_ok=True)
        self.remove_parts()
        if self.scoring_dir.is_dir():
            for d in self.scoring_dir.iterdir():
                if d.is_dir():
                    self._remove_own_chunks(d)
            _rmdir_if_empty(self.scoring_dir)
        self.manifest_path.unlink(missing_ok=True)
        if self.results_path.exists():
            self.read_results(force=True)  # refuses a results.json cdm-bench did not write
            self.results_path.unlink()
            self.scores_path.unlink(missing_ok=True)

    def remove_stale_temps(self) -> None:
        """Delete temporary files a killed writer left (only names :mod:`cdm_bench.atomic` makes;
        called under the writer lock, when no write of this run is in flight)."""
        for folder in (self.root, self.images_dir):
            if folder.is_dir():
                for f in folder.iterdir():
                    if is_temp_name(f.name) and f.is_file():
                        f.unlink(missing_ok=True)

    def remove_parts(self) -> None:
        for f in self.part_files():
            f.unlink()
        _rmdir_if_empty(self.parts_dir)

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

    def read_image_bytes(self, record: dict) -> bytes:
        """The bytes of ``record``'s file (one open/read/close: measured 7 us per small file
        against 26 us through pathlib on this machine kind); missing -> EvaluationInputError."""
        path = os.path.join(self.root, record["file"])
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            raise EvaluationInputError(f"{path}: missing (deleted while it was being scored?)") from None
        try:
            size, chunks = os.fstat(fd).st_size, []
            while True:  # a file that grows while it is read is read to its end
                part = os.read(fd, max(size + 1, 1 << 16))
                if not part:
                    return b"".join(chunks)
                chunks.append(part)
        finally:
            os.close(fd)

    def load_images(self, records: Iterable[dict], verify: bool = True) -> np.ndarray:
        """uint8 (B, H, W, 3) for ``records``, decoded in order; with ``verify`` each file's bytes
        must match its record's sha256 (an image changed since it was checked stops the caller)."""
        from cdm_bench.hashing import bytes_sha256
        from cdm_bench.imagecodec import decode_rgb

        arrays = []
        for r in records:
            data = self.read_image_bytes(r)
            if verify and r.get("sha256") and bytes_sha256(data) != r["sha256"]:
                raise EvaluationInputError(f"{self.image_path(r)}: content does not match the manifest's sha256 "
                                           f"(changed while it was being scored); nothing of it is kept")
            arrays.append(decode_rgb(data))
        return np.stack(arrays)

    # -- evaluation ----------------------------------------------------------------------------------
    def is_evaluated(self) -> bool:
        return self.results_path.exists()

    def read_results(self, force: bool = False) -> dict:
        """results.json ({} when absent). A corrupt one is an error naming the file and
        ``--force`` (with ``force`` it reads as absent, to be rebuilt); one cdm-bench did not
        write is refused even with ``force``."""
        try:
            res = _read_json(self.results_path, "results.json",
                             "re-run `cdm-bench evaluate` with --force to rebuild it")
        except EvaluationInputError:
            if force:
                return {}
            raise
        if res is None:
            return {}
        if not (isinstance(res, dict) and isinstance(res.get("metrics", {}), dict)
                and isinstance(res.get("generation", {}), dict) and ("metrics" in res or "generation" in res)):
            raise RunConflictError(f"{self.results_path} was not written by cdm-bench evaluate; move it away or "
                                   f"choose another --out (cdm-bench never replaces a file it did not write)")
        return res

    def write_results(self, results: dict) -> None:
        atomic_write_json(self.results_path, results)

    def read_scores(self, force: bool = False):
        """scores.parquet (None when absent); corrupt: an error naming it and ``--force``."""
        import pandas as pd

        if not self.scores_path.exists():
            return None
        try:
            return pd.read_parquet(self.scores_path)
        except Exception as exc:  # pyarrow raises several types for a damaged file
            if force:
                return None
            raise EvaluationInputError(f"{self.scores_path}: corrupt or truncated ({type(exc).__name__}); re-run "
                                       f"`cdm-bench evaluate` with --force to rebuild it") from None

    def write_scores(self, frame) -> None:
        buf = io.BytesIO()
        frame.to_parquet(buf, index=False)
        atomic_write_bytes(self.scores_path, buf.getvalue())

    def chunk_dir(self, instance: str, key: str) -> Path:
        return self.scoring_dir / f"{instance}-{key}"

    def remove_chunks(self, instance: str, key: str) -> None:
        self._remove_own_chunks(self.chunk_dir(instance, key))
        _rmdir_if_empty(self.scoring_dir)

    @staticmethod
    def _remove_own_chunks(folder: Path) -> None:
        if not folder.is_dir():
            return
        for f in folder.iterdir():
            if CHUNK_FILE_RE.fullmatch(f.name) or is_temp_name(f.name):
                f.unlink()
        _rmdir_if_empty(folder)


def _rmdir_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:  # not empty (a file cdm-bench did not write) or already gone
        pass


LEADERBOARD_FILES = {"csv": "leaderboard.csv", "long_csv": "leaderboard_long.csv",
                     "html": "leaderboard.html", "md": "leaderboard.md", "tex": "leaderboard.tex",
                     "pairwise_csv": "pairwise.csv", "ranking_csv": "ranking.csv"}
