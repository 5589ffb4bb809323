"""SynthToL's random streams: one generator per (seed, purpose, index), so results never
depend on the order things are made in."""

from __future__ import annotations

import numpy as np

# Purposes: the tree, each species' rendering, the training shards' order, the raw source,
# the web corpus.
TREE_STREAM = 0
RENDER_STREAM = 1
SHARD_ORDER_STREAM = 2
RAW_STREAM = 3
WEB_STREAM = 4


def species_rng(seed: int, stream: int, index: int = 0) -> np.random.Generator:
    """Independent generator per (seed, purpose, species): results do not depend on order."""
    return np.random.default_rng(np.random.SeedSequence([seed, stream, index]))
