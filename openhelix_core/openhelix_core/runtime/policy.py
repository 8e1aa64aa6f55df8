"""The OpenHelix dual-system policy: System 2 sets the goal, System 1 acts on the latest one.

Two ways to run it:

* one process: give it a :class:`GoalPlanner`; System 2 runs again every
  ``goal_refresh_period`` System 1 calls (1 = synchronous, OpenHelix's asynchronous
  evaluation uses 10-60);
* two nodes: give it no planner and feed it the planner node's goals with :meth:`set_goal`.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from openhelix_core.runtime.controller import TrajectoryController
from openhelix_core.runtime.planner import GoalPlanner
from openhelix_core.types import Goal, Observation, TrajectoryChunk


class NoGoalError(RuntimeError):
    """System 1 was asked to act before any goal was set."""


class DualSystemPolicy:
    def __init__(self, controller: TrajectoryController, planner: GoalPlanner | None = None,
                 goal_refresh_period: int = 1, goal_camera: str = "static") -> None:
        if goal_refresh_period < 1:
            raise ValueError(f"goal_refresh_period must be at least 1, got {goal_refresh_period}")
        self.controller = controller
        self.planner = planner
        self.goal_refresh_period = goal_refresh_period
        self.goal_camera = goal_camera
        self.goal: Goal | None = None
        self.instruction: str | None = None
        self.steps_since_goal = 0
        self._goal_sequence = 0

    def reset(self, instruction: str | None = None, seed: int | None = None) -> None:
        """Starts an episode: forgets the goal and System 1's history, sets the instruction and,
        with ``seed``, re-seeds System 1's diffusion noise (policies compared on the same episodes
        then draw the same noise)."""
        self.controller.reset()
        if seed is not None:
            self.controller.generator.manual_seed(int(seed))
        self.goal = None
        self.instruction = instruction
        self.steps_since_goal = 0

    def update_goal(self, image: np.ndarray, instruction: str, stamp: float = 0.0) -> Goal:
        """Runs System 2 on ``image`` (H, W, 3) uint8 and ``instruction``; returns the new goal."""
        if self.planner is None:
            raise RuntimeError("this policy has no System 2 planner; feed it goals with set_goal()")
        embedding = self.planner.plan(image, instruction)
        self._goal_sequence += 1
        self.instruction = instruction
        self.set_goal(Goal(embedding=embedding, sequence=self._goal_sequence, instruction=instruction,
                           stamp=stamp, model_id=self.planner.model_id))
        return self.goal

    def set_goal(self, goal: Goal) -> None:
        """Uses ``goal`` for the following System 1 calls (e.g. one received from the planner node)."""
        embedding = np.asarray(goal.embedding)
        if embedding.shape != (self.controller.goal_dim,):
            raise ValueError(f"goal embedding has shape {embedding.shape}, System 1 expects "
                             f"({self.controller.goal_dim},)")
        if not np.all(np.isfinite(embedding)):
            raise ValueError("goal embedding contains NaN or inf")
        self.goal = goal
        self.steps_since_goal = 0

    def act(self, observation: Observation) -> TrajectoryChunk:
        """One System 1 call; in one-process mode System 2 first runs when the goal is due."""
        return act_together([self], [observation])[0]

    def _current_goal(self, observation: Observation) -> Goal:
        """The goal for this call, after running System 2 when it is due."""
        if self.planner is not None and (self.goal is None or self.steps_since_goal >= self.goal_refresh_period):
            if self.instruction is None:
                raise NoGoalError("no instruction: call reset(instruction) or update_goal() first")
            if self.goal_camera not in observation.cameras:
                raise ValueError(f"System 2 looks at camera '{self.goal_camera}', which the observation lacks")
            self.update_goal(observation.cameras[self.goal_camera].rgb, self.instruction, observation.stamp)
        if self.goal is None:
            raise NoGoalError("no goal yet: System 1 does not act without one")
        return self.goal


def act_together(policies: Sequence[DualSystemPolicy], observations: Sequence[Observation]) -> list[TrajectoryChunk]:
    """:meth:`DualSystemPolicy.act` for several policies whose controllers share one System 1 model,
    with a single batched System 1 call (System 2 still runs per policy when its goal is due).
    Chunk ``i`` equals ``policies[i].act(observations[i])`` to float rounding: every policy keeps
    its own goal, history and noise stream."""
    goals = [policy._current_goal(observation) for policy, observation in zip(policies, observations)]
    chunks = TrajectoryController.act_together([p.controller for p in policies], observations, goals)
    for policy in policies:
        policy.steps_since_goal += 1
    return chunks
