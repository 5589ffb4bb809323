"""Model I/O: what we save loads bit-identically in plain open_clip and in every spec form.

Offline throughout: the Hugging Face cache is a folder under tmp_path, laid out as the
hub client leaves it, and offline mode is forced.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import huggingface_hub.constants
import open_clip
import pytest
import torch
from PIL import Image

from taxoclip.errors import InputError, UsageError
from taxoclip.models import (
    CONFIG_DIR,
    CONFIG_FILE,
    SAFETENSORS_FILE,
    LoadedModel,
    create_model,
    list_models,
    load_model,
    register_configs,
    save_model,
)
from taxoclip.models.io import _tensors_for_safetensors

TINY = "taxoclip-vit-t32"

# The longest caption form (taxonTag_com) with 2–4-syllable pseudo-Latin names; the last
# one is the longest measured from SynthToL's name generator (60 tokens with start/end).
LONG_CAPTIONS = (
    "a photo of kingdom Lomaria phylum Vexorata class Caldimia order Tessiformes family "
    "Brunavidae genus Oxalis species pellucens with common name striped crimson long-billed "
    "darter.",
    "a photo of kingdom Scyscanozoa phylum Xicrausata class Baezanea order Laululiformes "
    "family Daugrauninae genus Rauphixus species zaethosatus with common name western lesser "
    "long-billed striped crimson darter.",
    "a photo of kingdom Thraumaphyta phylum Glossopoda class Crestopsida order Plaudrinales "
    "family Stroxaceae genus Phaecrella species brauchicola with common name greater "
    "short-billed spotted magenta tanager.",
)


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No test may reach the network; the hub cache is an empty folder unless filled."""
    hf_home = tmp_path / "hf"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(hf_home))
    # huggingface_hub reads these at import, so the environment alone comes too late.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hf_home / "hub"))
    return hf_home


@pytest.fixture(scope="module")
def tiny() -> LoadedModel:
    return create_model(TINY, seed=0)


def _inputs(loaded: LoadedModel) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    size = loaded.image_size
    images = torch.randn(3, 3, size, size, generator=generator)
    texts = loaded.tokenizer(["a photo of Pica hudsonia.", *LONG_CAPTIONS[:2]])
    return images, texts


def _features(model: torch.nn.Module, images: torch.Tensor, texts: torch.Tensor):
    model.eval()
    with torch.inference_mode():
        return model.encode_image(images), model.encode_text(texts)


def _assert_same_features(reference: LoadedModel, other: torch.nn.Module) -> None:
    images, texts = _inputs(reference)
    ref_img, ref_txt = _features(reference.model, images, texts)
    img, txt = _features(other, images, texts)
    assert torch.equal(ref_img, img)
    assert torch.equal(ref_txt, txt)


def _state_dict(loaded: LoadedModel) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in loaded.model.state_dict().items()}


# --------------------------------------------------------------------------- registry


def test_configs_registered_with_open_clip_once() -> None:
    names = list_models()
    assert names == sorted(p.stem for p in CONFIG_DIR.glob("taxoclip-*.json"))
    assert {"taxoclip-vit-t32", "taxoclip-vit-s64", "taxoclip-vit-t224"} <= set(names)
    assert set(names) <= set(open_clip.list_models())
    register_configs()
    register_configs()
    assert open_clip.factory._MODEL_CONFIG_PATHS.count(CONFIG_DIR) == 1
    for name in names:
        cfg = open_clip.get_model_config(name)
        assert cfg["embed_dim"] >= 128


def test_top_level_package_does_not_import_models() -> None:
    code = "import sys, taxoclip; assert 'taxoclip.models' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("name", ["taxoclip-vit-t32", "taxoclip-vit-s64", "taxoclip-vit-t224"])
def test_context_length_holds_longest_captions(name: str) -> None:
    context = open_clip.get_model_config(name)["text_cfg"]["context_length"]
    tokenizer = open_clip.get_tokenizer(name)
    assert tokenizer.context_length == context
    tokens = tokenizer(list(LONG_CAPTIONS))
    # Truncation would put the end token in the last slot; a fitting caption leaves padding.
    assert (tokens[:, -1] == 0).all()
    for caption in LONG_CAPTIONS:
        assert len(tokenizer.encode(caption)) + 2 <= context


