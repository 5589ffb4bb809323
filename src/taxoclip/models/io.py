"""Model I/O on top of open_clip: our tiny configs, one loader for every model spec, saving.

Why a layer over open_clip at all: open_clip accepts the spec forms we need but reports
problems as bare ``KeyError``/``RuntimeError`` from deep inside, *silently* initialises a
``local-dir:`` folder that has no weights (or an ``hf-hub:`` repo whose weights are not
in the cache) at random, does not read ``*.pt`` files from a folder, and its
``save_for_hf`` fails with the default tokenizer. Here every spec form (docs/reference.md)
resolves to one :class:`LoadedModel`, every failure is an :class:`InputError` that names
the spec and the reason, and :func:`save_model` writes the Hugging Face layout that
``open_clip.create_model_and_transforms("local-dir:PATH")`` and pybioclip read back.

Our configs (``configs/*.json``, registered with open_clip when this module is imported):

- ``taxoclip-vit-t32``: the CPU preset, 32 px. Its speed comes from choices measured on the
  2-core machine of docs/benchmarks.md: patch 8 (a 4×4 grid; patch 4 was ~2.5× slower), a
  128-wide 2-layer text tower with MLP ratio 2 (the text tower runs all 64 positions for
  every caption and dominates the step), and open_clip's ``custom`` attention block, which
  calls ``scaled_dot_product_attention`` directly and was ~20 % faster than
  ``nn.MultiheadAttention`` here. The block type changes no parameter name: the weights
  load into the default block too.
- ``taxoclip-vit-s64``: 64 px, wider and deeper, for quality runs (~7× slower per image).
- ``taxoclip-vit-t224``: 224 px / patch 32 / 2 layers with stock blocks and the stock
  77-token context, for parity with tools that squash to 224 (pybioclip).

Context length 64 holds ``taxonTag_com`` captions of SynthToL names (longest measured: 60
tokens with start/end); open_clip's tokenizer *truncates silently* beyond it.
"""

from __future__ import annotations

import contextlib
import copy
import difflib
import json
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import open_clip
import torch
from open_clip.transform import PreprocessCfg

from taxoclip.errors import InputError, UsageError
from taxoclip.files import fsync_path, replacing, replacing_dir

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
MODEL_PREFIX = "taxoclip-"
CONFIG_FILE = "open_clip_config.json"
SAFETENSORS_FILE = "open_clip_model.safetensors"
HF_HUB_PREFIX = "hf-hub:"
LOCAL_DIR_PREFIX = "local-dir:"

# The order open_clip 3.3's local-dir loader prefers (factory._find_checkpoint_in_dir), so
# that we diagnose the same file it reads.
_FOLDER_WEIGHT_NAMES = (
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.safetensors",
    "open_clip_pytorch_model.bin",
    "open_clip_pytorch_model.pth",
    "model.safetensors",
    "pytorch_model.bin",
    "pytorch_model.pth",
    "model.pth",
)
_FOLDER_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth")  # what local-dir globs for
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
_HUB_WEIGHT_NAMES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
# DDP wraps the model in `.module`, torch.compile in `._orig_mod`; neither is in a bare model.
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")
_PREPROCESS_KEYS = frozenset(PreprocessCfg.__dataclass_fields__)

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- registry


def _config_files() -> list[Path]:
    return sorted(CONFIG_DIR.glob(f"{MODEL_PREFIX}*.json"))


def register_configs() -> None:
    """Make our configs known to open_clip by name; safe to call any number of times.

    ``open_clip.add_model_config`` appends to a search path and rescans every time, so it
    is only called when one of our names is missing.
    """
    known = set(open_clip.list_models())
    if all(path.stem in known for path in _config_files()):
        return
    open_clip.add_model_config(CONFIG_DIR)


def list_models() -> list[str]:
    """Our registered model names (``taxoclip-…``), sorted."""
    register_configs()
    return [path.stem for path in _config_files()]


# --------------------------------------------------------------------------- result


