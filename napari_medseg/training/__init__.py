"""Losses, pseudo labels, augmentation and the tri-network trainer."""

from .interactive import InputError, InteractiveTask, prepare_interactive
from .trainer import DEFAULT_TRIO, Prediction, TrainConfig, TrainerUpdate, TriNetTrainer

__all__ = [
    "DEFAULT_TRIO",
    "InputError",
    "InteractiveTask",
    "Prediction",
    "TrainConfig",
    "TrainerUpdate",
    "TriNetTrainer",
    "prepare_interactive",
]
