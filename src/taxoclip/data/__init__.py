"""Data layer: WebDataset shards in the TreeOfLife-200M layout (write, read, interop).

``layout`` says what a sample and a shard set are, ``write`` writes them, ``read`` reads
them (streaming, from local paths, http(s), ``pipe:`` and fsspec URLs; training streams
them too, see ``taxoclip.train.data``). Importing this package is cheap:
webdataset (which imports torch) and PIL load on first read.
"""

from .layout import (
    DEFAULT_SAMPLES_PER_SHARD,
    IMAGE_MEMBERS,
    SHARD_MEMBER_SUFFIXES,
    SIZES_FILE,
    ShardSample,
    ShardSet,
    check_key,
    expand_urls,
    local_path,
    split_member_name,
)
from .read import (
    ReadStats,
    decode_member,
    decode_rgb,
    log_and_continue,
    read_shards,
    sample_to_record,
    scan_tar,
)
from .write import write_shards, write_shards_split

__all__ = [
    "DEFAULT_SAMPLES_PER_SHARD",
    "IMAGE_MEMBERS",
    "SHARD_MEMBER_SUFFIXES",
    "SIZES_FILE",
    "ReadStats",
    "ShardSample",
    "ShardSet",
    "check_key",
    "decode_member",
    "decode_rgb",
    "expand_urls",
    "local_path",
    "log_and_continue",
    "read_shards",
    "sample_to_record",
    "scan_tar",
    "split_member_name",
    "write_shards",
    "write_shards_split",
]
