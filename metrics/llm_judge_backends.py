"""Backends and the response store of the pairwise judge (issue 24 groundwork).

* :class:`OpenAIBackend`: any OpenAI-compatible chat-completions server (vLLM, SGLang, a hosted
  API) through the ``openai`` package: temperature 0, at most 1,024 answer tokens, the API key
  read from the environment variable the options name (never stored), retries with exponential
  backoff on 429 / 5xx / timeouts / connection errors (the client's own retry logic).
* :class:`ResponseStore`: every raw answer, appended to a JSONL file as it arrives (flushed and
  fsynced), keyed by the two images' sha256, the prompt, the judge model, the template version and
  the round; a killed run re-reads it and asks nothing twice.
* :func:`judge_pairs`: both rounds of every pair (bounded concurrency), an answer without a
  verdict asked again up to ``parse_retries`` times, the agreement rule; a pair whose calls fail
  is ``status: failed`` (never a tie).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from cdm_bench.errors import CdmBenchError, MissingDependencyError
from metrics.llm_judge_protocol import SYSTEM_PROMPT, TEMPLATE_VERSION, combine, parse_verdict, user_prompt


class JudgeCallFailed(CdmBenchError):
    """A judge call failed after its retries."""


class OpenAIBackend:
    def __init__(self, base_url: str, model: str, api_key_env: str = "OPENAI_API_KEY", timeout: float = 120.0,
                 max_retries: int = 5):
        try:
            import openai
        except ImportError:
            raise MissingDependencyError("llm_judge's openai backend needs the openai package: "
                                         "pip install 'cdm-bench[judge]'") from None
        key = os.environ.get(api_key_env)
        if key is None:
            raise CdmBenchError(f"llm_judge: the API key variable {api_key_env} is not set (set it, or name another "
                                f"with the option api_key_env; local servers accept any value, e.g. EMPTY)")
        self.model, self._openai = model, openai
        self.client = openai.OpenAI(base_url=base_url, api_key=key, timeout=timeout, max_retries=max_retries)

    @property
    def identity(self) -> str:
        return f"openai:{self.model}"

    def ask(self, text: str, image_urls: list[str]) -> str:
        content = [{"type": "text", "text": text}] + [{"type": "image_url", "image_url": {"url": u}} for u in image_urls]
        o = self._openai
        try:
            reply = self.client.chat.completions.create(
                model=self.model, temperature=0, max_tokens=1024,
                messages=[{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": content}])
        except (o.APIStatusError, o.APITimeoutError, o.APIConnectionError) as exc:
            raise JudgeCallFailed(f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}") from None
        return reply.choices[0].message.content or ""


def response_key(sha_a: str, sha_b: str, prompt: str, model: str, round_: int) -> str:
    raw = json.dumps([sha_a, sha_b, prompt, model, TEMPLATE_VERSION, round_], ensure_ascii=False)
    return hashlib.sha256(raw.encode()).hexdigest()


class ResponseStore:
    """Append-only JSONL of raw answers; a torn last line (a kill mid-write) is ignored. ``also``:
    other stores' files read too (another rank's, under a sharded run), never written."""

    def __init__(self, path: Path, also=()):
        self.path, self._lock, self.data = Path(path), threading.Lock(), {}
        for file in [*map(Path, also), self.path]:
            if not file.is_file():
                continue
            for line in file.read_text(encoding="utf-8").splitlines():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue
                self.data[rec["key"]] = rec

    def get(self, key: str) -> dict | None:
        return self.data.get(key)

    def put(self, key: str, record: dict) -> None:
        rec = {"key": key, **record}
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
                f.flush()
                os.fsync(f.fileno())
            self.data[key] = rec


@dataclass
class Pair:
    """One judged pair; ``load_a`` / ``load_b`` give each image's data URL when it is asked
    (the images are read only then, never all at once)."""

    prompt_id: str
    k: int
    prompt: str
    sha_a: str
    sha_b: str
    load_a: object
    load_b: object

    @property
    def url_a(self) -> str:
        return self.load_a() if callable(self.load_a) else self.load_a

    @property
    def url_b(self) -> str:
        return self.load_b() if callable(self.load_b) else self.load_b


def _round(backend, store: ResponseStore, pair: Pair, round_: int, parse_retries: int) -> tuple[str | None, str]:
    """(verdict or None, last error) of one round; stored answers are reused."""
    first, second = (pair.sha_a, pair.sha_b) if round_ == 1 else (pair.sha_b, pair.sha_a)
    key = response_key(first, second, pair.prompt, backend.identity, round_)
    hit = store.get(key)
    if hit is not None and parse_verdict(hit["response"]) is not None:
        return parse_verdict(hit["response"]), ""
    urls = [pair.url_a, pair.url_b] if round_ == 1 else [pair.url_b, pair.url_a]
    error = ""
    for _ in range(parse_retries + 1):
        try:
            text = backend.ask(user_prompt(pair.prompt), urls)
        except JudgeCallFailed as exc:
            return None, str(exc)
        store.put(key, {"prompt_id": pair.prompt_id, "k": pair.k, "round": round_, "model": backend.identity,
                        "template": TEMPLATE_VERSION, "response": text})
        verdict = parse_verdict(text)
        if verdict is not None:
            return verdict, ""
        error = "no [[Winner: ...]] verdict in the answer"
    return None, error


def judge_pair(backend, store: ResponseStore, pair: Pair, parse_retries: int = 2) -> dict:
    v1, e1 = _round(backend, store, pair, 1, parse_retries)
    v2, e2 = (None, "") if v1 is None else _round(backend, store, pair, 2, parse_retries)
    row = {"prompt_id": pair.prompt_id, "k": pair.k, "round1": v1, "round2": v2}
    if v1 is None or v2 is None:
        return {**row, "status": "failed", "winner": None, "consistent": None, "error": e1 or e2}
    winner, consistent = combine(v1, v2)
    return {**row, "status": "ok", "winner": winner, "consistent": consistent, "error": ""}


def judge_pairs(backend, store: ResponseStore, pairs: list[Pair], concurrency: int = 8, parse_retries: int = 2) -> list[dict]:
    """Both rounds of every pair, ``concurrency`` pairs at a time; results in ``pairs`` order."""
    with ThreadPoolExecutor(max(1, int(concurrency))) as pool:
        return list(pool.map(lambda p: judge_pair(backend, store, p, parse_retries), pairs))
