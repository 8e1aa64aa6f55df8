"""Training of the OpenHelix dual-system policy (pure PyTorch; no ROS).

* :class:`TrainingConfig` -- every setting of a run (JSON in each checkpoint);
* :class:`OpenHelixCalvinDataset` -- CALVIN-format splits -> System 1 batches + System 2 inputs;
* :func:`train` -- stage 1 (``<ACT>`` + projection + aux head) or stage 2 (+ 3D Diffuser Actor),
  one process or several (``torchrun --nproc_per_node N -m openhelix_core.training ...``).
"""
from .configuration_training import TrainingConfig
from .dataset import CameraCalibration, OpenHelixCalvinDataset, collate, discover_keyposes, interpolate_trajectory
from .distributed import DistributedContext, init_distributed
from .trainer import (
    DualSystemTrainingModule,
    Trainer,
    TrainResult,
    latest_checkpoint,
    load_models_from_checkpoint,
    plot_loss_curve,
    train,
)

__all__ = [
    "CameraCalibration", "DistributedContext", "DualSystemTrainingModule", "OpenHelixCalvinDataset", "TrainResult",
    "Trainer", "TrainingConfig", "collate", "discover_keyposes", "init_distributed", "interpolate_trajectory",
    "latest_checkpoint", "load_models_from_checkpoint", "plot_loss_curve", "train",
]
