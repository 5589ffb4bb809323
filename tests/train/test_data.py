"""The streaming training data path: shard order, readers, exact positions, URLs, faults."""

import functools
import http.server
import io
import json
import shutil
import socket
import tarfile
import threading
from collections import Counter

import numpy as np
import pytest
import torch

import taxoclip.data.read as read_module
from taxoclip.errors import InputError, UsageError
from taxoclip.models import create_model
from taxoclip.taxonomy import TRAINING_TEXT_TYPES
from taxoclip.train.data import (
    Collate,
    ShardList,
    ShardReader,
    StreamingBatches,
    StreamSpec,
    reader_shard,
    text_type_for_step,
)
from taxoclip.train.setup import train_transform


def keys(reader: ShardReader, n: int) -> list[str]:
    return [reader.next_sample()["__key__"] for _ in range(n)]


@pytest.mark.parametrize(("n_shards", "n_readers"), [(3, 2), (2, 4), (7, 3), (4, 4)])
def test_every_pass_reads_each_shard_once_whatever_shards_and_readers(n_shards, n_readers):
    # Passes e = 0..5: the readers' k-th shards, in the global order, are 6 permutations.
    per_reader = -(-6 * n_shards // n_readers)
    sequence = [None] * (per_reader * n_readers)
    for t in range(n_readers):
        for k in range(per_reader):
            sequence[t + k * n_readers] = reader_shard(9, n_shards, t, n_readers, k)
    passes = [sequence[e * n_shards : (e + 1) * n_shards] for e in range(6)]
    assert all(sorted(p) == list(range(n_shards)) for p in passes)
    assert len({tuple(p) for p in passes}) > 1 or n_shards < 3  # reshuffled per pass
    # No reader runs dry (even with more readers than shards), and it is seeded.
    assert all(reader_shard(9, n_shards, t, n_readers, 0) is not None for t in range(n_readers))
    assert reader_shard(9, n_shards, 1, n_readers, 5) == reader_shard(9, n_shards, 1, n_readers, 5)


def test_readers_split_an_epoch_and_a_saved_position_goes_on_exactly(tiny_shards, tiny_synth):
    shards = ShardList.resolve(tiny_shards)
    n_train = (tiny_synth / "train" / "metadata.csv").read_text().count("\n") - 1
    assert shards.n_samples == n_train and len(shards.urls) == 2
    # Two readers, one pass: every sample exactly once between them.
    readers = [ShardReader(shards, 3, t, 2, buffer=11) for t in range(2)]  # 66 = 6 blocks
    seen = keys(readers[0], shards.sizes[0]) + keys(readers[1], shards.sizes[1])
    assert len(set(seen)) == len(seen) == n_train
    # A reader rebuilt from its state (inside a block, a shard and a pass) goes on exactly.
    for stop in (5, 10, 61, 70, 140):
        first = ShardReader(shards, 3, 0, 2, buffer=7)
        keys(first, stop)
        resumed = ShardReader(shards, 3, 0, 2, buffer=7, position=first.position)
        assert keys(resumed, 30) == keys(first, 30), stop
    # The buffer shuffles within blocks, seeded.
    order = keys(ShardReader(shards, 3, 0, 1, buffer=20), 20)
    assert order != sorted(order) and order == keys(ShardReader(shards, 3, 0, 1, buffer=20), 20)


@pytest.fixture()
def served(tiny_synth):
    """The shard folder over HTTP on 127.0.0.1 (a real server, in a thread)."""
    handler = functools.partial(
        http.server.SimpleHTTPRequestHandler, directory=str(tiny_synth / "shards")
    )
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_http_pipe_and_fsspec_shards_stream_the_same_samples(tiny_synth, tiny_shards, served):
    import fsspec

    folder = tiny_synth / "shards"
    memory = fsspec.filesystem("memory")
    for name in ("shard-000000.tar", "shard-000001.tar", "sizes.json"):
        memory.pipe(f"/h7b/{name}", (folder / name).read_bytes())
    specs = {
        "local": tiny_shards,
        "http": f"{served}/shard-{{000000..000001}}.tar",
        "pipe": f"pipe:cat {folder}/shard-000000.tar::pipe:cat {folder}/shard-000001.tar",
        "fsspec": "memory:///h7b/shard-{000000..000001}.tar",
    }
    expected = None
    for name, spec in specs.items():
        shards = ShardList.resolve(spec)  # sizes from sizes.json beside them, never opened
        assert shards.sizes == (66, 66), name
        got = keys(ShardReader(shards, 1, 0, 1, buffer=16), 140)  # crosses both shards
        expected = expected or got
        assert got == expected, name


def test_unreachable_shard_is_retried_then_named(monkeypatch):
    monkeypatch.setattr(read_module, "RETRY_DELAY", 0.01)
    with socket.socket() as probe:  # a port with nobody listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/shard-000000.tar"
    with pytest.raises(InputError, match=rf"cannot read shard {url} after 3 attempts"):
        read_module.open_shard(url, retries=2)
    shards = ShardList(urls=(url,), sizes=(10,))
    with pytest.raises(InputError, match=f"cannot read shard {url}"):
        ShardReader(shards, 0, 0, 1, buffer=4, retries=1).next_sample()
    with pytest.raises(UsageError, match="no sizes.json lists"):
        ShardList.resolve(url)
    with pytest.raises(InputError, match="training shard not found: .*nope-000000.tar"):
        ShardList.resolve("/nonexistent/nope-{000000..000001}.tar")


def truncate(source, target, keep_fraction):
    data = source.read_bytes()
    target.write_bytes(data[: int(len(data) * keep_fraction)])


def test_a_truncated_shard_is_counted_named_and_reading_goes_on(tiny_synth, tmp_path):
    folder = tiny_synth / "shards"
    shutil.copy(folder / "shard-000000.tar", tmp_path / "shard-000000.tar")
    truncate(folder / "shard-000001.tar", tmp_path / "shard-000001.tar", 0.5)
    shutil.copy(folder / "sizes.json", tmp_path / "sizes.json")
    shards = ShardList.resolve(str(tmp_path / "shard-{000000..000001}.tar"))
    reader = ShardReader(shards, 2, 0, 1, buffer=16)
    got = keys(reader, 200)  # past both shards of pass 0, into pass 1
    position = reader.position
    assert position.n_read_errors + position.n_missing > 0
    assert position.bad_shards == [str(tmp_path / "shard-000001.tar")]
    assert len(got) == 200  # the stream went on


@pytest.fixture(scope="module")
def tiny():
    return create_model("taxoclip-vit-t32", seed=0)


def spec(shards, **kw):
    base = dict(
        shards=shards,
        seed=4,
        text_type="random",
        batch_size=8,
        rank=0,
        world_size=1,
        n_streams=1,
        start_step=0,
        total_steps=6,
        buffer=16,
    )
    return StreamSpec(**{**base, **kw})


def test_batches_follow_the_steps_caption_type_and_are_reproducible(tiny_shards, tiny):
    shards = ShardList.resolve(tiny_shards)
    transform = train_transform(tiny, squash=False)
    batches = list(StreamingBatches(spec(shards), transform, Collate(tiny.tokenizer)))
    assert [b.step for b in batches] == list(range(6))
    assert batches[0].images.shape == (8, 3, 32, 32) and batches[0].tokens.shape == (8, 64)
    again = list(StreamingBatches(spec(shards), transform, Collate(tiny.tokenizer)))
    assert all(torch.equal(a.images, b.images) for a, b in zip(batches, again, strict=True))
    # Resumed at step 3 from the position batch 2 carried: the same batches 3..5.
    positions = [batches[2].position]
    resumed = list(
        StreamingBatches(spec(shards, start_step=3), transform, Collate(tiny.tokenizer), positions)
    )
    for a, b in zip(batches[3:], resumed, strict=True):
        assert a.step == b.step and torch.equal(a.images, b.images)
        assert torch.equal(a.tokens, b.tokens)
    # Captions are the step's caption type.
    step = next(s for s in range(6) if text_type_for_step(4, s) == "sci_com")
    assert torch.equal(
        batches[step].tokens[0],
        tiny.tokenizer([_caption(shards, batches, step)])[0],
    )


def _caption(shards, batches, step):
    """The first caption of ``step``'s batch, read back through its token ids' source."""
    reader = ShardReader(shards, 4, 0, 1, buffer=16)
    for _ in range(step * 8):
        reader.next_sample()
    return reader.next_sample()["sci_com.txt"]


def test_text_type_is_drawn_uniformly_per_step_and_can_be_fixed():
    drawn = [text_type_for_step(0, s) for s in range(2000)]
    counts = Counter(drawn)
    assert set(counts) == {t.value for t in TRAINING_TEXT_TYPES}
    assert all(300 < c < 500 for c in counts.values())
    assert drawn == [text_type_for_step(0, s) for s in range(2000)]  # same on every rank
    assert {text_type_for_step(0, s, "taxon_com") for s in range(50)} == {"taxon_com"}


def test_corrupt_sample_is_replaced_counted_and_batch_keeps_its_size(tmp_path, tiny_synth, tiny):
    source = sorted((tiny_synth / "shards").glob("*.tar"))[0]
    broken = tmp_path / "broken-000000.tar"
    with tarfile.open(source) as src, tarfile.open(broken, "w", format=tarfile.PAX_FORMAT) as dst:
        broken_one = False
        for member in src:
            data = src.extractfile(member).read()
            if member.name.endswith(".jpg") and not broken_one:
                data, broken_one = b"\xff\xd8 this is not a jpeg", True  # the first image
            info = tarfile.TarInfo(member.name)
            info.size = len(data)
            dst.addfile(info, io.BytesIO(data))
    (tmp_path / "sizes.json").write_text(json.dumps({broken.name: 66}))
    shards = ShardList.resolve(str(broken))
    dataset = StreamingBatches(
        spec(shards, total_steps=1, buffer=66, batch_size=66 - 1),
        train_transform(tiny, squash=False),
        Collate(tiny.tokenizer),
    )
    (batch,) = list(dataset)
    assert batch.images.shape[0] == 65 and batch.n_substituted == 1
    assert batch.position.n_substituted == 1
    assert np.isfinite(batch.images.numpy()).all()


def test_the_fast_tar_reader_gives_what_tarfile_gives(tiny_synth, tmp_path):
    """Our header parser (training's streaming path) against Python's tarfile: ustar,
    pax long names, a gzip-compressed tar, and a stream cut short."""
    from taxoclip.data.read import tar_members

    def by_tarfile(path, mode="r:*"):
        with tarfile.open(path, mode) as tar:
            return [(m.name, tar.extractfile(m).read()) for m in tar if m.isreg()]

    def ours(path):
        with open(path, "rb") as handle:
            return [(m["fname"], m["data"]) for m in tar_members(handle)]

    shard = tiny_synth / "shards" / "shard-000000.tar"
    assert ours(shard) == by_tarfile(shard)
    mixed = tmp_path / "mixed.tar"
    with tarfile.open(mixed, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, size in [("a/" + "x" * 150 + ".jpg", 3000), ("k1.txt", 0), ("é-ü.json", 7)]:
            info = tarfile.TarInfo(name)
            info.size = size
            tar.addfile(info, io.BytesIO(bytes(range(256)) * (size // 256) + b"z" * (size % 256)))
        folder = tarfile.TarInfo("folder")
        folder.type = tarfile.DIRTYPE
        tar.addfile(folder)  # not a regular file: skipped by both
    assert ours(mixed) == by_tarfile(mixed) and len(ours(mixed)) == 3
    gz = tmp_path / "mixed.tar.gz"
    with tarfile.open(gz, "w:gz") as tar:
        tar.add(mixed, arcname="inner.tar")
    assert ours(gz) == by_tarfile(gz)
    cut = tmp_path / "cut.tar"
    truncate(shard, cut, 0.5)
    with pytest.raises(tarfile.ReadError, match="unexpected end of data"):
        ours(cut)
