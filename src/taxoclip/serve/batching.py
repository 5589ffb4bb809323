"""One thread holds the model; images from concurrent requests share its forward passes.

A request handler has already read its uploads in full and decoded them (so a slow client
never holds the model); it submits a :class:`Job` and awaits an asyncio future. The worker
thread takes the first waiting job, waits up to ``wait_s`` for more to join it (up to
``max_batch`` images), runs one forward pass per preprocessing kind, then each job's own
``finish`` (scoring against the index, at its own rank, k and subset) on its slice of the
features, and hands the result back to the event loop. The queue between them is a
``queue.Queue``: the one side is the event loop, the other a plain thread. A job still
waiting after ``timeout_s`` is abandoned (the handler answers 503) and skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

#: ``encode(images, kind) -> features``: the model call, whatever runtime runs it.
EncodeFn = Callable[[Sequence[Any], Hashable], Any]


class Busy(Exception):
    """The model did not get to a request within the queue timeout (HTTP 503)."""


@dataclass
class Job:
    kind: Hashable  # jobs of one kind share a forward pass (same preprocessing)
    images: list[Any]
    finish: Callable[[Any], Any]  # features of these images → the request's result
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    abandoned: bool = False


@dataclass
class BatchStats:
    requests: int = 0
    images: int = 0
    batches: int = 0  # forward passes
    largest: int = 0  # images in the largest forward pass
    most_requests: int = 0  # requests sharing the fullest forward pass
    sizes: Counter = field(default_factory=Counter)  # images per pass → passes
    abandoned: int = 0
    encode_seconds: float = 0.0  # wall time inside the model call, all passes
    score_seconds: float = 0.0  # wall time turning features into rows, all requests

    def to_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "images": self.images,
            "forward_passes": self.batches,
            "largest_batch": self.largest,
            "most_requests_in_one_batch": self.most_requests,
            "batch_sizes": {str(k): v for k, v in sorted(self.sizes.items())},
            "timed_out": self.abandoned,
            "encode_s_total": round(self.encode_seconds, 6),
            "score_s_total": round(self.score_seconds, 6),
        }


class Batcher:
    """Groups submitted jobs into forward passes on one worker thread."""

    def __init__(
        self,
        encode: EncodeFn,
        *,
        max_batch: int = 32,
        wait_s: float = 0.005,
        timeout_s: float = 60.0,
    ) -> None:
        self.encode = encode
        self.max_batch = max_batch
        self.wait_s = wait_s
        self.timeout_s = timeout_s
        self.stats = BatchStats()
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._open = threading.Event()  # cleared by pause(): the worker holds its batch
        self._open.set()
        self._lock = threading.Lock()
        self._submitted = 0
        self._started = 0
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="taxoclip-model", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._open.set()
            self._queue.put(None)
            self._thread.join()
            self._thread = None

    def pause(self) -> None:
        """Hold the next batch until :meth:`resume` (jobs keep queueing): lets a test or an
        operator see exactly which requests share a pass."""
        self._open.clear()

    def resume(self) -> None:
        self._open.set()

    @property
    def pending(self) -> int:
        """Jobs submitted and not yet computed (queued, or held by a paused worker)."""
        with self._lock:
            return self._submitted - self._started

    # ------------------------------------------------------------------ event-loop side

    async def submit(self, kind: Hashable, images: list[Any], finish: Callable[[Any], Any]):
        """Queue ``images`` and await ``finish(features)``; :class:`Busy` after the timeout."""
        loop = asyncio.get_running_loop()
        job = Job(kind, images, finish, loop.create_future(), loop)
        with self._lock:  # counted and queued together: ``pending`` never runs ahead
            self._submitted += 1
            self._queue.put(job)
        try:
            return await asyncio.wait_for(asyncio.shield(job.future), self.timeout_s)
        except asyncio.TimeoutError as exc:
            job.abandoned = True
            raise Busy(
                f"the model did not get to this request within {self.timeout_s:g} s "
                "(server busy); try again"
            ) from exc

    # ------------------------------------------------------------------ worker thread

    def _work(self) -> None:
        carry: Job | None = None
        while True:
            job = carry or self._queue.get()
            carry = None
            if job is None:
                return
            self._open.wait()
            batch, n_images = [job], len(job.images)
            deadline = time.monotonic() + self.wait_s
            while n_images < self.max_batch:
                left = deadline - time.monotonic()
                try:
                    extra = self._queue.get(timeout=left) if left > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if extra is None or n_images + len(extra.images) > self.max_batch:
                    carry = extra  # the stop signal, or the start of the next batch
                    if extra is None:
                        self._queue.put(None)
                        carry = None
                    break
                batch.append(extra)
                n_images += len(extra.images)
            self._run(batch)

    def _run(self, batch: list[Job]) -> None:
        with self._lock:
            self._started += len(batch)
        live = [job for job in batch if not job.abandoned]
        self.stats.abandoned += len(batch) - len(live)
        kinds: dict[Hashable, list[Job]] = {}
        for job in live:
            kinds.setdefault(job.kind, []).append(job)
        for kind, jobs in kinds.items():
            images = [image for job in jobs for image in job.images]
            started = time.perf_counter()
            try:
                features = self.encode(images, kind) if images else None
            except Exception as exc:  # the model failed: every request of this pass hears it
                log.exception("forward pass of %d images failed", len(images))
                for job in jobs:
                    _deliver(job, error=exc)
                continue
            if images:
                stats = self.stats
                stats.encode_seconds += time.perf_counter() - started
                stats.batches += 1
                stats.sizes[len(images)] += 1
                stats.largest = max(stats.largest, len(images))
                stats.most_requests = max(stats.most_requests, len(jobs))
            start, started = 0, time.perf_counter()
            for job in jobs:
                part = features[start : start + len(job.images)] if images else None
                start += len(job.images)
                try:
                    result = job.finish(part)
                except Exception as exc:  # this request's own problem (bad labels, subset)
                    _deliver(job, error=exc)
                else:
                    _deliver(job, result=result)
                self.stats.requests += 1
                self.stats.images += len(job.images)
            self.stats.score_seconds += time.perf_counter() - started


def _deliver(job: Job, result: Any = None, error: BaseException | None = None) -> None:
    def settle() -> None:
        if job.future.done():
            return
        if error is not None:
            job.future.set_exception(error)
        else:
            job.future.set_result(result)

    with contextlib.suppress(RuntimeError):  # the loop has closed (server shutting down)
        job.loop.call_soon_threadsafe(settle)
