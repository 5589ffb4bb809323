"""Shard writing/reading in the TreeOfLife-200M layout, and interop with stock open_clip."""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from taxoclip.data import (
    SHARD_MEMBER_SUFFIXES,
    ReadStats,
    ShardSample,
    ShardSet,
    decode_member,
    expand_urls,
    read_shards,
    sample_to_record,
    scan_tar,
    split_member_name,
    write_shards,
    write_shards_split,
)
from taxoclip.errors import InputError, UsageError
from taxoclip.taxonomy import SHARD_TEXT_KEYS, Lineage, render_all

MAGPIE = Lineage("Animalia", "Chordata", "Aves", "Passeriformes", "Corvidae", "Pica", "hudsonia")
# GBIF gives ray-finned fishes no class: a hole in the middle of the lineage.
TROUT = Lineage("Animalia", "Chordata", "", "Salmoniformes", "Salmonidae", "Salmo", "trutta")
GENUS_ONLY = Lineage("Plantae", "Tracheophyta", "Magnoliopsida", "Asterales", "", "Bellis", "")
UNICODE = Lineage("Animalia", "Arthropoda", "Insecta", "Coleoptera", "Carabidae", "Carabus", "ë")
COMPAT_WDS = Path(sys.prefix) / "compat" / "webdataset-0.2.86"


