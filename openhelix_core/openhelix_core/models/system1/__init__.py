"""System 1 of OpenHelix: 3D Diffuser Actor (trajectory diffusion policy on RGB-D).

Batch keys are defined once in :mod:`.keys` and re-exported here.
"""
from .configuration_system1 import (
    CALVIN_ACTION_POSITION_BOUNDS_ABC_D,
    CALVIN_REL_TRAJ_BOUNDS_ABC_D,
    SYSTEM1_PRESETS,
    Normalization,
    SamplerConfig,
    System1Config,
)
from .keys import CURRENT_GRIPPER, GOAL, PCD, RGB, TRAJECTORY
from .modeling_system1 import (
    DiffuserActor,
    convert_original_state_dict,
    count_parameters,
    load_original_checkpoint,
    map_original_state_dict,
)
from .processor_system1 import System1Processor

__all__ = [
    "CALVIN_ACTION_POSITION_BOUNDS_ABC_D", "CALVIN_REL_TRAJ_BOUNDS_ABC_D", "CURRENT_GRIPPER", "DiffuserActor", "GOAL",
    "Normalization", "PCD", "RGB", "SYSTEM1_PRESETS", "SamplerConfig", "System1Config", "System1Processor", "TRAJECTORY",
    "convert_original_state_dict", "count_parameters", "load_original_checkpoint", "map_original_state_dict",
]
