"""The run's typed state pieces (train/state.py): each one's state_dict / load_state_dict."""

import torch

from taxoclip.train.data import Batch, ReaderPosition
from taxoclip.train.distributed import DistEnv
from taxoclip.train.state import Progress, Readers, TorchRNG


def _batch(step: int, reader: int, position: ReaderPosition, n_substituted: int = 0) -> Batch:
    images = torch.zeros(4, 3, 8, 8)
    return Batch(images, torch.zeros(4, 2), torch.zeros(4), step, reader, position, n_substituted)


def test_progress_counts_steps_and_reads_checkpoints_without_counters():
    progress = Progress(steps_per_epoch=3)
    progress.advance(_batch(0, 0, ReaderPosition()), world_size=2)
    progress.advance(_batch(1, 0, ReaderPosition(), n_substituted=1), world_size=2)
    state = progress.state_dict()
    assert state == {"epoch": 0, "step": 2, "counters": {"n_substituted": 1, "samples": 16}}
    again = Progress(steps_per_epoch=3)
    again.load_state_dict(state)
    assert again == progress
    oldest = Progress(steps_per_epoch=3)
    oldest.load_state_dict({"step": 6})  # the earliest checkpoints had no counters
    assert (oldest.step, oldest.samples, oldest.n_substituted) == (6, 0, 0)


def test_a_reader_position_round_trips_the_plain_dict_checkpoints_hold():
    plain = {
        "shard": 3,
        "offset": 17,
        "block": 5,
        "taken": 2,
        "counted": 2,
        "n_read_errors": 1,
        "n_missing": 0,
        "n_skipped": 4,
        "n_substituted": 1,
        "bad_shards": ["a.tar"],
    }
    position = ReaderPosition.from_state_dict(plain)
    assert position.shard == 3 and position.bad_shards == ["a.tar"]
    assert position.state_dict() == plain
    assert ReaderPosition.from_state_dict(None) == ReaderPosition()


def test_readers_keep_this_ranks_positions_and_gather_every_one():
    env = DistEnv(rank=1, world_size=2)
    saved = [ReaderPosition(shard=k).state_dict() for k in range(4)]
    readers = Readers("readers", env, n_streams=2)
    readers.load_state_dict({"readers": saved})
    assert sorted(readers.mine) == [2, 3]  # rank 1's two streams
    assert [p.shard for p in readers.loaded] == [0, 1, 2, 3]
    readers.update(_batch(7, 3, ReaderPosition(shard=9, n_missing=2)))
    assert readers.read_errors() == 2
    alone = Readers("readers", DistEnv(), n_streams=2)  # one process: no collective
    alone.update(_batch(4, 1, ReaderPosition(shard=5)))
    assert alone.state_dict() == {"readers": [None, ReaderPosition(shard=5).state_dict()]}
    replay = Readers("replay_readers", env, n_streams=2, active=False)
    replay.load_state_dict({})  # a checkpoint without replay readers
    assert replay.loaded is None and replay.state_dict() == {"replay_readers": None}


def test_the_torch_generator_is_restored():
    rng = TorchRNG()
    state = rng.state_dict()
    first = torch.rand(3)
    rng.load_state_dict(state)
    assert torch.equal(torch.rand(3), first)
