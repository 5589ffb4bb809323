"""A run's state in typed pieces, each ``Stateful`` (torchtitan's word): ``state_dict()``
gives what a checkpoint holds of it, ``load_state_dict()`` puts that back.

A checkpoint file stays one flat dict, open_clip's keys plus what exact resume needs
(checkpoint.py), so open_clip and ``load_model`` read it and checkpoints written before
these classes existed still resume. Each piece writes and reads its own keys of it:

=======================  ==========================================================
piece                    keys of the checkpoint
=======================  ==========================================================
:class:`Progress`        ``step``, ``epoch``, ``counters``
:class:`ModelWeights`    ``state_dict`` (the bare CLIP, open_clip's), ``replay_proj``
:class:`OptimizerState`  ``optimizer``, ``scaler`` (open_clip's; always None here)
:class:`TorchRNG`        ``torch_rng``
:class:`Readers`         ``readers``, or ``replay_readers`` for the replay corpus
=======================  ==========================================================

The run's ``name``, ``config`` and ``layout`` sit beside them: facts about the run that a
resume checks (setup.py) rather than loads.

Under torchrun some ``state_dict()`` calls are collectives (the whole weights and
optimiser under FSDP, every rank's reader positions): every rank calls them, rank 0
writes the file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from taxoclip.errors import InputError

from .data import Batch, ReaderPosition
from .distributed import (
    DistEnv,
    full_model_state,
    gather_objects,
    load_optimizer_state,
    optimizer_state,
)
from .model import ContrastiveModel


class Stateful(Protocol):
    """What a checkpoint is made of (torch.distributed.checkpoint's protocol)."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@dataclass
class Progress:
    """How far the run is: steps done and what it has counted on the way."""

    steps_per_epoch: int
    step: int = 0  # steps done: the next step to run
    samples: int = 0  # images seen, over all ranks
    n_substituted: int = 0  # corrupt samples this rank's readers replaced

    def advance(self, batch: Batch, world_size: int) -> int:
        """Count ``batch``'s step as done; returns the images it took over all ranks."""
        n_samples = batch.images.shape[0] * world_size
        self.step = batch.step + 1
        self.samples += n_samples
        self.n_substituted += batch.n_substituted
        return n_samples

    def state_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.step // self.steps_per_epoch,
            "step": self.step,
            "counters": {"n_substituted": self.n_substituted, "samples": self.samples},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = int(state["step"])
        counters = state.get("counters") or {}  # absent in the earliest checkpoints
        self.samples = int(counters.get("samples", 0))
        self.n_substituted = int(counters.get("n_substituted", 0))


def clip_weights(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The bare CLIP's keys (open_clip's) from the ContrastiveModel's state dict."""
    return {k[len("clip.") :]: v for k, v in weights.items() if k.startswith("clip.")}


@dataclass
class ModelWeights:
    """The trained weights: the bare CLIP under open_clip's keys and the replay projection,
    whole tensors on CPU even under FSDP (then :meth:`state_dict` is a collective).
    :meth:`load_state_dict` runs before the model is wrapped (setup.py)."""

    raw_model: ContrastiveModel
    fsdp: bool = False

    def state_dict(self) -> dict[str, Any]:
        weights = full_model_state(self.raw_model, self.fsdp)
        return {"state_dict": clip_weights(weights), "replay_proj": weights.get("replay_proj")}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        try:
            self.raw_model.clip.load_state_dict(state["state_dict"])
            if self.raw_model.replay_proj is not None:
                self.raw_model.replay_proj.data.copy_(state["replay_proj"])
        except (RuntimeError, KeyError, ValueError) as exc:
            raise InputError(f"checkpoint does not fit this model: {exc}") from exc


@dataclass
class OptimizerState:
    """AdamW's moments and step counts: open_clip's layout, or under FSDP the whole state
    keyed by parameter name (a collective). Loaded after the model is wrapped."""

    raw_model: ContrastiveModel
    optimizer: torch.optim.Optimizer
    fsdp: bool = False

    def state_dict(self) -> dict[str, Any]:
        state = optimizer_state(self.raw_model, self.optimizer, self.fsdp)
        return {"optimizer": state, "scaler": None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        load_optimizer_state(self.raw_model, self.optimizer, state, self.fsdp)


class TorchRNG:
    """The global torch generator: restored so that whatever draws from it after a resume
    (dropout, in a model that has it) draws what an uninterrupted run would."""

    def state_dict(self) -> dict[str, Any]:
        return {"torch_rng": torch.get_rng_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        torch.set_rng_state(state["torch_rng"])


@dataclass
class Readers:
    """Where each data reader stands (data.py): the positions this rank's readers reached
    with the last batch it took, and all ranks' positions in the checkpoint, by reader
    number. ``active`` is False for a stream the run does not have (no replay corpus)."""

    key: str  # "readers" or "replay_readers"
    env: DistEnv
    n_streams: int  # readers per rank
    active: bool = True
    mine: dict[int, ReaderPosition] = field(default_factory=dict)
    #: Every reader's position in the checkpoint resumed from (None: start of the stream).
    loaded: list[ReaderPosition | None] | None = None

    @property
    def n_readers(self) -> int:
        return self.env.world_size * self.n_streams

    def update(self, batch: Batch) -> None:
        self.mine[batch.reader] = batch.position

    def read_errors(self) -> int:
        """Samples this rank's readers lost to damaged or missing shards."""
        return sum(p.n_read_errors + p.n_missing for p in self.mine.values())

    def gathered(self) -> list[ReaderPosition | None]:
        """Every reader's position, gathered from the ranks (a collective)."""
        merged: dict[int, ReaderPosition] = {}
        for part in gather_objects(self.mine, self.env):
            merged.update(part)
        return [merged.get(t) for t in range(self.n_readers)]

    def state_dict(self) -> dict[str, Any]:
        if not self.active:
            return {self.key: None}
        return {self.key: [p.state_dict() if p else None for p in self.gathered()]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = state.get(self.key)  # absent or None: the stream starts afresh
        if not saved:
            return
        self.loaded = [ReaderPosition.from_state_dict(s) if s else None for s in saved]
        first = self.env.rank * self.n_streams
        self.mine = {
            t: p for t, p in enumerate(self.loaded) if first <= t < first + self.n_streams and p
        }