@dataclass
class LoadedModel:
    """A model with everything needed to feed it: transforms, tokenizer and its configs.

    ``spec`` is what the caller asked for (kept for reports and prediction files);
    ``weights`` says where the weights came from (a file, a tag, ``hf-hub:…``), or None for
    a random initialisation — callers that predict should refuse or warn on None.
    """

    model: torch.nn.Module
    preprocess_train: Callable[..., Any]
    preprocess_val: Callable[..., Any]
    tokenizer: Callable[..., torch.Tensor]
    spec: str
    model_cfg: dict[str, Any]
    preprocess_cfg: dict[str, Any]
    weights: str | None = None

    @property
    def context_length(self) -> int:
        """Tokens per caption the text tower takes (longer captions are truncated)."""
        return int(self.model_cfg.get("text_cfg", {}).get("context_length", 77))

    @property
    def embed_dim(self) -> int:
        """Width of the shared image/text embedding."""
        return int(self.model_cfg["embed_dim"])

    @property
    def image_size(self) -> int | tuple[int, int]:
        """Input side in pixels (an int for square inputs, else ``(height, width)``)."""
        size = self.preprocess_cfg.get("size")
        if size is None:
            size = getattr(getattr(self.model, "visual", None), "image_size", 224)
        if isinstance(size, (tuple, list)):
            height, width = (int(v) for v in size)
            return height if height == width else (height, width)
        return int(size)


# --------------------------------------------------------------------------- public API


def load_model(
    spec: str | os.PathLike[str],
    pretrained: str | os.PathLike[str] | None = None,
    device: str = "cpu",
) -> LoadedModel:
    """Load a model from any spec the CLI's ``--model`` accepts (docs/reference.md#model-specs).

    Accepted, tried in this order:

    - ``hf-hub:org/name`` — handed to open_clip (offline from a filled Hugging Face cache);
    - a run dir (holds ``model/open_clip_config.json``) or a model folder (holds
      ``open_clip_config.json`` and weights), read through open_clip's ``local-dir:``;
      ``local-dir:PATH`` is accepted too;
    - a weights file (.safetensors/.bin/.pt/.pth) whose folder, parent or parent's
      ``model/`` holds ``open_clip_config.json`` (e.g. ``RUN/checkpoints/epoch_3.pt``);
    - a bare config JSON (open_clip's ``embed_dim``/``vision_cfg``/``text_cfg`` format);
    - an open_clip model name (ours or stock), with ``pretrained`` an open_clip tag or a
      weights file; without ``pretrained`` the weights are random (``weights`` is None).

    ``pretrained`` as a file also works with a folder, run dir or ``hf-hub:`` spec: the
    spec gives the architecture, the file the weights (training checkpoints with a
    ``state_dict`` key and DDP ``module.`` prefixes included).

    Raises:
        InputError: the spec or weights cannot be used; the message names both and why.
    """
    register_configs()
    spec_str = os.fspath(spec).strip()
    if not spec_str:
        raise InputError("model spec is empty")
    weights_arg = os.fspath(pretrained).strip() if pretrained is not None else None
    weights_arg = weights_arg or None

    if spec_str.startswith(HF_HUB_PREFIX):
        return _load_hf_hub(spec_str, weights_arg, device)

    explicit_dir = spec_str.startswith(LOCAL_DIR_PREFIX)
    path = Path(spec_str[len(LOCAL_DIR_PREFIX) :] if explicit_dir else spec_str).expanduser()
    if path.is_dir():
        folder = _config_folder(path)
        if folder is not None:
            return _load_folder(folder, spec_str, weights_arg, device)
        if explicit_dir or not is_model_name(spec_str):
            raise InputError(
                f"model {spec_str!r}: folder has no {CONFIG_FILE} (nor model/{CONFIG_FILE}); "
                "expected a model folder or a run dir"
            )
    elif path.is_file():
        if path.suffix == ".json":
            return _load_json(path, spec_str, weights_arg, device)
        if weights_arg is not None:
            raise UsageError(f"model {spec_str!r} is a weights file; do not also pass pretrained")
        return _load_weights_file(path, spec_str, device)
    elif explicit_dir or (_looks_like_path(spec_str) and not is_model_name(spec_str)):
        raise InputError(f"model {spec_str!r}: no such file or folder")

    return _load_named(spec_str, weights_arg, device)


