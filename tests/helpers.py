"""Small builders shared by test modules (real models, real files; nothing mocked)."""

from __future__ import annotations

from pathlib import Path


def saved_model(folder: Path, name: str = "taxoclip-vit-t32", seed: int = 0) -> Path:
    """A freshly initialised open_clip model written as a model folder (HF layout)."""
    from taxoclip.models import create_model, save_model

    loaded = create_model(name, seed=seed)
    return save_model(loaded.model, folder, loaded.model_cfg, loaded.preprocess_cfg)
