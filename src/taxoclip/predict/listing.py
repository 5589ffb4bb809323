"""``taxoclip list-models`` and ``taxoclip list-tol-taxa``: pybioclip's two listing commands,
with its output (one tab-indented model per line; the taxa CSV with its nine columns)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from taxoclip.errors import InputError, UsageError
from taxoclip.files import write_text_atomic
from taxoclip.runtime.index import JSON_FILE, TOL_MODELS, index_files

from .config import ListingResult, ListModelsConfig, ListTolTaxaConfig

#: pybioclip's ``list-tol-taxa`` columns (``TreeOfLifeClassifier.get_label_data``).
TAXA_COLUMNS = (
    "kingdom",
    "phylum",
    "class",
    "order",
    "family",
    "genus",
    "species_epithet",
    "species",
    "common_name",
)


def list_models(model: str | None = None) -> list[str]:
    """pybioclip's lines: with ``model``, its pretrained tags; else the tree-of-life models
    then every open_clip model name, each after a tab."""
    import open_clip

    import taxoclip.models  # noqa: F401  (registers taxoclip's configs with open_clip)

    if model:
        tags = open_clip.list_pretrained_tags_by_model(model)
        if not tags and model not in open_clip.list_models() and model not in TOL_MODELS:
            raise UsageError(
                f"--model {model}: open_clip knows no such model (see `taxoclip list-models`)"
            )
        return list(tags)
    return [f"\t{name}" for name in [*TOL_MODELS, *open_clip.list_models()]]


def run_list_models(config: ListModelsConfig) -> ListingResult:
    return ListingResult(text="\n".join(list_models(config.model)))


def taxa_names(model: str, index: str | None = None) -> list[list]:
    """The ``[[7 ranks], common]`` entries of a tree-of-life index; only the names file is
    read (and for a published index only it is downloaded): no model is loaded."""
    if index:
        _, names_file = index_files(index, model)
    else:
        repo = TOL_MODELS.get(model)
        if repo is None:
            raise UsageError(f"model {model} has no published tree-of-life index; pass --index DIR")
        from huggingface_hub import hf_hub_download

        try:
            names_file = Path(
                hf_hub_download(
                    repo_id=repo, filename=f"embeddings/{JSON_FILE}", repo_type="dataset"
                )
            )
        except Exception as exc:  # offline without a cache, network errors
            raise InputError(f"cannot get the taxa of {model} from {repo}: {exc}") from exc
    if not names_file.is_file():
        raise InputError(f"text index {index}: missing {names_file.name}")
    try:
        names = json.loads(names_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"text index {names_file}: cannot read ({exc})") from exc
    return names


def taxa_csv(names: list[list]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(TAXA_COLUMNS)
    for ranks, common in names:
        ranks = [*ranks, *[""] * (7 - len(ranks))][:7]
        writer.writerow([*ranks, f"{ranks[5]} {ranks[6]}", common])
    return buffer.getvalue()


def run_list_tol_taxa(config: ListTolTaxaConfig) -> ListingResult:
    text = taxa_csv(taxa_names(config.model, config.index))
    if config.output:
        write_text_atomic(Path(config.output), text)
        return ListingResult(text="")
    return ListingResult(text=text)
