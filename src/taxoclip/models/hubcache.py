"""Place files in a local Hugging Face cache so ``hf-hub:`` names resolve offline.

For air-gapped machines and tests: a model folder (or the tree-of-life index files)
copied into ``HF_HOME/hub/<kind>s--org--name/snapshots/<rev>/`` with ``refs/main``, the
layout the hub client reads with ``HF_HUB_OFFLINE=1``. pybioclip's tree-of-life mode,
which only accepts ``hf-hub:imageomics/bioclip(-2)``, then runs on any model placed there.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path

REVISION = "0" * 40


def place_in_hub_cache(
    hf_home: str | Path,
    repo_id: str,
    files: Mapping[str, str | Path],
    repo_type: str = "model",
) -> Path:
    """Copy ``files`` ({path in repo: source file}) into the cache; returns the snapshot."""
    if repo_type not in ("model", "dataset"):
        raise ValueError(f"repo_type must be model or dataset, got {repo_type}")
    root = Path(hf_home) / "hub" / f"{repo_type}s--{repo_id.replace('/', '--')}"
    snapshot = root / "snapshots" / REVISION
    for name, source in files.items():
        target = snapshot / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / "main").write_text(REVISION)
    return snapshot


def place_model_folder(hf_home: str | Path, repo_id: str, folder: str | Path) -> Path:
    """A saved model folder (open_clip_config.json + weights) as model repo ``repo_id``."""
    folder = Path(folder)
    files = {p.name: p for p in folder.iterdir() if p.is_file()}
    return place_in_hub_cache(hf_home, repo_id, files, "model")


def place_index(hf_home: str | Path, repo_id: str, index_folder: str | Path) -> Path:
    """Index files as ``embeddings/txt_emb_species.*`` of dataset repo ``repo_id``."""
    folder = Path(index_folder)
    files = {
        f"embeddings/{name}": folder / name
        for name in ("txt_emb_species.npy", "txt_emb_species.json")
    }
    return place_in_hub_cache(hf_home, repo_id, files, "dataset")
