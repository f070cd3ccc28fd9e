"""``llm_judge``: a pairwise metric — a VLM compares a run's image with another run's image of the
same (prompt id, sample index), twice with the positions swapped (the reference evaluation's
protocol: :mod:`metrics.llm_judge_protocol`). Used through
``cdm-bench evaluate --images A --against B --metrics llm_judge`` (:mod:`cdm_bench.pairwise`).

Backends:

* ``openai`` (default): any OpenAI-compatible server. Options ``base_url`` and ``model``
  (required), ``api_key_env`` (the environment variable holding the key; default
  OPENAI_API_KEY; local servers accept any value), ``max_retries`` (the client's retries with
  backoff on 429 / 5xx / timeouts, 5), ``timeout`` (s per call, 120).
* ``transformers``: a local Qwen2-VL / Qwen2.5-VL class model (:mod:`metrics.llm_judge_local`).
  Options ``model`` (a local folder or a hub id in the local Hugging Face cache; required),
  ``max_new_tokens`` (1024), ``device`` ("cpu"), ``dtype`` ("float32" | "bfloat16" | "float16");
  greedy decoding. Needs the ``eval`` extra (transformers).

Both: ``concurrency`` (pairs judged at once, 8; the local model generates one at a time),
``parse_retries`` (an answer without a verdict asked again, 2), ``max_size`` (long side of the
images sent, 1024). Identity: the backend, model, server or config hash, template version (the
key and the concurrency are not part of it).
"""

from __future__ import annotations

from cdm_bench.errors import SpecError
from metrics.llm_judge_protocol import TEMPLATE_VERSION


class LLMJudge:
    name = "llm_judge"
    version = "1"
    kind = "pairwise"
    higher_is_better = True  # the win rate of the judged run against the other
    extra = "judge"
    BACKENDS = ("openai", "transformers")

    def __init__(self, base_url: str | None = None, model: str | None = None, backend: str = "openai",
                 api_key_env: str = "OPENAI_API_KEY", concurrency: int = 8, max_retries: int = 5,
                 timeout: float = 120.0, parse_retries: int = 2, max_size: int = 1024,
                 max_new_tokens: int | None = None, device: str | None = None, dtype: str | None = None):
        from cdm_bench.validate import int_in_range

        if backend not in self.BACKENDS:
            raise SpecError(f"llm_judge backend {backend!r}: one of {list(self.BACKENDS)}")
        if backend == "transformers":
            self._local_options(model, base_url, max_new_tokens, device, dtype)
        elif not base_url or not model:
            raise SpecError("llm_judge needs base_url (an OpenAI-compatible server, e.g. http://localhost:8000/v1) "
                            "and model (the served model's name)")
        elif (max_new_tokens, device, dtype) != (None, None, None):
            raise SpecError("llm_judge: max_new_tokens, device and dtype are options of backend 'transformers'")
        self.backend_name, self.base_url, self.model, self.api_key_env = backend, base_url and str(base_url), str(model), api_key_env
        self.concurrency = int_in_range(concurrency, "llm_judge concurrency", 1, 256)
        self.max_retries = int_in_range(max_retries, "llm_judge max_retries", 0, 50)
        self.parse_retries = int_in_range(parse_retries, "llm_judge parse_retries", 0, 20)
        self.max_size = int_in_range(max_size, "llm_judge max_size", 16, 8192)
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
            raise SpecError(f"llm_judge timeout must be a positive number of seconds, got {timeout!r}")
        self.timeout = float(timeout)
        self._backend = None

    def _local_options(self, model, base_url, max_new_tokens, device, dtype) -> None:
        from cdm_bench.metric import DTYPES
        from cdm_bench.validate import int_in_range

        if not model:
            raise SpecError("llm_judge backend 'transformers' needs model (a local Qwen2-VL / Qwen2.5-VL folder, or a "
                            "hub id in the local Hugging Face cache)")
        if base_url:
            raise SpecError("llm_judge backend 'transformers' runs the model here: drop base_url")
        self.extra = "eval"
        self.max_new_tokens = int_in_range(1024 if max_new_tokens is None else max_new_tokens,
                                           "llm_judge max_new_tokens", 1, 32768)
        self.device, self.dtype = str(device or "cpu"), str(dtype or "float32")
        if self.dtype not in DTYPES:
            raise SpecError(f"llm_judge dtype must be one of {list(DTYPES)}, got {dtype!r}")

    def backend(self):
        """The client or local model (packages, key or weights are checked here, before any image is
        read; the local model is loaded at its first question)."""
        if self._backend is None:
            if self.backend_name == "transformers":
                from metrics.llm_judge_local import TransformersBackend

                self._backend = TransformersBackend(self.model, self.device, self.dtype, self.max_new_tokens)
            else:
                from metrics.llm_judge_backends import OpenAIBackend

                self._backend = OpenAIBackend(self.base_url, self.model, self.api_key_env, self.timeout,
                                              self.max_retries)
        return self._backend

    def describe(self) -> dict:
        out = {"name": self.name, "version": self.version, "kind": self.kind, "backend": self.backend_name,
               "model": self.model, "base_url": self.base_url, "template": TEMPLATE_VERSION, "max_size": self.max_size}
        if self.backend_name == "transformers":
            out.update(identity=self.backend().identity, max_new_tokens=self.max_new_tokens, dtype=self.dtype)
            del out["base_url"]
        return out

    def judge(self, pairs: list, store) -> list[dict]:
        from metrics.llm_judge_backends import judge_pairs

        return judge_pairs(self.backend(), store, pairs, self.concurrency, self.parse_retries)