def create_model(
    name: str | os.PathLike[str], seed: int | None = None, device: str = "cpu"
) -> LoadedModel:
    """A freshly initialised model (for training from scratch), reproducible with ``seed``.

    ``name`` is an open_clip model name or a bare config JSON file. The seed is applied
    inside a forked RNG so creating a model does not disturb the caller's random stream.
    """
    register_configs()
    spec = os.fspath(name).strip()
    path = Path(spec).expanduser()
    if path.suffix == ".json" and path.is_file():
        spec = _register_json(path, spec)
    elif _looks_like_path(spec) and not is_model_name(spec):
        raise InputError(f"model {spec!r}: no such config file")
    canonical = _canonical_name(spec)
    rng = torch.random.fork_rng(devices=[]) if seed is not None else contextlib.nullcontext()
    with rng:
        if seed is not None:
            torch.manual_seed(seed)
        with _quiet_open_clip():
            model, pp_train, pp_val = _open_clip_call(
                spec, lambda: open_clip.create_model_and_transforms(canonical, device=device)
            )
    return _result(model, pp_train, pp_val, canonical, spec, _named_cfg(canonical), None)


def save_model(
    model: torch.nn.Module,
    out_dir: str | os.PathLike[str],
    model_cfg: dict[str, Any],
    preprocess_cfg: dict[str, Any] | None = None,
) -> Path:
    """Write ``model`` as an open_clip / Hugging Face model folder; returns the folder.

    The folder holds ``open_clip_config.json`` (``{"model_cfg": …, "preprocess_cfg": …}``)
    and ``open_clip_model.safetensors``: what ``local-dir:``, ``hf-hub:`` (once uploaded)
    and pybioclip read. ``preprocess_cfg`` defaults to the model's own (open_clip attaches
    it at creation) or, failing that, to what ``model_cfg`` implies; only open_clip's
    preprocess keys are accepted, because its loader silently drops any other (``image_size``
    there is ignored: the key is ``size``).

    Written atomically: a new folder appears complete or not at all; in an existing folder
    each file is replaced by rename, weights before config.
    """
    bare = _unwrap(model)
    if not isinstance(model_cfg, dict) or not {"embed_dim", "vision_cfg", "text_cfg"} <= set(
        model_cfg
    ):
        raise UsageError(
            "model_cfg must be an open_clip config with embed_dim, vision_cfg, text_cfg"
        )
    config = {
        "model_cfg": copy.deepcopy(model_cfg),
        "preprocess_cfg": _preprocess_cfg_for(bare, model_cfg, preprocess_cfg),
    }
    try:
        config_text = json.dumps(config, indent=2) + "\n"
    except TypeError as exc:
        raise UsageError(f"model config is not JSON-serialisable: {exc}") from None
    if model_cfg["text_cfg"].get("hf_tokenizer_name"):
        # local-dir: then builds the tokenizer from the folder itself, and we write no
        # tokenizer files: loading would fail until they are added.
        log.warning("model config names a Hugging Face tokenizer; its files are not saved")
    tensors = _tensors_for_safetensors(bare.state_dict())

    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise UsageError(f"cannot save model to {out}: it exists and is not a folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    if not out.exists():
        try:
            with replacing_dir(out) as tmp:
                _write_safetensors(tmp / SAFETENSORS_FILE, tensors)
                _write_text(tmp / CONFIG_FILE, config_text)
            return out
        except OSError:
            if not out.is_dir():  # not a lost race with another writer: a real failure
                raise
    _replace_file(out / SAFETENSORS_FILE, lambda p: _write_safetensors(p, tensors))
    _replace_file(out / CONFIG_FILE, lambda p: _write_text(p, config_text))
    return out


# --------------------------------------------------------------------------- spec forms


def _load_named(spec: str, pretrained: str | None, device: str) -> LoadedModel:
    canonical = _canonical_name(spec)
    model_cfg = _named_cfg(canonical)
    if pretrained is None:
        with _quiet_open_clip():
            model, pp_train, pp_val = _open_clip_call(
                spec, lambda: open_clip.create_model_and_transforms(canonical, device=device)
            )
        log.warning("model %s: no pretrained weights given; weights are random", spec)
        return _result(model, pp_train, pp_val, canonical, spec, model_cfg, None)

    if os.path.exists(pretrained) or _looks_like_path(pretrained):
        weights_path = _existing_weights_file(pretrained, spec)
        with _quiet_open_clip():
            model, pp_train, pp_val = _open_clip_call(
                spec,
                lambda: open_clip.create_model_and_transforms(
                    canonical, load_weights=False, device=device
                ),
            )
        _load_weights(model, weights_path, spec)
        return _result(model, pp_train, pp_val, canonical, spec, model_cfg, str(weights_path))

    tags = open_clip.list_pretrained_tags_by_model(canonical)
    if pretrained.lower() not in {t.lower() for t in tags}:
        known = ", ".join(tags) if tags else "none"
        raise InputError(
            f"model {spec!r}: pretrained {pretrained!r} is neither a weights file nor a known "
            f"open_clip tag for it (tags: {known})"
        )

    def create() -> tuple[torch.nn.Module, Any, Any]:
        return open_clip.create_model_and_transforms(
            canonical, pretrained=pretrained, device=device
        )

    model, pp_train, pp_val = _open_clip_call(
        spec, create, hint=f"pretrained {pretrained!r}; {_hub_hint()}"
    )
    return _result(model, pp_train, pp_val, canonical, spec, model_cfg, pretrained)


def _load_folder(folder: Path, spec: str, pretrained: str | None, device: str) -> LoadedModel:
    model_cfg, _ = _read_config(folder / CONFIG_FILE, spec)
    oc_spec = LOCAL_DIR_PREFIX + str(folder)
    if pretrained is not None:
        weights_path = _existing_weights_file(pretrained, spec)
        model, pp_train, pp_val = _random_from(oc_spec, spec, device)
        _load_weights(model, weights_path, spec)
        return _result(model, pp_train, pp_val, oc_spec, spec, model_cfg, str(weights_path))

    weights_path = _folder_weights(folder, spec)
    try:
        model, pp_train, pp_val = open_clip.create_model_and_transforms(oc_spec, device=device)
    except Exception as exc:
        raise _diagnose(exc, oc_spec, spec, weights_path, device) from exc
    return _result(model, pp_train, pp_val, oc_spec, spec, model_cfg, str(weights_path))


def _load_weights_file(path: Path, spec: str, device: str) -> LoadedModel:
    if path.suffix not in _WEIGHT_SUFFIXES:
        raise InputError(
            f"model {spec!r}: not a weights file (expected one of {', '.join(_WEIGHT_SUFFIXES)})"
        )
    candidates = [path.parent, path.parent.parent, path.parent.parent / "model"]
    folder = next((c for c in candidates if (c / CONFIG_FILE).is_file()), None)
    if folder is None:
        looked = ", ".join(str(c) for c in candidates)
        raise InputError(
            f"model {spec!r}: no {CONFIG_FILE} found beside the weights (looked in {looked}); "
            "pass the model name as the model and this file as pretrained"
        )
    model_cfg, _ = _read_config(folder / CONFIG_FILE, spec)
    oc_spec = LOCAL_DIR_PREFIX + str(folder)
    model, pp_train, pp_val = _random_from(oc_spec, spec, device)
    _load_weights(model, path, spec)
    return _result(model, pp_train, pp_val, oc_spec, spec, model_cfg, str(path))


def _load_json(path: Path, spec: str, pretrained: str | None, device: str) -> LoadedModel:
    raw = _read_json(path, spec)
    if "model_cfg" in raw:  # an open_clip_config.json: its folder is the model
        return _load_folder(path.parent, spec, pretrained, device)
    name = _register_json(path, spec)
    return _load_named(name, pretrained, device)


def _load_hf_hub(spec: str, pretrained: str | None, device: str) -> LoadedModel:
    repo = spec[len(HF_HUB_PREFIX) :]
    if not repo:
        raise InputError(f"model {spec!r}: no repository after 'hf-hub:'")
    # Resolve the files ourselves first: open_clip would go on with random weights when the
    # weights are missing (it only logs a warning), and reports a missing config vaguely.
    config_path = _hub_file(repo, (CONFIG_FILE,), spec)
    model_cfg, _ = _read_config(config_path, spec)
    if pretrained is not None:
        weights_path = _existing_weights_file(pretrained, spec)
        model, pp_train, pp_val = _random_from(spec, spec, device)
        _load_weights(model, weights_path, spec)
        return _result(model, pp_train, pp_val, spec, spec, model_cfg, str(weights_path))
    weights_path = _hub_file(repo, _HUB_WEIGHT_NAMES, spec)
    try:
        model, pp_train, pp_val = open_clip.create_model_and_transforms(spec, device=device)
    except Exception as exc:
        raise _diagnose(exc, spec, spec, weights_path, device) from exc
    return _result(model, pp_train, pp_val, spec, spec, model_cfg, spec)


# --------------------------------------------------------------------------- helpers: specs


def is_model_name(spec: str) -> bool:
    """Whether ``spec`` names an architecture open_clip knows (ours are registered)."""
    return _canonical(spec) in set(open_clip.list_models())


def _canonical(spec: str) -> str:
    return spec.replace("/", "-")  # open_clip accepts "ViT-B/32" for "ViT-B-32"


def _canonical_name(spec: str) -> str:
    canonical = _canonical(spec)
    known = open_clip.list_models()
    if canonical in known:
        return canonical
    close = difflib.get_close_matches(canonical, known, n=4, cutoff=0.6)
    examples = list(dict.fromkeys([*close, *list_models(), "ViT-B-16", "ViT-L-14"]))
    raise InputError(
        f"model {spec!r}: unknown model name and not an existing file or folder "
        f"(known names include {', '.join(examples[:8])}; {len(known)} in all)"
    )


def _looks_like_path(spec: str) -> bool:
    return (
        os.sep in spec
        or (os.altsep is not None and os.altsep in spec)
        or spec.startswith((".", "~"))
        or spec.endswith((*_WEIGHT_SUFFIXES, ".json"))
    )


def _config_folder(path: Path) -> Path | None:
    for candidate in (path, path / "model"):
        if (candidate / CONFIG_FILE).is_file():
            return candidate
    return None


def _named_cfg(canonical: str) -> dict[str, Any]:
    return copy.deepcopy(open_clip.get_model_config(canonical))


def _register_json(path: Path, spec: str) -> str:
    """Register a bare config file under its stem, refusing to shadow a different config."""
    raw = _read_json(path, spec)
    if not {"embed_dim", "vision_cfg", "text_cfg"} <= set(raw):
        raise InputError(
            f"model {spec!r}: not an open_clip model config (needs embed_dim, vision_cfg, "
            f"text_cfg, or model_cfg for an {CONFIG_FILE})"
        )
    existing = open_clip.get_model_config(path.stem)
    if existing is not None and existing != raw:
        raise InputError(
            f"model {spec!r}: another config named {path.stem!r} is already registered; "
            "rename the file"
        )
    if existing is None:
        open_clip.add_model_config(path)
    return path.stem


def _read_json(path: Path, spec: str) -> dict[str, Any]:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"model {spec!r}: cannot read {path}: {exc}") from None
    if not isinstance(raw, dict):
        raise InputError(f"model {spec!r}: {path} does not hold a JSON object")
    return raw


