"""System 2 at run time: one image and one instruction in, one goal embedding out."""
from __future__ import annotations

import os
import time
from dataclasses import replace

import numpy as np

from openhelix_core.checkpoint_keys import KeyMapping
from openhelix_core.checkpoints import ReleaseArchitecture, load_release_system2, release_model_id
from openhelix_core.models.system2 import load_system2, plan_goal
from openhelix_core.runtime.devices import check_device

#: What :meth:`GoalPlanner.warm_up` asks about.
WARM_UP_INSTRUCTION = "open the drawer"


def goal_model_id(checkpoint: str | None, preset: str, seed: int) -> str:
    """The ``model_id`` goals carry: preset and checkpoint path exactly as configured (a
    controller's ``expected_goal_model_id`` must repeat it), or the seed of random weights."""
    return f"system2/{preset}/" + (checkpoint if checkpoint else f"random-seed{seed}")


class GoalPlanner:
    """A loaded System 2 model with its processor.

    Attributes:
        model: the :class:`~openhelix_core.models.system2.System2Planner`.
        processor: its :class:`~openhelix_core.models.system2.System2Processor`.
        model_id: names the preset / checkpoint / release, carried in every goal message.
        goal_dim: length of the goal embedding (512 for OpenHelix).
        reports: how the checkpoint's keys mapped onto the model, by part (``"llava"``,
            ``"system2_heads"`` for a release; empty when nothing was mapped).
    """

    def __init__(self, model, processor, model_id: str, reports: dict[str, KeyMapping] | None = None) -> None:
        self.model = model
        self.processor = processor
        self.model_id = model_id
        self.goal_dim = model.config.goal_dim
        self.reports = dict(reports or {})

    @classmethod
    def load(cls, checkpoint: str | None = None, preset: str = "tiny", llava_path: str | None = None,
             device: str = "cpu", seed: int = 0) -> "GoalPlanner":
        """Loads a trained checkpoint, or builds the preset with seeded random weights."""
        check_device(device)
        model, processor = load_system2(checkpoint, preset=preset, llava_path=llava_path, device=device, seed=seed)
        return cls(model, processor, goal_model_id(checkpoint, preset, seed))

    @classmethod
    def from_release(cls, directory: str | os.PathLike, variant: str,
                     architecture: str | ReleaseArchitecture = "openhelix", device: str = "cpu") -> "GoalPlanner":
        """System 2 of a published OpenHelix release (see
        :func:`~openhelix_core.checkpoints.load_release_system2`, which raises what fails);
        its goals carry :func:`~openhelix_core.checkpoints.release_model_id`."""
        check_device(device)
        system2 = load_release_system2(directory, variant, architecture=architecture, device=device)
        return cls(system2.model, system2.processor, release_model_id(directory, variant), system2.reports)

    def ask(self, question: str | int) -> None:
        """Which of System 2's questions calls use from now on: ``"random"`` (a seeded draw per
        call, as OpenHelix's evaluation) or the index of one (the same prompt every call).
        Raises ValueError for anything else."""
        config = replace(self.processor.config, inference_question=question)
        self.processor.config = config
        self.model.config = config

    def plan(self, image: np.ndarray, instruction: str) -> np.ndarray:
        """``image`` (H, W, 3) uint8 RGB -> goal ``(goal_dim,)`` float32."""
        return plan_goal(self.model, self.processor, image, instruction)

    def warm_up(self) -> float:
        """One call on a black image, so that the first real call is not the slow first one
        (allocator, kernel selection); like any call it draws the prompt's question when the
        processor draws them at random. Returns the seconds it took."""
        side = self.model.config.image_size
        started = time.perf_counter()
        self.plan(np.zeros((side, side, 3), np.uint8), WARM_UP_INSTRUCTION)
        return time.perf_counter() - started