def test_create_model_is_seeded_and_leaves_global_rng_alone(tiny: LoadedModel) -> None:
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    again = create_model(TINY, seed=0)
    assert torch.equal(torch.rand(1), expected_next)
    for key, value in tiny.model.state_dict().items():
        assert torch.equal(value, again.model.state_dict()[key]), key
    other = create_model(TINY, seed=1)
    assert not torch.equal(
        other.model.state_dict()["visual.proj"], tiny.model.state_dict()["visual.proj"]
    )
    assert not tiny.model.training
    assert (tiny.context_length, tiny.embed_dim, tiny.image_size) == (64, 128, 32)
    assert tiny.weights is None


# --------------------------------------------------------------------------- save / load


def test_saved_folder_loads_identically_in_plain_open_clip(
    tiny: LoadedModel, tmp_path: Path
) -> None:
    folder = save_model(tiny.model, tmp_path / "model", tiny.model_cfg)
    assert sorted(p.name for p in folder.iterdir()) == [CONFIG_FILE, SAFETENSORS_FILE]
    config = json.loads((folder / CONFIG_FILE).read_text())
    assert config["model_cfg"] == tiny.model_cfg
    assert config["preprocess_cfg"]["size"] == 32
    assert config["preprocess_cfg"]["mean"] == list(open_clip.OPENAI_DATASET_MEAN)
    assert config["preprocess_cfg"]["resize_mode"] == "shortest"

    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{folder}")
    _assert_same_features(tiny, model)
    tokenizer = open_clip.get_tokenizer(f"local-dir:{folder}")
    assert torch.equal(tokenizer(list(LONG_CAPTIONS)), tiny.tokenizer(list(LONG_CAPTIONS)))
    assert preprocess(Image.new("RGB", (50, 40))).shape == (3, 32, 32)
    assert not list(tmp_path.glob(".*tmp"))


def test_load_model_folder_run_dir_and_local_dir_prefix(tiny: LoadedModel, tmp_path: Path) -> None:
    run = tmp_path / "run"
    save_model(tiny.model, run / "model", tiny.model_cfg)
    for spec in (run / "model", str(run), f"local-dir:{run / 'model'}"):
        loaded = load_model(spec)
        assert loaded.spec == os.fspath(spec)
        assert loaded.weights == str(run / "model" / SAFETENSORS_FILE)
        assert loaded.model_cfg == tiny.model_cfg
        assert not loaded.model.training
        assert loaded.preprocess_val(Image.new("RGB", (64, 64))).shape == (3, 32, 32)
        _assert_same_features(tiny, loaded.model)


def test_save_overwrites_in_place_and_unwraps_wrappers(tiny: LoadedModel, tmp_path: Path) -> None:
    folder = tmp_path / "model"
    save_model(create_model(TINY, seed=5).model, folder, tiny.model_cfg)

    class Wrapper(torch.nn.Module):  # stands in for DDP: the model sits in `.module`
        def __init__(self, module: torch.nn.Module) -> None:
            super().__init__()
            self.module = module

    save_model(Wrapper(tiny.model), folder, tiny.model_cfg, {"resize_mode": "squash"})
    assert sorted(p.name for p in folder.iterdir()) == [CONFIG_FILE, SAFETENSORS_FILE]
    loaded = load_model(folder)
    _assert_same_features(tiny, loaded.model)
    assert loaded.preprocess_cfg["resize_mode"] == "squash"


def test_save_rejects_preprocess_keys_open_clip_ignores(tiny: LoadedModel, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="image_size"):
        save_model(tiny.model, tmp_path / "m", tiny.model_cfg, {"image_size": 32})
    assert not (tmp_path / "m").exists()


def test_shared_and_view_tensors_are_saved_as_copies() -> None:
    base = torch.arange(12.0)
    out = _tensors_for_safetensors({"a": base, "b": base, "c": base[:4]})
    storages = {t.untyped_storage().data_ptr() for t in out.values()}
    assert len(storages) == 3
    assert torch.equal(out["c"], base[:4])