def _read_config(path: Path | str, spec: str) -> tuple[dict[str, Any], dict[str, Any]]:
    raw = _read_json(Path(path), spec)
    model_cfg = raw.get("model_cfg")
    if not isinstance(model_cfg, dict) or not {"vision_cfg", "text_cfg"} <= set(model_cfg):
        raise InputError(
            f"model {spec!r}: {path} has no usable model_cfg (needs vision_cfg and text_cfg)"
        )
    preprocess = raw.get("preprocess_cfg") or {}
    return copy.deepcopy(model_cfg), dict(preprocess) if isinstance(preprocess, dict) else {}


def _folder_weights(folder: Path, spec: str) -> Path:
    for name in _FOLDER_WEIGHT_NAMES:
        if (folder / name).is_file():
            return folder / name
    readable = sorted(
        (p for p in folder.iterdir() if p.suffix in _FOLDER_WEIGHT_SUFFIXES and p.is_file()),
        key=lambda p: (p.suffix != ".safetensors", p.name),
    )
    if readable:
        return readable[0]
    other = sorted(p.name for p in folder.glob("*.pt"))
    why = (
        f"; {', '.join(other)} is not read by open_clip's local-dir: pass it as pretrained"
        if other
        else ""
    )
    raise InputError(
        f"model {spec!r}: {folder} has {CONFIG_FILE} but no weights file "
        f"({SAFETENSORS_FILE} or open_clip_pytorch_model.bin){why}"
    )


