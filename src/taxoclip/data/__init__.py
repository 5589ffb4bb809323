"""Data layer: WebDataset shards in the TreeOfLife-200M layout (write, read, interop).

Importing this package is cheap: webdataset (which imports torch) and PIL load on first read.
"""

from .shards import (
    DEFAULT_SAMPLES_PER_SHARD,
    SHARD_MEMBER_SUFFIXES,
    SIZES_FILE,
    ReadStats,
    ShardSample,
    ShardSet,
    check_key,
    expand_urls,
    log_and_continue,
    read_shards,
    sample_to_record,
    write_shards,
    write_shards_split,
)

__all__ = [
    "DEFAULT_SAMPLES_PER_SHARD",
    "SHARD_MEMBER_SUFFIXES",
    "SIZES_FILE",
    "ReadStats",
    "ShardSample",
    "ShardSet",
    "check_key",
    "expand_urls",
    "log_and_continue",
    "read_shards",
    "sample_to_record",
    "write_shards",
    "write_shards_split",
]