def test_name_with_weights_files_and_ddp_checkpoint(tiny: LoadedModel, tmp_path: Path) -> None:
    state = _state_dict(tiny)
    plain = tmp_path / "weights.pt"
    torch.save(state, plain)
    optimizer = torch.optim.AdamW(tiny.model.parameters(), lr=1e-4)
    checkpoint = tmp_path / "epoch_1.pt"
    torch.save(
        {
            "epoch": 1,
            "name": TINY,
            "state_dict": {f"module.{k}": v for k, v in state.items()},
            "optimizer": optimizer.state_dict(),
            "scaler": None,
        },
        checkpoint,
    )
    folder = save_model(tiny.model, tmp_path / "model", tiny.model_cfg)
    for weights in (plain, checkpoint, folder / SAFETENSORS_FILE):
        loaded = load_model(TINY, pretrained=weights)
        assert loaded.weights == str(weights)
        _assert_same_features(tiny, loaded.model)


def test_checkpoint_path_as_spec_and_run_with_pretrained(tiny: LoadedModel, tmp_path: Path) -> None:
    run = tmp_path / "run"
    save_model(create_model(TINY, seed=9).model, run / "model", tiny.model_cfg)
    checkpoint = run / "checkpoints" / "epoch_2.pt"
    checkpoint.parent.mkdir()
    torch.save(
        {"epoch": 2, "state_dict": {f"module.{k}": v for k, v in _state_dict(tiny).items()}},
        checkpoint,
    )
    _assert_same_features(tiny, load_model(checkpoint).model)
    _assert_same_features(tiny, load_model(run, pretrained=checkpoint).model)


def _fill_hub_cache(hf_home: Path, repo: str, folder: Path, files: tuple[str, ...]) -> None:
    """Lay files out as the hub client caches them: snapshots/<rev>/… plus refs/main."""
    org, name = repo.split("/")
    root = hf_home / "hub" / f"models--{org}--{name}"
    revision = "0123456789abcdef0123456789abcdef01234567"
    snapshot = root / "snapshots" / revision
    snapshot.mkdir(parents=True)
    for file in files:
        (snapshot / file).write_bytes((folder / file).read_bytes())
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(revision)


def test_hf_hub_spec_from_offline_cache(offline: Path, tmp_path: Path) -> None:
    reference = create_model("taxoclip-vit-t224", seed=0)
    folder = save_model(reference.model, tmp_path / "model", reference.model_cfg)
    _fill_hub_cache(offline, "taxoclip/tiny", folder, (CONFIG_FILE, SAFETENSORS_FILE))

    loaded = load_model("hf-hub:taxoclip/tiny")
    assert loaded.weights == "hf-hub:taxoclip/tiny"
    assert loaded.image_size == 224 and loaded.context_length == 77
    _assert_same_features(reference, loaded.model)
    plain, _, _ = open_clip.create_model_and_transforms("hf-hub:taxoclip/tiny")
    _assert_same_features(reference, plain)


# --------------------------------------------------------------------------- errors


def test_unknown_name_lists_known_ones() -> None:
    with pytest.raises(InputError, match="taxoclip-vit-t3") as info:
        load_model("taxoclip-vit-t33")
    assert "'taxoclip-vit-t33'" in str(info.value)
    assert "taxoclip-vit-t32" in str(info.value)
    with pytest.raises(InputError, match="unknown model name"):
        create_model("no-such-model")


def test_missing_folder_and_folder_without_config(tmp_path: Path) -> None:
    missing = tmp_path / "absent"
    with pytest.raises(InputError, match="no such file or folder") as info:
        load_model(missing)
    assert str(missing) in str(info.value)
    with pytest.raises(InputError, match="no such file or folder"):
        load_model(f"local-dir:{missing}")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match=f"no {CONFIG_FILE}") as info:
        load_model(empty)
    assert str(empty) in str(info.value)


