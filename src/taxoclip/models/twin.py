"""The untrained twin: the baseline every number of ``eval``, ``analyze`` and ``study`` needs."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from .io import LoadedModel, create_model


def untrained_twin(loaded: LoadedModel, seed: int = 0) -> LoadedModel:
    """The same architecture as ``loaded`` with fresh random weights drawn from ``seed``,
    in eval mode (on the CPU; move it where the trained model is)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "architecture.json"
        path.write_text(json.dumps(loaded.model_cfg))
        twin = create_model(path, seed=seed)
    twin.model.eval()
    return twin
