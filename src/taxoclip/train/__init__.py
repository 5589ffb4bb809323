"""Training: the BioCLIP 2 recipe on open_clip models, one process or torchrun DDP."""

from .config import TrainConfig, bioclip2_recipe
from .loss import clip_loss
from .trainer import TrainingError, TrainResult, train

__all__ = ["TrainConfig", "TrainResult", "TrainingError", "bioclip2_recipe", "clip_loss", "train"]
