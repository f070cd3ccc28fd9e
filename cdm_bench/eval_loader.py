"""The evaluate phase's input pipeline: decode, sha256 check and a metric's own preprocessing,
in ``torch.utils.data.DataLoader`` worker processes, so the metric's forward never waits for them.

A job is one batch of one chunk (records ``[first, stop)``). Its worker reads each PNG's bytes,
checks them against the manifest's sha256 (:meth:`RunDir.load_images`), decodes, converts to the
metric's input format and runs :meth:`Metric.preprocess` (the scorer's own processor or
transform: CLIP's image processor and tokenizer, HPSv2's open_clip transform, ...). The main
process runs :meth:`Metric.update` on the result, in job order. With ``num_workers=0`` the same
code runs in the main process, so scores are identical with 0 and N workers.

Without ``--num-workers`` the count depends on where the forward runs. On a GPU: one worker per
core but one (at most 4). On the CPU the workers take cores from the forward, which pays only
when decoding and preprocessing cost more than the threads they take: the first batches run in
this process, timed, and :func:`choose_workers` picks the count for the rest from those times
(the toy metrics, whose forward dwarfs a 32 px decode, stay in this process; a 512 px CLIP
gets a worker).

A worker that fails hands its error back as a value (one line, its type kept), never as
DataLoader's multi-line wrapped traceback.
"""

from __future__ import annotations

import logging
import os
from typing import Iterator, Sequence

from cdm_bench.metric import Metric, convert_images

log = logging.getLogger(__name__)

#: batches each worker prepares ahead of the forward
PREFETCH = 4
#: batches timed in this process before the CPU worker count is chosen (the last one counts:
#: the first carries the warm-up)
PROBE_JOBS = 2
#: seconds a worker costs to start (fork, its first batch's imports); measured ~0.1-0.3 s on 2 cores
WORKER_START_S = 0.3


def default_workers(n_jobs: int) -> int:
    """Workers when ``--num-workers`` is not given and the forward runs on a GPU: none for a
    single batch (nothing to overlap), else one per core but one, at most 4."""
    if n_jobs < 2:
        return 0
    return max(0, min(4, _cores() - 1))


def forward_threads(num_workers: int) -> int:
    """The forward's torch threads while ``num_workers`` input workers run: the cores they leave
    (at least one). With as many threads as cores the forward's threads and the workers take
    turns on the same cores: measured on 2 cores (clipscore, 768 images at 512 px, 1 worker),
    12.6 ms/image with 2 forward threads, 9.0 with 1."""
    return max(1, _cores() - max(num_workers, 0))


def choose_workers(input_s: float, forward_s: float, n_jobs: int, cores: int, cap: int = 4) -> int:
    """Input workers for ``n_jobs`` CPU batches on ``cores`` cores, from one batch's input (read,
    check, decode, preprocess: one thread) and forward seconds (a thread per core), timed in one
    process. With ``w`` workers a batch takes at least the workers' share of the input, the
    forward on the ``cores - w`` threads left (slowed in proportion: pessimistic for small
    models) and the batch's whole CPU work spread over every core; workers are chosen only if
    that saves over 10 % with their start-up counted."""
    alone = n_jobs * (input_s + forward_s)
    best, best_s = 0, alone
    for w in range(1, min(cap, cores) + 1):
        per_batch = max(input_s / w, forward_s * cores / max(cores - w, 1), (input_s + forward_s * cores) / cores)
        total = n_jobs * per_batch + w * WORKER_START_S
        if total < best_s:
            best, best_s = w, total
    return best if best_s < 0.9 * alone else 0


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class _Failure:
    def __init__(self, exc: BaseException):
        self.type, self.message = type(exc), " ".join(str(exc).split())

    def reraise(self):
        try:
            err = self.type(self.message)
        except Exception:  # noqa: BLE001 - an exception type that takes other arguments
            err = RuntimeError(f"{self.type.__name__}: {self.message}")
        raise err


class BatchJobs:
    """A map-style dataset of batch jobs (a ``torch.utils.data.Dataset`` by protocol); item
    ``n`` is job ``offset + n``."""

    def __init__(self, load, records: Sequence[dict], jobs: Sequence[tuple[int, int]], metric: Metric,
                 offset: int = 0):
        self.load, self.records, self.jobs, self.metric, self.offset = load, records, list(jobs), metric, offset

    def __len__(self) -> int:
        return len(self.jobs) - self.offset

    def tail(self, start: int, load=None) -> "BatchJobs":
        """The jobs from ``start`` on (``load``: another way to read the images)."""
        return BatchJobs(load or self.load, self.records, self.jobs, self.metric, self.offset + start)

    def __getitem__(self, n: int):
        n += self.offset
        first, stop = self.jobs[n]
        recs = self.records[first:stop]
        try:
            images = convert_images(self.load(first, stop), self.metric.input_format)
            return n, self.metric.preprocess(images, [r["prompt"] for r in recs], recs)
        except Exception as exc:  # noqa: BLE001 - handed to the main process, which raises it
            return n, _Failure(exc)


def _identity(item):
    return item


def _worker_init(_):
    import torch

    torch.set_num_threads(1)  # the cores belong to the forward and the other workers


def prepared_batches(dataset: BatchJobs, num_workers: int | None, pin_memory: bool = False,
                     worker_load=None) -> Iterator[tuple[int, object]]:
    """``(job index, prepared batch)`` in job order; errors re-raised in this process.
    ``num_workers=None``: the first :data:`PROBE_JOBS` batches here, timed, then
    :func:`choose_workers`'s count (the caller's forward is the time between two items).
    ``worker_load`` reads the images in a worker (default: the dataset's own ``load``)."""
    if num_workers is None:
        num_workers = yield from _probe(dataset)
        dataset = dataset.tail(min(PROBE_JOBS, len(dataset)))
    if num_workers <= 0 or len(dataset) == 0:
        for n in range(len(dataset)):
            yield _checked(dataset[n])
        return
    dataset = dataset.tail(0, worker_load)
    import torch
    from torch.utils.data import DataLoader

    items = DataLoader(dataset, batch_size=None, shuffle=False, num_workers=num_workers,
                       collate_fn=_identity, prefetch_factor=PREFETCH, pin_memory=pin_memory,
                       worker_init_fn=_worker_init, multiprocessing_context="fork")
    threads = torch.get_num_threads()
    torch.set_num_threads(forward_threads(num_workers))  # after the fork: the workers set their own
    try:
        for item in items:
            yield _checked(item)
    finally:
        torch.set_num_threads(threads)


def _probe(dataset: BatchJobs):
    """Run the first jobs here; return the worker count for the rest."""
    import time

    input_s = forward_s = 0.0
    for n in range(min(PROBE_JOBS, len(dataset))):
        t0 = time.perf_counter()
        item = _checked(dataset[n])
        t1 = time.perf_counter()
        yield item
        input_s, forward_s = t1 - t0, time.perf_counter() - t1
    rest = len(dataset) - PROBE_JOBS
    workers = choose_workers(input_s, forward_s, rest, _cores()) if rest > 1 else 0
    log.debug("input %.4f s, forward %.4f s per batch: %d input worker(s) for %d batches", input_s, forward_s,
              workers, max(rest, 0))
    return workers


def _checked(item):
    n, batch = item
    if isinstance(batch, _Failure):
        batch.reraise()
    return n, batch
