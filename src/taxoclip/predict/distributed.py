"""``predict`` and ``embed`` with ``--ray-address``: the same engine as a Ray Data job.

The images are cut into the batches a local run makes (``--batch-size`` images from the
first one, or from a resumed run's checkpoint), one dataset row per batch. A fixed pool of
actors (``--ray-actors``, default one per node; one CPU each, and one GPU each with
``--device cuda``) each opens the encoder and the scorer once
(:func:`taxoclip.predict.run.open_scoring`, the function a local run calls) and turns a
batch into its images' rows (or keys and features) with the local run's own loop. The driver reads the batches back in input order and writes them through
the same body files and checkpoint as a local run (:mod:`.stream`).

**Order rule**: rows in input order — the order the inputs are listed in (files as
given, directories and globs expanded in sorted order), each image's rows in the scorer's
order — so the output is the local run's file: byte for byte against a local run with
the actors' one compute thread (``OMP_NUM_THREADS=1``); with more threads a local run's
BLAS may sum in another order and a score differ in its last float32 bits.

**Failures**: an actor that dies is restarted by Ray and the batch it held is run again
(Ray Data's actor pools restart actors and retry their tasks without limit); a batch's rows
reach the driver only when its task has finished, and the driver takes batches only in
order and refuses a gap or a repeat, so an image is neither lost nor written twice. A job
that still fails can be continued with ``--resume`` (with ``--checkpoint-every``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import pickle
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from taxoclip.errors import UsageError

log = logging.getLogger(__name__)


class BatchActor:
    """One model per actor: opens the encoder (and scorer) of ``config`` once, then turns
    each batch row (``start``, ``paths`` as JSON) into its pickled result."""

    def __init__(self, kind: str, config: Any) -> None:
        from taxoclip.runtime.encode import open_encoder, squashes

        self.kind = kind
        self.config = dataclasses.replace(config, progress=False)
        if kind == "predict":
            from .run import open_scoring

            self.encoder, self.score, _, _ = open_scoring(self.config)
        else:
            self.encoder = open_encoder(
                config.model,
                config.runtime,
                squash=squashes(config.model, False),
                device=config.device,
                pretrained=config.pretrained,
            )

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from taxoclip.runtime.images import auto_workers

        from .run import encoded_batches, scored_batches

        results = []
        for paths in batch["paths"]:
            images = json.loads(paths)
            workers = auto_workers(self.config.workers)
            if self.kind == "predict":
                made = scored_batches(self.encoder, images, self.score, self.config, 0, workers)
                ((_, groups),) = list(made)
                results.append(pickle.dumps(groups))
            else:
                ((_, count, keys, features),) = list(
                    encoded_batches(self.encoder, images, self.config, 0)
                )
                results.append(pickle.dumps((count, keys, features)))
        return {"start": np.asarray(batch["start"]), "result": np.array(results, dtype=object)}


def ray_predict_batches(config, images: list, start: int) -> Iterator[tuple[int, list]]:
    """``(first position, rows of each image)`` per batch, in input order."""
    yield from _batches("predict", config, images, start)


def ray_embed_batches(config, images: list, start: int) -> Iterator[tuple]:
    """``(first position, batch size, keys read, their features)`` per batch, in order."""
    for position, (count, keys, features) in _batches("embed", config, images, start):
        yield position, count, keys, features


def _batches(kind: str, config, images: list, start: int) -> Iterator[tuple[int, Any]]:
    if not all(isinstance(image, (str, os.PathLike)) for image in images):
        raise UsageError("--ray-address needs image files (paths), not images in memory")
    size = config.batch_size
    items = [
        {"start": s, "paths": json.dumps([os.fspath(p) for p in images[s : s + size]])}
        for s in range(start, len(images), size)
    ]
    if not items:
        return
    with ray_session(config.ray_address):
        import ray
        import ray.data

        actors = config.ray_actors or max(1, sum(1 for n in ray.nodes() if n["Alive"]))
        actors = min(actors, len(items))
        previous = ray.data.DataContext.get_current()
        context = previous.copy()
        context.execution_options.preserve_order = True  # batches come back in input order
        ray.data.DataContext._set_current(context)  # this job's; the caller's is restored
        try:
            yield from _ordered(kind, items, config, actors, start, len(images))
        finally:
            ray.data.DataContext._set_current(previous)


def _ordered(kind: str, items: list, config, actors: int, start: int, n: int):
    """The job's batches as they come back, checked to come in input order, each once."""
    import ray.data
    from tqdm import tqdm

    ds = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
        BatchActor,
        fn_constructor_args=(kind, config),
        batch_size=1,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(min_size=actors, max_size=actors),
        num_cpus=1,  # one CPU and (OMP_NUM_THREADS=1) one compute thread each
        num_gpus=1 if str(config.device).startswith("cuda") else None,  # one GPU each
    )
    expected = start
    with tqdm(total=n - start, unit="img", desc=kind, disable=not config.progress) as bar:
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            for position, result in zip(batch["start"], batch["result"], strict=True):
                if int(position) != expected:  # a gap or a repeat: never written
                    raise RuntimeError(
                        f"{kind}: Ray returned the batch at image {int(position)}, "
                        f"expected {expected}"
                    )
                expected = min(expected + config.batch_size, n)
                bar.update(expected - int(position))
                yield int(position), pickle.loads(result)
    if expected != n:
        raise RuntimeError(f"{kind}: Ray returned {expected} of {n} images")


class _DropProgressBarNote(logging.Filter):
    """Ray Data's "Progress bars disabled" warning: they are off on purpose (ours is on)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Progress bars disabled")


_QUIET = _DropProgressBarNote()


@contextmanager
def ray_session(address: str) -> Iterator[None]:
    """Connect to the cluster at ``address`` (``local``: start a Ray of this machine's own
    with every core), unless this process is connected already; quiet Ray Data's logs."""
    import ray
    import ray.data

    started = False
    if not ray.is_initialized():
        logging.getLogger("ray").setLevel(logging.WARNING)
        kwargs = dict(include_dashboard=False, log_to_driver=False, configure_logging=False)
        if address == "local":
            os.environ.setdefault("RAY_worker_niceness", "0")  # Ray's default nice 15 starves
            ray.init(address="local", num_cpus=os.cpu_count(), **kwargs)
        else:
            ray.init(address=address, **kwargs)
        started = True
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    for name in ("ray.data.dataset", "ray.data._internal.progress"):  # a filter is per logger
        logging.getLogger(name).addFilter(_QUIET)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    try:
        yield
    finally:
        if started:
            ray.shutdown()
