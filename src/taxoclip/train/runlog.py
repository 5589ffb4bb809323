"""Where a run reports: ``RUN/metrics.jsonl``, TensorBoard, the progress bar, throughput.

Only rank 0 writes files; every rank keeps the bar's and the throughput's counts so the
numbers they log agree.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"


class RunLog:
    """metrics.jsonl lines and TensorBoard scalars (rank 0), the bar, samples per second."""

    def __init__(
        self, run: Path, is_main: bool, progress: bool, total_steps: int, start_step: int
    ) -> None:
        self.writer = _tensorboard(run) if is_main else None
        self.metrics = (run / METRICS_FILE).open("a") if is_main else None
        self.bar = tqdm(
            total=total_steps,
            initial=start_step,
            unit="step",
            desc="train",
            disable=not (is_main and progress),
            dynamic_ncols=True,
        )
        self.throughput = 0.0
        self._window_start, self._window_samples = time.perf_counter(), 0

    def tick(self, n_samples: int) -> None:
        """One step done, of ``n_samples`` images over all ranks."""
        self._window_samples += n_samples
        self.bar.update(1)

    def measure_throughput(self) -> float:
        """Samples per second since the last call (or the start); starts a new window."""
        elapsed = time.perf_counter() - self._window_start
        self.throughput = self._window_samples / elapsed if elapsed > 0 else 0.0
        self._window_start, self._window_samples = time.perf_counter(), 0
        return self.throughput

    def write(self, record: dict[str, Any], scalars: dict[str, float]) -> None:
        """One metrics.jsonl line, and ``scalars`` (tag → value) at ``record["step"]``."""
        if self.metrics is None:
            return
        # Flushed per line: a killed run keeps every line up to its last step.
        self.metrics.write(json.dumps(record) + "\n")
        self.metrics.flush()
        for tag, value in scalars.items():
            self.writer.add_scalar(tag, value, record["step"])

    def close(self) -> None:
        self.bar.close()
        if self.metrics is not None:
            self.metrics.close()
        if self.writer is not None:
            self.writer.close()


def truncate_metrics(path: Path, step: int) -> None:
    """Drop log lines past the checkpoint we resume from, so none is written twice."""
    if not path.exists():
        return
    kept = [
        line
        for line in path.read_text().splitlines()
        if line.strip() and json.loads(line).get("step", -1) < step
    ]
    path.write_text("".join(line + "\n" for line in kept))


def last_val(run: Path) -> float | None:
    """The last zero-shot top-1 the run logged, or None."""
    value = None
    for line in (run / METRICS_FILE).read_text().splitlines():
        record = json.loads(line)
        if "val_zeroshot_top1" in record:
            value = record["val_zeroshot_top1"]
    return value


def _tensorboard(run: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is a dependency; keep training if it is broken
        log.warning("tensorboard is not importable; metrics go to metrics.jsonl only")
        return _NoWriter()
    return SummaryWriter(log_dir=str(run / "tensorboard"))


class _NoWriter:
    def add_scalar(self, *args, **kwargs) -> None:
        pass

    def close(self) -> None:
        pass