def jpeg(seed: int, size: tuple[int, int] = (12, 8)) -> bytes:
    """A real, small JPEG; ``size`` is (width, height) as PIL reports it."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def make_samples(n: int) -> list[ShardSample]:
    cases = [
        (MAGPIE, "black-billed magpie"),
        (TROUT, "brown trout"),
        (GENUS_ONLY, ""),
        (UNICODE, "Laufkäfer „ë“"),
    ]
    samples = []
    for index in range(n):
        lineage, common = cases[index % len(cases)]
        meta = {"species_id": index % len(cases), "sex": "f" if index % 2 else "m"}
        size = (10 + index % 3, 8 + index % 5)
        samples.append(ShardSample(f"s{index:05d}", jpeg(index, size), lineage, common, meta))
    return samples


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_round_trip_every_key(tmp_path: Path) -> None:
    samples = make_samples(8)
    shards = write_shards(samples, tmp_path / "out", samples_per_shard=3)
    assert shards.sizes == [3, 3, 2]
    stats = ReadStats()
    read = list(read_shards(shards.pattern, stats=stats))
    assert [r["__key__"] for r in read] == [s.key for s in samples]
    assert stats.ok and stats.n_samples == 8
    expected_keys = {"__key__", "__url__", "jpg", "json", "txt"} | {
        f"{key}.txt" for key in SHARD_TEXT_KEYS
    }
    for sample, got in zip(samples, read, strict=True):
        assert set(got) == expected_keys
        texts = render_all(sample.lineage, sample.common_name)
        for key in SHARD_TEXT_KEYS:
            assert got[f"{key}.txt"] == texts[key], key
        assert got["txt"] == texts["txt"] == texts["taxon"]
        assert got["jpg"].mode == "RGB"
        assert got["jpg"].size == Image.open(io.BytesIO(sample.jpg)).size
        # meta keys kept beside the full lineage (holes as "") and common name
        assert got["json"]["species_id"] == sample.meta["species_id"]
        assert got["json"]["sex"] == sample.meta["sex"]
        assert got["json"]["lineage"] == sample.lineage.to_list()
        assert sample_to_record(got) == (sample.lineage, sample.common_name)
    # the hole-punched lineage really has a hole that only the json can restore
    trout = read[1]
    assert trout["taxonomic_name.txt"] == "Animalia Chordata Salmoniformes Salmonidae Salmo trutta"
    assert sample_to_record(trout)[0].klass == ""
    assert read[2]["common_name.txt"] == ""
    assert read[3]["com.txt"] == "a photo of Laufkäfer „ë“."


def test_raw_read_keeps_image_bytes(tmp_path: Path) -> None:
    samples = make_samples(3)
    shards = write_shards(samples, tmp_path, samples_per_shard=10)
    read = list(read_shards(shards.urls, decode=False))
    assert [r["jpg"] for r in read] == [s.jpg for s in samples]


def test_member_layout_and_headers(tmp_path: Path) -> None:
    shards = write_shards(make_samples(2), tmp_path)
    with tarfile.open(shards.paths[0]) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names[: len(SHARD_MEMBER_SUFFIXES)] == [
        f"s00000.{suffix}" for suffix in SHARD_MEMBER_SUFFIXES
    ]
    assert names[-1] == "s00001.jpg"  # image last: a cut-short sample always lacks it
    for member in members:
        assert (member.mtime, member.uid, member.gid, member.mode) == (0, 0, 0, 0o644)
        assert (member.uname, member.gname) == ("", "")


def test_the_tar_index_points_at_what_streaming_sees(tmp_path: Path) -> None:
    shards = write_shards(make_samples(5), tmp_path / "out", samples_per_shard=3)
    streamed = list(read_shards(shards.pattern, decode=False))
    scanned = []
    for path in shards.paths:
        with path.open("rb") as handle:
            for key, parts in scan_tar(path):
                sample = {"__key__": key}
                for suffix, (offset, size) in parts.items():
                    handle.seek(offset)
                    sample[suffix] = decode_member(suffix, handle.read(size), False)
                scanned.append(sample)
    assert scanned == [{k: v for k, v in s.items() if k != "__url__"} for s in streamed]


def test_member_names_split_as_webdataset_splits_them() -> None:
    assert split_member_name("s00001.taxon_com.txt") == ("s00001", "taxon_com.txt")
    assert split_member_name("a.b/s1.jpg") == ("a.b/s1", "jpg")
    assert split_member_name("README") is None


def test_deterministic_bytes(tmp_path: Path) -> None:
    first = write_shards(make_samples(7), tmp_path / "a", samples_per_shard=3)
    second = write_shards(iter(make_samples(7)), tmp_path / "b", samples_per_shard=3)
    assert [p.name for p in first.paths] == [p.name for p in second.paths]
    assert [sha256(p) for p in first.paths] == [sha256(p) for p in second.paths]
    assert sha256(tmp_path / "a" / "sizes.json") == sha256(tmp_path / "b" / "sizes.json")
    # no temp files left behind
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == [
        "shard-000000.tar",
        "shard-000001.tar",
        "shard-000002.tar",
        "sizes.json",
    ]


def test_sizes_json_pattern_and_load(tmp_path: Path) -> None:
    shards = write_shards(make_samples(25), tmp_path, samples_per_shard=10, prefix="train")
    sizes = json.loads((tmp_path / "sizes.json").read_text())
    assert sizes == {"train-000000.tar": 10, "train-000001.tar": 10, "train-000002.tar": 5}
    assert shards.n_samples == 25 and shards.n_shards == 3
    assert shards.pattern == f"{tmp_path.absolute()}/train-{{000000..000002}}.tar"
    assert expand_urls(shards.pattern) == [str(p) for p in shards.paths]
    assert ShardSet.load(tmp_path, prefix="train") == shards
    # a second prefix shares the directory and sizes.json
    test = write_shards(make_samples(3), tmp_path, prefix="test")
    assert test.pattern == str(tmp_path.absolute() / "test-000000.tar")
    sizes = json.loads((tmp_path / "sizes.json").read_text())
    assert sizes["test-000000.tar"] == 3 and sizes["train-000002.tar"] == 5


def test_rewrite_removes_stale_shards(tmp_path: Path) -> None:
    write_shards(make_samples(6), tmp_path, samples_per_shard=2)
    shards = write_shards(make_samples(3), tmp_path, samples_per_shard=2)
    assert sorted(p.name for p in tmp_path.glob("*.tar")) == [p.name for p in shards.paths]
    assert json.loads((tmp_path / "sizes.json").read_text()) == {
        "shard-000000.tar": 2,
        "shard-000001.tar": 1,
    }


@pytest.mark.parametrize(("n_samples", "n_shards", "sizes"), [(10, 3, [4, 3, 3]), (5, 5, [1] * 5)])
def test_n_shards_spreads_evenly(
    tmp_path: Path, n_samples: int, n_shards: int, sizes: list[int]
) -> None:
    shards = write_shards_split(make_samples(n_samples), tmp_path / "a", n_shards=n_shards)
    assert shards.sizes == sizes
    again = write_shards(make_samples(n_samples), tmp_path / "b", n_shards=n_shards)
    assert again.sizes == sizes
    assert [r["__key__"] for r in read_shards(shards)] == [f"s{i:05d}" for i in range(n_samples)]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda s: s.__setattr__("key", "bad.key"), "'bad.key'.*dot"),
        (lambda s: s.__setattr__("key", "a/b"), "'a/b'"),
        (lambda s: s.__setattr__("key", ""), "non-empty"),
        (lambda s: s.__setattr__("key", "s00000"), "duplicate sample key 's00000'"),
        (lambda s: s.__setattr__("meta", {"lineage": ["x"] * 7}), "disagrees"),
        (lambda s: s.__setattr__("meta", {"obj": object()}), "not JSON"),
    ],
)
def test_bad_samples_raise_and_write_nothing(tmp_path: Path, change, message: str) -> None:
    samples = make_samples(5)
    change(samples[3])  # after the first shard was filled: nothing may be left behind
    with pytest.raises(UsageError, match=message):
        write_shards(samples, tmp_path, samples_per_shard=2)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("n_shards", "message"), [(6, "5 sample.*6 shards"), (0, ">= 1")])
def test_bad_shard_counts(tmp_path: Path, n_shards: int, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        write_shards_split(make_samples(5), tmp_path, n_shards=n_shards)


def test_other_usage_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no samples"):
        write_shards([], tmp_path)
    with pytest.raises(UsageError, match="samples_per_shard"):
        write_shards(make_samples(1), tmp_path, samples_per_shard=0)
    with pytest.raises(UsageError, match="stream"):
        write_shards(iter(make_samples(2)), tmp_path, n_shards=1)
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError, match="not a directory"):
        write_shards(make_samples(1), tmp_path / "file")


def test_missing_shard_raises_before_iterating(tmp_path: Path) -> None:
    shards = write_shards(make_samples(2), tmp_path)
    missing = tmp_path / "shard-000001.tar"
    with pytest.raises(InputError, match=str(missing)):
        read_shards([str(shards.paths[0]), str(missing)])  # no next(): eager check


def test_expand_urls() -> None:
    assert expand_urls("d/a-{0..2}.tar::d/b.tar") == [
        "d/a-0.tar",
        "d/a-1.tar",
        "d/a-2.tar",
        "d/b.tar",
    ]
    assert expand_urls(["x-{00..01}.tar", Path("y.tar")]) == ["x-00.tar", "x-01.tar", "y.tar"]
    with pytest.raises(UsageError):
        expand_urls("")


def test_corrupt_image_is_skipped_and_counted(tmp_path: Path) -> None:
    samples = make_samples(5)
    samples[2].jpg = b"\xff\xd8 this is not a jpeg"
    samples[3].jpg = jpeg(3)[:40]  # truncated JPEG: header fine, data cut
    shards = write_shards(samples, tmp_path, samples_per_shard=2)
    stats = ReadStats()
    read = list(read_shards(shards.pattern, stats=stats))
    assert [r["__key__"] for r in read] == ["s00000", "s00001", "s00004"]
    assert (stats.n_samples, stats.n_skipped, stats.n_read_errors) == (3, 2, 0)
    assert "s00002" in stats.messages[0] and "2 skipped" in stats.summary()
    # undecoded reads do not look at the image
    assert len(list(read_shards(shards.pattern, decode=False))) == 5


def _member_offsets(path: Path) -> dict[str, int]:
    with tarfile.open(path) as tar:
        return {m.name: m.offset for m in tar.getmembers()}


@pytest.mark.parametrize("where", ["inside_jpg_data", "inside_text_header", "sample_boundary"])
def test_truncated_shard_is_skipped_and_counted(tmp_path: Path, where: str) -> None:
    shards = write_shards(make_samples(8), tmp_path, samples_per_shard=4)
    first = shards.paths[0]
    offsets = _member_offsets(first)
    cut = {
        "inside_jpg_data": offsets["s00001.jpg"] + 512 + 100,  # past the header, into data
        "inside_text_header": offsets["s00001.sci.txt"] + 100,  # tarfile ends silently here
        "sample_boundary": offsets["s00002.json"],  # every sample before is whole
    }[where]
    first.write_bytes(first.read_bytes()[:cut])
    stats = ReadStats()
    read = list(read_shards(shards.pattern, stats=stats))
    from_first = [r["__key__"] for r in read if r["__url__"] == str(first)]
    whole = 2 if where == "sample_boundary" else 1
    assert from_first == [f"s{i:05d}" for i in range(whole)]
    assert [r["__key__"] for r in read[whole:]] == ["s00004", "s00005", "s00006", "s00007"]
    # every one of the 4 samples sizes.json lists is either read or accounted for
    assert stats.n_lost == 4 - whole
    assert stats.bad_shards == {str(first)}
    assert all(len(r) == 15 for r in read)


def test_unreadable_shard_is_skipped(tmp_path: Path) -> None:
    shards = write_shards(make_samples(4), tmp_path, samples_per_shard=2)
    shards.paths[0].write_bytes(b"this is not a tar file at all" * 40)
    stats = ReadStats()
    read = list(read_shards(shards.pattern, stats=stats))
    assert [r["__key__"] for r in read] == ["s00002", "s00003"]
    assert stats.n_read_errors >= 1 and stats.n_missing == 2


def test_foreign_sample_without_json() -> None:
    texts = render_all(MAGPIE, "black-billed magpie")
    sample = {f"{k}.txt": v for k, v in texts.items() if k != "txt"}
    assert sample_to_record(sample) == (MAGPIE, "black-billed magpie")
    holes = {f"{k}.txt": v for k, v in render_all(TROUT, "").items() if k != "txt"}
    with pytest.raises(InputError, match="7 ranks"):
        sample_to_record(holes)


# ---------------------------------------------------------------- open_clip interop


@pytest.fixture(scope="module")
def clip_bits():
    open_clip = pytest.importorskip("open_clip")
    return open_clip.get_tokenizer("ViT-B-32"), open_clip.image_transform(32, is_train=False)


def test_stock_open_clip_eval_path_reads_our_shards(tmp_path: Path, clip_bits) -> None:
    from open_clip_train.data import get_dataset_size, get_wds_dataset

    tokenizer, preprocess = clip_bits
    samples = make_samples(7)
    shards = write_shards(samples, tmp_path, samples_per_shard=3)
    assert get_dataset_size(shards.pattern) == (7, 3)
    args = argparse.Namespace(
        train_data=None,
        val_data=shards.pattern,
        val_num_samples=None,
        train_num_samples=None,
        dataset_resampled=False,
        train_data_upsampling_factors=None,
        batch_size=4,
        workers=0,
        world_size=1,
        seed=0,
    )
    info = get_wds_dataset(args, preprocess, is_train=False, tokenizer=tokenizer)
    batches = list(info.dataloader)
    assert [tuple(images.shape) for images, _ in batches] == [(4, 3, 32, 32), (3, 3, 32, 32)]
    tokens = np.concatenate([texts.numpy() for _, texts in batches])
    captions = [render_all(s.lineage, s.common_name)["taxon"] for s in samples]
    np.testing.assert_array_equal(tokens, tokenizer(captions).numpy())


TRAIN_PROBE = textwrap.dedent(
    """
    import argparse, json, sys
    import open_clip, webdataset
    from open_clip_train.data import get_dataset_size, get_wds_dataset
    from taxoclip.data import read_shards

    pattern = sys.argv[1]
    args = argparse.Namespace(
        train_data=pattern, val_data=None, train_num_samples=None, val_num_samples=None,
        dataset_resampled=False, train_data_upsampling_factors=None,
        batch_size=4, workers=0, world_size=1, seed=0,
    )
    tokenizer = open_clip.get_tokenizer("ViT-B-32")
    info = get_wds_dataset(
        args, open_clip.image_transform(32, is_train=True), is_train=True, tokenizer=tokenizer
    )
    batches = list(info.dataloader)
    print(json.dumps({
        "webdataset": webdataset.__version__,
        "dataset_size": get_dataset_size(pattern),
        "num_samples": info.dataloader.num_samples,
        "num_batches": info.dataloader.num_batches,
        "image_shapes": [list(images.shape) for images, _ in batches],
        "tokens": [row.tolist() for _, texts in batches for row in texts],
        "our_reader": len(list(read_shards(pattern))),
    }))
    """
)


def test_stock_open_clip_train_path_with_compat_webdataset(tmp_path: Path, clip_bits) -> None:
    """open_clip's training reader dies on webdataset >= 0.2.96 (docs/reference.md), so run
    it where webdataset 0.2.86 comes first on the path, in its own process."""
    if not (COMPAT_WDS / "webdataset").is_dir():
        pytest.skip(f"{COMPAT_WDS} missing: run `make venv` (pip install --target … 0.2.86)")
    tokenizer, _ = clip_bits
    samples = make_samples(10)
    shards = write_shards_split(samples, tmp_path / "shards", n_shards=3)
    path = [str(COMPAT_WDS), os.environ.get("PYTHONPATH", "")]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in path if p))
    result = subprocess.run(
        [sys.executable, "-c", TRAIN_PROBE, shards.pattern],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,  # a hang guard: importing torch is slow on a loaded machine
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["webdataset"] == "0.2.86"
    assert report["dataset_size"] == [10, 3]  # from our sizes.json
    # 10 samples at batch 4: open_clip rounds up to 3 full batches (12 samples)
    assert (report["num_samples"], report["num_batches"]) == (12, 3)
    assert report["image_shapes"] == [[4, 3, 32, 32]] * 3
    allowed = {
        tuple(row)
        for row in tokenizer([render_all(s.lineage, s.common_name)["txt"] for s in samples])
        .numpy()
        .tolist()
    }
    assert {tuple(row) for row in report["tokens"]} <= allowed
    assert report["our_reader"] == 10  # our reader works with the old webdataset too


def test_caption_samples_hold_only_their_caption(tmp_path: Path) -> None:
    sample = ShardSample(
        key="w1",
        jpg=jpeg(1),
        lineage=None,
        meta={"kind": "scene"},
        caption="  a  green animal\nwith a crest ",
    )
    shards = write_shards([sample], tmp_path)
    with tarfile.open(shards.paths[0]) as tar:
        assert tar.getnames() == ["w1.json", "w1.txt", "w1.jpg"]
        assert tar.extractfile("w1.txt").read() == b"a green animal with a crest"
        assert json.loads(tar.extractfile("w1.json").read()) == {"kind": "scene"}
    for bad in ("", "   ", 3):
        with pytest.raises(UsageError, match="caption"):
            write_shards(
                [ShardSample(key="w2", jpg=jpeg(2), lineage=None, caption=bad)], tmp_path / "bad"
            )
    with pytest.raises(UsageError, match="lineage"):
        write_shards([ShardSample(key="w3", jpg=jpeg(3), lineage=None)], tmp_path / "bad2")