def test_folder_with_config_but_no_weights(tiny: LoadedModel, tmp_path: Path) -> None:
    folder = save_model(tiny.model, tmp_path / "model", tiny.model_cfg)
    (folder / SAFETENSORS_FILE).unlink()
    torch.save(_state_dict(tiny), folder / "epoch_1.pt")
    # open_clip alone would hand back a randomly initialised model here.
    with pytest.raises(InputError, match="no weights file.*epoch_1.pt.*pretrained"):
        load_model(folder)


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_safetensors(tiny: LoadedModel, tmp_path: Path, damage: str) -> None:
    folder = save_model(tiny.model, tmp_path / "model", tiny.model_cfg)
    weights = folder / SAFETENSORS_FILE
    data = weights.read_bytes()
    weights.write_bytes(
        b"\x00not safetensors" * 8 if damage == "garbage" else data[: len(data) // 2]
    )
    with pytest.raises(InputError, match="cannot read weights file") as info:
        load_model(folder)
    assert str(folder) in str(info.value)
    with pytest.raises(InputError, match="cannot read weights file"):
        load_model(TINY, pretrained=weights)


def test_weights_not_matching_config(tiny: LoadedModel, tmp_path: Path) -> None:
    folder = save_model(tiny.model, tmp_path / "model", tiny.model_cfg)
    config = json.loads((folder / CONFIG_FILE).read_text())
    config["model_cfg"] = open_clip.get_model_config("taxoclip-vit-s64")
    (folder / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(InputError, match="do not match the model config") as info:
        load_model(folder)
    assert str(folder) in str(info.value)
    assert "another shape" in str(info.value)

    state = _state_dict(tiny)
    state["extra.weight"] = torch.zeros(1)
    del state["logit_scale"]
    odd = tmp_path / "odd.pt"
    torch.save(state, odd)
    with pytest.raises(InputError, match=r"1 missing \(logit_scale\); 1 unexpected \(extra"):
        load_model(TINY, pretrained=odd)


def test_bad_pretrained_values(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        load_model(TINY, pretrained=tmp_path / "absent.pt")
    with pytest.raises(InputError, match="neither a weights file nor a known open_clip tag"):
        load_model(TINY, pretrained="laion2b_nope")
    not_weights = tmp_path / "notes.pt"
    torch.save({"epoch": 3}, not_weights)
    with pytest.raises(InputError, match="no state dict"):
        load_model(TINY, pretrained=not_weights)


def test_hf_hub_not_in_cache_or_without_weights(
    tiny: LoadedModel, offline: Path, tmp_path: Path
) -> None:
    with pytest.raises(InputError, match="hf-hub:taxoclip/absent.*HF_HUB_OFFLINE"):
        load_model("hf-hub:taxoclip/absent")
    folder = save_model(tiny.model, tmp_path / "model", tiny.model_cfg)
    _fill_hub_cache(offline, "taxoclip/config-only", folder, (CONFIG_FILE,))
    with pytest.raises(InputError, match="open_clip_model.safetensors or open_clip_pytorch"):
        load_model("hf-hub:taxoclip/config-only")


def test_bare_config_json_creates_and_loads(tiny: LoadedModel, tmp_path: Path) -> None:
    config = tmp_path / "my-tiny-t32.json"
    config.write_text(json.dumps(open_clip.get_model_config(TINY)))
    fresh = create_model(config, seed=0)
    for key, value in tiny.model.state_dict().items():
        assert torch.equal(value, fresh.model.state_dict()[key]), key
    weights = tmp_path / "w.safetensors"
    folder = save_model(tiny.model, tmp_path / "model", tiny.model_cfg)
    weights.write_bytes((folder / SAFETENSORS_FILE).read_bytes())
    _assert_same_features(tiny, load_model(config, pretrained=weights).model)

    clash = tmp_path / "other" / "my-tiny-t32.json"
    clash.parent.mkdir()
    clash.write_text(json.dumps(open_clip.get_model_config("taxoclip-vit-s64")))
    with pytest.raises(InputError, match="already registered"):
        create_model(clash)


def test_synthtol_captions_fit_every_tiny_context_without_truncation():
    """Every caption of a large SynthToL tree, in every text type, fits the context."""
    import numpy as np
    from open_clip.tokenizer import _tokenizer

    from taxoclip.models import create_model
    from taxoclip.synth.tree import build_tree
    from taxoclip.taxonomy import TextType, render_text

    species = build_tree(2000, np.random.default_rng(1))
    longest = max(
        len(_tokenizer.encode(render_text(s.lineage, s.common_name, t))) + 2  # start, end
        for s in species
        for t in TextType
    )
    for name in ("taxoclip-vit-t32", "taxoclip-vit-s64", "taxoclip-vit-t224"):
        context = create_model(name, seed=0).context_length
        assert longest <= context, (name, longest, context)
