"""Models: our tiny open_clip configs, loading any model spec, saving model folders.

Importing this package imports torch and open_clip and registers the ``taxoclip-*``
configs with open_clip; the top-level ``taxoclip`` package does not import it, so
commands that need no model stay fast to start.
"""

from .device import resolve_device
from .io import (
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
from .twin import untrained_twin

register_configs()

__all__ = [
    "CONFIG_DIR",
    "CONFIG_FILE",
    "SAFETENSORS_FILE",
    "LoadedModel",
    "create_model",
    "list_models",
    "load_model",
    "register_configs",
    "resolve_device",
    "save_model",
    "untrained_twin",
]