def _existing_weights_file(pretrained: str, spec: str) -> Path:
    path = Path(pretrained).expanduser()
    if not path.is_file():
        raise InputError(f"model {spec!r}: weights file {pretrained!r} not found")
    return path


def _hub_hint() -> str:
    from huggingface_hub import constants

    mode = "HF_HUB_OFFLINE is set" if constants.is_offline_mode() else "online"
    return f"{mode}; Hugging Face cache: {constants.HF_HUB_CACHE}"


def _hub_file(repo: str, names: tuple[str, ...], spec: str) -> Path:
    from huggingface_hub import hf_hub_download

    reasons = []
    for name in names:
        try:
            return Path(hf_hub_download(repo_id=repo, filename=name))
        except Exception as exc:  # offline-cache misses, 404s, network: all mean "not here"
            reasons.append(f"{name}: {type(exc).__name__}: {_first_line(exc)}")
    raise InputError(
        f"model {spec!r}: cannot get {' or '.join(names)} from the Hugging Face Hub "
        f"({_hub_hint()}): {'; '.join(reasons)}"
    )


# --------------------------------------------------------------------------- helpers: weights


def _read_state_dict(path: Path, spec: str) -> dict[str, torch.Tensor]:
    """Tensors of a weights file or training checkpoint, without wrapper prefixes."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj: Any = load_file(str(path), device="cpu")
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        hint = ""
        if "weights_only" in str(exc) or "Unpickl" in type(exc).__name__:
            hint = " (it holds objects other than tensors and plain values: save tensors only)"
        raise InputError(
            f"model {spec!r}: cannot read weights file {path}: "
            f"{type(exc).__name__}: {_first_line(exc)}{hint}"
        ) from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]  # a training checkpoint (epoch, optimizer, … beside it)
    if (
        not isinstance(obj, dict)
        or not obj
        or not all(isinstance(v, torch.Tensor) for v in obj.values())
    ):
        raise InputError(f"model {spec!r}: {path} holds no state dict of tensors")
    state: dict[str, torch.Tensor] = {}
    for key, value in obj.items():
        for prefix in _WRAPPER_PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix) :]
        state[key] = value
    return state


def _load_weights(model: torch.nn.Module, path: Path, spec: str) -> None:
    """Strictly load ``path`` into ``model``, explaining any mismatch in one message."""
    state = _read_state_dict(path, spec)
    expected = model.state_dict()
    for key in ("logit_scale", "logit_bias"):  # open_clip stores these as () or (1,)
        if key in state and key in expected and state[key].numel() == expected[key].numel():
            state[key] = state[key].reshape(expected[key].shape)
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    reshaped = [
        f"{k} {tuple(state[k].shape)} vs {tuple(expected[k].shape)}"
        for k in expected
        if k in state and state[k].shape != expected[k].shape
    ]
    if missing or unexpected or reshaped:
        parts = [
            f"{len(items)} {label} ({', '.join(items[:3])}{', …' if len(items) > 3 else ''})"
            for label, items in (
                ("missing", missing),
                ("unexpected", unexpected),
                ("with another shape (file vs model)", reshaped),
            )
            if items
        ]
        raise InputError(
            f"model {spec!r}: weights {path} do not match the model config: {'; '.join(parts)}"
        )
    model.load_state_dict(state, strict=True)


def _diagnose(
    exc: Exception, oc_spec: str, spec: str, weights_path: Path, device: str
) -> InputError:
    """Turn an open_clip failure into the reason a person can act on."""
    try:
        model, _, _ = _random_from(oc_spec, spec, device)
        _load_weights(model, weights_path, spec)
    except InputError as reason:
        return reason
    except Exception:  # noqa: BLE001 - fall through to open_clip's own message
        pass
    return InputError(f"model {spec!r}: open_clip cannot load it: {_first_line(exc)}")


def _random_from(oc_spec: str, spec: str, device: str) -> tuple[torch.nn.Module, Any, Any]:
    with _quiet_open_clip():
        return _open_clip_call(
            spec,
            lambda: open_clip.create_model_and_transforms(
                oc_spec, load_weights=False, device=device
            ),
        )


def _open_clip_call(
    spec: str, call: Callable[[], Any], hint: str | None = None
) -> tuple[torch.nn.Module, Any, Any]:
    try:
        return call()
    except InputError:
        raise
    except Exception as exc:
        extra = f" ({hint})" if hint else ""
        raise InputError(
            f"model {spec!r}: open_clip failed: {type(exc).__name__}: {_first_line(exc)}{extra}"
        ) from exc


def _result(
    model: torch.nn.Module,
    pp_train: Any,
    pp_val: Any,
    oc_spec: str,
    spec: str,
    model_cfg: dict[str, Any],
    weights: str | None,
) -> LoadedModel:
    model.eval()
    try:
        tokenizer = open_clip.get_tokenizer(oc_spec)
    except Exception as exc:
        raise InputError(
            f"model {spec!r}: cannot build its tokenizer: {type(exc).__name__}: {_first_line(exc)}"
        ) from exc
    preprocess = dict(getattr(getattr(model, "visual", model), "preprocess_cfg", {}) or {})
    return LoadedModel(
        model=model,
        preprocess_train=pp_train,
        preprocess_val=pp_val,
        tokenizer=tokenizer,
        spec=spec,
        model_cfg=model_cfg,
        preprocess_cfg=preprocess,
        weights=weights,
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:500]


class _DropExpected(logging.Filter):
    """Drops open_clip's warnings about weights we deliberately do not load."""

    _PREFIXES = (
        "No pretrained weights loaded",
        "Local config loaded, but no CLIP weights",
        "Could not find/download default weights on HF Hub",
    )

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self._PREFIXES)


