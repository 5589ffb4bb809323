"""``taxoclip train ARGS`` that kills itself with SIGKILL right after the checkpoint of step
N is written (on rank 0, the rank that writes it): a deterministic ``kill -9`` for the
exact-resume tests, hooked in from outside the training loop.

    python tests/train/kill_after_checkpoint.py N --data ... --out RUN ...
    python -m torch.distributed.run --nproc_per_node 2 tests/train/kill_after_checkpoint.py N ...
"""

import os
import signal
import sys
from pathlib import Path

from taxoclip.cli import make_config, parse
from taxoclip.train import train


def main(kill_at: int, argv: list[str]) -> None:
    command, args = parse(["train", *argv])
    config = make_config(command, args)

    def kill(step: int, path: Path) -> None:
        if step == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    train(config, on_checkpoint=[kill])


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2:])
