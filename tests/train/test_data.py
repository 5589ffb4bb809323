import io
import tarfile
from collections import Counter

import numpy as np
import pytest
import torch

from taxoclip.errors import InputError, UsageError
from taxoclip.models import create_model
from taxoclip.taxonomy import TRAINING_TEXT_TYPES
from taxoclip.train.data import (
    INDEX_SUFFIXES,
    Collate,
    ShardIndex,
    ShardTrainDataset,
    StepBatchSampler,
    text_type_for_step,
)
from taxoclip.train.setup import train_transform


def test_index_finds_every_training_sample(tiny_synth, tiny_shards):
    index = ShardIndex.build(tiny_shards, INDEX_SUFFIXES)
    train_rows = (tiny_synth / "train" / "metadata.csv").read_text().count("\n") - 1
    assert len(index) == train_rows
    assert len(set(index.keys)) == len(index)
    assert (index.members["jpg"][:, 0] > 0).all() and (
        index.members["taxon_com.txt"][:, 1] > 0
    ).all()


def test_missing_or_remote_shards_are_refused(tmp_path):
    with pytest.raises(InputError, match="training shard not found: .*nope-000000.tar"):
        ShardIndex.build(str(tmp_path / "nope-{000000..000001}.tar"), INDEX_SUFFIXES)
    with pytest.raises(UsageError, match="random access"):
        ShardIndex.build("https://example.org/shard-000000.tar", INDEX_SUFFIXES)


def test_ranks_split_the_global_batch_and_epochs_are_permutations():
    single = StepBatchSampler(100, 20, total_steps=10, seed=3)
    ranks = [StepBatchSampler(100, 20, 10, 3, rank=r, world_size=2) for r in range(2)]
    for step_batch, first, second in zip(single, *ranks, strict=True):
        assert [i for i, _ in first] + [i for i, _ in second] == [i for i, _ in step_batch]
        assert not {i for i, _ in first} & {i for i, _ in second}
    epoch = np.concatenate([single.global_indices(s) for s in range(5)])
    assert sorted(epoch.tolist()) == list(range(100))  # 5 steps of 20 = one epoch, no repeats
    assert not np.array_equal(single.global_indices(0), single.global_indices(5))  # reshuffled


def test_resumed_sampler_continues_exactly():
    full = list(StepBatchSampler(64, 8, total_steps=20, seed=1))
    resumed = list(StepBatchSampler(64, 8, total_steps=20, seed=1, start_step=13))
    assert resumed == full[13:]
    with pytest.raises(UsageError, match="cannot fill one global batch"):
        StepBatchSampler(5, 8, total_steps=1, seed=0)


def test_text_type_is_drawn_uniformly_per_step_and_can_be_fixed():
    drawn = [text_type_for_step(0, s) for s in range(2000)]
    counts = Counter(drawn)
    assert set(counts) == {t.value for t in TRAINING_TEXT_TYPES}
    assert all(300 < c < 500 for c in counts.values())
    assert drawn == [text_type_for_step(0, s) for s in range(2000)]  # same on every rank
    assert {text_type_for_step(0, s, "taxon_com") for s in range(50)} == {"taxon_com"}


@pytest.fixture(scope="module")
def tiny():
    return create_model("taxoclip-vit-t32", seed=0)


def test_items_follow_the_steps_caption_type_and_augmentation_is_reproducible(tiny_shards, tiny):
    index = ShardIndex.build(tiny_shards, INDEX_SUFFIXES)
    dataset = ShardTrainDataset(index, train_transform(tiny, squash=False), seed=4)
    step = next(s for s in range(100) if text_type_for_step(4, s) == "sci_com")
    image, caption, substituted, got_step = dataset[(3, step)]
    assert substituted == 0
    assert caption == dataset._read(3, "sci_com.txt").decode() and caption.startswith("a photo of ")
    assert image.shape == (3, 32, 32) and got_step == step
    again = dataset[(3, step)][0]
    assert torch.equal(image, again)  # augmentation is a function of (seed, step, index)
    batch = Collate(tiny.tokenizer)([dataset[(i, step)] for i in range(4)])
    assert batch["images"].shape == (4, 3, 32, 32) and batch["tokens"].shape == (4, 64)


def test_corrupt_sample_is_replaced_counted_and_batch_keeps_its_size(tmp_path, tiny_synth, tiny):
    source = sorted((tiny_synth / "shards").glob("*.tar"))[0]
    broken = tmp_path / "broken-000000.tar"
    with tarfile.open(source) as src, tarfile.open(broken, "w", format=tarfile.PAX_FORMAT) as dst:
        first_key = None
        for member in src:
            data = src.extractfile(member).read()
            key = member.name.split(".", 1)[0]
            first_key = first_key or key
            if key == first_key and member.name.endswith(".jpg"):
                data = b"\xff\xd8 this is not a jpeg"
            info = tarfile.TarInfo(member.name)
            info.size = len(data)
            dst.addfile(info, io.BytesIO(data))
    index = ShardIndex.build(str(broken), INDEX_SUFFIXES)
    dataset = ShardTrainDataset(index, train_transform(tiny, squash=False), seed=0)
    batch = Collate(tiny.tokenizer)([dataset[(i, 0)] for i in range(3)])
    assert batch["images"].shape[0] == 3
    assert batch["n_substituted"] == 1