@contextlib.contextmanager
def _quiet_open_clip() -> Iterator[None]:
    # open_clip logs through the root logger (logging.warning), so the filter goes there.
    root = logging.getLogger()
    flt = _DropExpected()
    root.addFilter(flt)
    try:
        yield
    finally:
        root.removeFilter(flt)


# --------------------------------------------------------------------------- helpers: saving


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    # DDP/FSDP keep the model in `.module`, torch.compile in `._orig_mod`; saving the wrapper
    # would prefix every key and the folder would not load in open_clip.
    while True:
        inner = getattr(model, "module", None)
        if inner is None:
            inner = getattr(model, "_orig_mod", None)
        if not isinstance(inner, torch.nn.Module):
            return model
        model = inner


def _preprocess_cfg_for(
    model: torch.nn.Module, model_cfg: dict[str, Any], override: dict[str, Any] | None
) -> dict[str, Any]:
    cfg = asdict(PreprocessCfg())
    visual = getattr(model, "visual", None)
    cfg["size"] = getattr(visual, "image_size", None) or model_cfg["vision_cfg"].get(
        "image_size", 224
    )
    cfg.update(getattr(visual, "preprocess_cfg", None) or {})
    if override:
        unknown = sorted(set(override) - _PREPROCESS_KEYS)
        if unknown:
            raise UsageError(
                f"preprocess_cfg keys {unknown} are not read by open_clip "
                f"(it reads {sorted(_PREPROCESS_KEYS)})"
            )
        cfg.update(override)
    size = cfg["size"]
    if isinstance(size, (tuple, list)) and len(set(size)) == 1:
        cfg["size"] = int(size[0])  # open_clip writes a square size as one int
    cfg = {k: cfg[k] for k in sorted(cfg) if k in _PREPROCESS_KEYS}
    return {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()}


def _tensors_for_safetensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # safetensors refuses tensors that share memory and needs contiguous ones; a clone per
    # shared storage keeps every key, which open_clip's strict load expects.
    # A view into a larger storage is cloned as well, so each tensor owns exactly its bytes.
    seen: set[int] = set()
    out = {}
    for key, value in state.items():
        tensor = value.detach().to("cpu").contiguous()
        storage = tensor.untyped_storage()
        owns_all = storage.nbytes() == tensor.numel() * tensor.element_size()
        if storage.data_ptr() in seen or not owns_all:
            tensor = tensor.clone()
        seen.add(tensor.untyped_storage().data_ptr())
        out[key] = tensor
    return out


def _write_safetensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    save_file(tensors, str(path), metadata={"format": "pt"})
    fsync_path(path)


def _write_text(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")
    fsync_path(path)


def _replace_file(target: Path, write: Callable[[Path], None]) -> None:
    with replacing(target) as tmp:
        write(tmp)
