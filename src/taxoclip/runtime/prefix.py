"""Captions that share a prefix encode it once: a key/value cache for the causal text tower.

CLIP's text tower is causal and pools at the end token, so the keys and values it leaves
at a position depend on the tokens up to that position only. Captions of a tree-of-life
index share long prefixes — the template's words ("a photo of a"), then the lineage
("Animalia Chordata Aves …") shared by every taxon of a clade — and each such prefix needs
computing once: every later caption that starts with it runs only its own suffix on top of
the prefix's keys/values (an encoder's ``encode_block``: :class:`~.text_torch.TextStep` in
torch, ``text_step.onnx`` in ONNX Runtime). Exact up to float rounding (tests hold the
index within 1e-5 cosine of full-context ``encode_text``).

The plan is numpy over the distinct token rows sorted lexicographically (``np.unique``'s
order), the sorted-run form of a trie: row ``i`` shares its first ``lcp_i`` ids with row
``i - 1`` and computes positions ``[start_i, stop_i)`` only, ``start_i = min(lcp_i,
stop_{i-1}, stop_i - 1)`` (``stop`` is one past the row's end token, the position it is
read at; a row always computes that one). Positions it does not compute were computed by
earlier rows, found with a stack of (start, row): its **pieces**. So the positions computed
are the nodes of the captions' trie, plus one caption's prefix per window (below).

- **waves**: a row runs after the rows it reads: wave = 1 + its last piece's wave (its depth
  in the trie: a branch point of the template words, then of the ranks);
- **passes**: a wave's rows sorted by the number of positions they compute, as many a
  forward pass as :data:`BLOCK_TOKENS` (padded block positions) and :data:`PAST_BYTES`
  (the past keys/values handed in, padded to the longest) allow;
- **windows** bound memory: the keys/values a later row reads are kept until the window
  ends, and a window closes before they would pass :data:`KV_CACHE_BYTES`; the next one
  starts from an empty cache (its first row recomputes its prefix).

Memory is therefore flat in the number of captions: at most :data:`KV_CACHE_BYTES` of
kept keys/values plus one pass's inputs and outputs (about :data:`PAST_BYTES` plus its
block), on top of the caller's token and feature arrays
(:data:`~.text.LABEL_CHUNK` labels at a time). Torch-free.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .preprocess import l2_normalize

#: Kept keys/values of a window (the prefixes later captions read), in bytes.
KV_CACHE_BYTES = 512 << 20
#: Past keys/values handed to one forward pass (rows × longest past × bytes per token).
PAST_BYTES = 256 << 20
#: Block positions (rows × longest block, padding included) of one forward pass.
BLOCK_TOKENS = 2048


@dataclass(frozen=True)
class KVShape:
    """What one caption position leaves in the text tower: keys and values of every layer,
    ``(layers, 2, heads, head_dim)`` float32."""

    layers: int
    heads: int
    head_dim: int

    @property
    def bytes_per_token(self) -> int:
        return self.layers * 2 * self.heads * self.head_dim * 4


@dataclass(frozen=True)
class Window:
    """Consecutive sorted rows ``first .. first + len(start)`` sharing one key/value cache.

    Per row (window-local): ``start``/``stop`` the positions it computes, ``keep`` the end
    of what later rows read from it (nothing when ``keep <= start``), ``wave`` when it runs,
    and ``pieces``: (row, lo, hi) — its positions ``[lo, hi)`` are that earlier row's."""

    first: int
    start: np.ndarray
    stop: np.ndarray
    keep: np.ndarray
    wave: np.ndarray
    pieces: list[list[tuple[int, int, int]]]

    @property
    def computed(self) -> int:
        """Positions this window computes (its share of the trie's nodes)."""
        return int((self.stop - self.start).sum())


def shared_lengths(rows: np.ndarray) -> np.ndarray:
    """``lcp[i]``: the ids row ``i`` shares with row ``i - 1`` from the start (``lcp[0] = 0``);
    rows distinct, so some id differs."""
    lcp = np.zeros(len(rows), dtype=np.int64)
    if len(rows) > 1:
        lcp[1:] = np.argmax(rows[1:] != rows[:-1], axis=1)
    return lcp


def plan_windows(rows: np.ndarray, stop: np.ndarray, keep_tokens: int) -> list[Window]:
    """The plan (module docstring) of distinct, lexicographically sorted token ``rows``,
    each read at ``stop - 1``: windows keeping at most ``keep_tokens`` positions' keys/values
    (a window's first row always fits)."""
    lcp = shared_lengths(rows)
    windows: list[Window] = []
    first = 0
    while first < len(rows):
        windows.append(_window(lcp, stop, first, keep_tokens))
        first += len(windows[-1].start)
    return windows


