"""System 2 at run time: one image and one instruction in, one goal embedding out."""
from __future__ import annotations

import numpy as np

from openhelix_core.models.system2 import load_system2, plan_goal


def goal_model_id(checkpoint: str | None, preset: str, seed: int) -> str:
    """The ``model_id`` goals carry: preset and checkpoint path exactly as configured (a
    controller's ``expected_goal_model_id`` must repeat it), or the seed of random weights."""
    return f"system2/{preset}/" + (checkpoint if checkpoint else f"random-seed{seed}")


class GoalPlanner:
    """A loaded System 2 model with its processor.

    Attributes:
        model_id: names the preset / checkpoint, carried in every goal message.
        goal_dim: length of the goal embedding (512 for OpenHelix).
    """

    def __init__(self, planner, processor, model_id: str) -> None:
        self.planner = planner
        self.processor = processor
        self.model_id = model_id
        self.goal_dim = planner.config.goal_dim

    @classmethod
    def load(cls, checkpoint: str | None = None, preset: str = "tiny", llava_path: str | None = None,
             device: str = "cpu", seed: int = 0) -> "GoalPlanner":
        """Loads a trained checkpoint, or builds the preset with seeded random weights."""
        planner, processor = load_system2(checkpoint, preset=preset, llava_path=llava_path, device=device, seed=seed)
        return cls(planner, processor, goal_model_id(checkpoint, preset, seed))

    def plan(self, image: np.ndarray, instruction: str) -> np.ndarray:
        """``image`` (H, W, 3) uint8 RGB -> goal ``(goal_dim,)`` float32."""
        return plan_goal(self.planner, self.processor, image, instruction)