def _window(lcp: np.ndarray, stop: np.ndarray, first: int, keep_tokens: int) -> Window:
    n = len(stop) - first
    start = np.zeros(n, dtype=np.int64)
    keep = np.zeros(n, dtype=np.int64)
    wave = np.zeros(n, dtype=np.int64)
    pieces: list[list[tuple[int, int, int]]] = []
    stack: list[tuple[int, int]] = []  # (start, row): who computed which positions so far
    kept = 0
    for r in range(n):
        i = first + r
        share = 0 if r == 0 else int(min(lcp[i], stop[i - 1], stop[i] - 1))
        while stack and stack[-1][0] >= share:  # this row computes those positions itself
            stack.pop()
        ends = [s for s, _ in stack[1:]] + [share]  # each piece runs to the next's start
        mine = [(k, s, hi) for (s, k), hi in zip(stack, ends, strict=False)]
        cost = sum(max(0, hi - keep[k]) for k, _, hi in mine)
        if r and kept + cost > keep_tokens:
            n = r  # the window is full: this row starts the next one
            break
        for k, _, hi in mine:
            keep[k] = max(keep[k], hi)
        kept += cost
        start[r], keep[r] = share, share
        wave[r] = wave[stack[-1][1]] + 1 if stack else 0
        pieces.append(mine)
        stack.append((share, r))
    stop = np.asarray(stop[first : first + n], dtype=np.int64)
    return Window(first, start[:n], stop, keep[:n], wave[:n], pieces)


def passes(window: Window, wave: int, kv_bytes: int, max_rows: int | None) -> list[np.ndarray]:
    """The window-local rows of ``wave``, sorted by positions to compute and cut into
    forward passes (:data:`BLOCK_TOKENS`, :data:`PAST_BYTES`, at most ``max_rows``)."""
    members = np.flatnonzero(window.wave == wave)
    members = members[np.argsort((window.stop - window.start)[members], kind="stable")]
    out: list[np.ndarray] = []
    current: list[int] = []
    past = 1
    for row in members.tolist():
        width = int(window.stop[row] - window.start[row])  # ascending: the pass's widest
        grown = max(past, int(window.start[row])) if current else max(1, int(window.start[row]))
        full = current and (
            (len(current) + 1) * width > BLOCK_TOKENS
            or (len(current) + 1) * grown * kv_bytes > PAST_BYTES
            or (max_rows is not None and len(current) >= max_rows)
        )
        if full:
            out.append(np.asarray(current))
            current, grown = [], max(1, int(window.start[row]))
        current.append(row)
        past = grown
    if current:
        out.append(np.asarray(current))
    return out


def block_inputs(rows: np.ndarray, window: Window, batch: np.ndarray, pool: np.ndarray):
    """``tokens``, ``positions``, ``mask`` and ``pool`` of one pass (``rows``: the window's
    token rows; ``pool``: each row's end position), as the step graph takes them."""
    start, stop = window.start[batch], window.stop[batch]
    width = int((stop - start).max())
    past = max(1, int(start.max()))  # a past of 0 positions is avoided: one masked slot
    context = rows.shape[1]
    offsets = np.arange(width)
    positions = start[:, None] + offsets
    inside = offsets[None, :] < (stop - start)[:, None]
    tokens = np.where(inside, rows[batch[:, None], np.minimum(positions, context - 1)], 0)
    mask = np.zeros((len(batch), width, past + width), dtype=np.float32)
    mask[:, :, :past] = np.where(np.arange(past)[None, :] < start[:, None], 0.0, -np.inf)[
        :, None, :
    ]
    mask[:, :, past:] = np.triu(np.full((width, width), -np.inf, dtype=np.float32), k=1)
    return (
        np.ascontiguousarray(tokens, dtype=np.int64),
        np.ascontiguousarray(np.minimum(positions, context - 1), dtype=np.int64),
        mask,
        np.ascontiguousarray(pool[batch] - start, dtype=np.int64),
    )


def encode_prefixed(encoder, rows: np.ndarray, max_rows: int | None = None) -> np.ndarray:
    """L2-normalised float32 features of distinct, lexicographically sorted token ``rows``
    (N, context) through ``encoder.encode_block`` (the plan of the module docstring);
    ``encoder.kv_shape`` is a :class:`KVShape`."""
    shape: KVShape = encoder.kv_shape
    kv_bytes = shape.bytes_per_token
    rows = np.ascontiguousarray(rows, dtype=np.int64)
    pool = rows.argmax(axis=1)  # the end token: the highest id, where the tower reads
    features: np.ndarray | None = None
    for window in plan_windows(rows, pool + 1, KV_CACHE_BYTES // kv_bytes):
        local = rows[window.first : window.first + len(window.start)]
        local_pool = pool[window.first : window.first + len(window.start)]
        cache: dict[int, np.ndarray] = {}  # row → keys/values of positions [start, keep)
        for wave in range(int(window.wave.max()) + 1):
            for batch in passes(window, wave, kv_bytes, max_rows):
                tokens, positions, mask, block_pool = block_inputs(local, window, batch, local_pool)
                depth = mask.shape[2] - tokens.shape[1]
                past = np.zeros(
                    (shape.layers, 2, len(batch), shape.heads, depth, shape.head_dim),
                    dtype=np.float32,
                )
                for b, row in enumerate(batch.tolist()):
                    for owner, lo, hi in window.pieces[row]:
                        offset = int(window.start[owner])
                        past[:, :, b, :, lo:hi] = cache[owner][:, :, :, lo - offset : hi - offset]
                out, present = encoder.encode_block(tokens, positions, past, mask, block_pool)
                if features is None:
                    features = np.empty((len(rows), out.shape[1]), dtype=np.float32)
                features[window.first + batch] = out
                for b, row in enumerate(batch.tolist()):
                    kept = int(window.keep[row] - window.start[row])
                    if kept > 0:
                        cache[row] = present[:, :, b, :, :kept].copy()
    assert features is not None
    return l2_normalize(features)
