"""System 1 at run time: an observation and the latest goal in, a trajectory chunk out."""
from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import torch

from openhelix_core.checkpoint_keys import KeyMapping
from openhelix_core.checkpoints import ReleaseArchitecture, load_release_system1, release_model_id
from openhelix_core.data.calvin_format import CALVIN_CONTROL_PERIOD_S
from openhelix_core.models.system1 import PCD, RGB, SYSTEM1_PRESETS, DiffuserActor, SamplerConfig, System1Processor
from openhelix_core.models.system1.processor_system1 import gripper_state
from openhelix_core.pointcloud import DepthFilter
from openhelix_core.runtime.devices import check_device
from openhelix_core.types import CameraFrame, Goal, Observation, TrajectoryChunk


class TrajectoryController:
    """A loaded 3D Diffuser Actor with its processor and proprioception history.

    Attributes:
        model_id: names the preset / checkpoint / release, carried in diagnostics.
        goal_dim: length of the goal embedding the model conditions on.
        load_report: how the checkpoint's keys mapped onto the model (a release's
            ``policy.pth``), or None when nothing was mapped.
    """

    def __init__(self, model: DiffuserActor, model_id: str, waypoint_period_s: float, seed: int = 0,
                 depth_filter: DepthFilter | None = None, load_report: KeyMapping | None = None,
                 sampler: SamplerConfig | None = None) -> None:
        self.model = model.eval()
        if sampler is not None:
            model.set_sampler(sampler)
        self.load_report = load_report
        self.depth_filter = depth_filter or DepthFilter()
        self.processor = System1Processor(model.config)
        self.model_id = model_id
        self.goal_dim = model.config.goal_dim
        self.waypoint_period_s = waypoint_period_s
        self.device = next(model.parameters()).device
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.history: deque[np.ndarray] = deque(maxlen=max(model.config.nhist - 1, 1))

    @classmethod
    def load(cls, checkpoint: str | None = None, preset: str = "tiny", device: str = "cpu", seed: int = 0,
             waypoint_period_s: float = CALVIN_CONTROL_PERIOD_S, depth_filter: DepthFilter | None = None,
             sampler: SamplerConfig | None = None) -> "TrajectoryController":
        """Loads a trained checkpoint, or builds the preset with seeded random weights; ``sampler``
        (default: the model's reference sampler) must suit the model (ValueError otherwise)."""
        check_device(device)
        if checkpoint:
            model = DiffuserActor.from_pretrained(checkpoint, device=device)
            model_id = f"system1/{checkpoint}"
        else:
            if preset not in SYSTEM1_PRESETS:
                raise ValueError(f"unknown System 1 preset '{preset}'; choose one of {sorted(SYSTEM1_PRESETS)}")
            torch.manual_seed(seed)
            model = DiffuserActor(SYSTEM1_PRESETS[preset]()).to(device)
            model_id = f"system1/{preset}/random-seed{seed}"
        return cls(model, model_id, waypoint_period_s, seed, depth_filter, sampler=sampler)

    @classmethod
    def from_release(cls, directory: str | os.PathLike, variant: str,
                     architecture: str | ReleaseArchitecture = "openhelix", device: str = "cpu", seed: int = 0,
                     waypoint_period_s: float = CALVIN_CONTROL_PERIOD_S, depth_filter: DepthFilter | None = None,
                     sampler: SamplerConfig | None = None) -> "TrajectoryController":
        """System 1 of a published OpenHelix release (see
        :func:`~openhelix_core.checkpoints.load_release_system1`, which raises what fails), named
        :func:`~openhelix_core.checkpoints.release_model_id` like the goals of the release's System 2."""
        check_device(device)
        system1 = load_release_system1(directory, variant, architecture=architecture, device=device)
        return cls(system1.model, release_model_id(directory, variant), waypoint_period_s, seed, depth_filter,
                   system1.report, sampler=sampler)

    def reset(self) -> None:
        """Forgets the proprioception history (call at the start of an episode)."""
        self.history.clear()

    def filtered(self, observation: Observation) -> Observation:
        """The observation with each camera's depth cleaned by ``depth_filter``."""
        if not self.depth_filter.active:
            return observation
        cameras = {name: replace(frame, depth=self.depth_filter.apply(frame.depth, frame.intrinsics,
                                                                       frame.camera_to_base))
                   for name, frame in observation.cameras.items()}
        return replace(observation, cameras=cameras)

    def point_cloud(self, observation: Observation) -> tuple[np.ndarray, np.ndarray]:
        """What System 1 sees: ``(N, 3)`` base-frame points and ``(N, 3)`` RGB in [0, 1]."""
        batch = self.processor.observation_to_batch(self.filtered(observation), np.zeros(self.goal_dim, np.float32))
        points = batch[PCD][0].permute(0, 2, 3, 1).reshape(-1, 3).numpy()
        colors = batch[RGB][0].permute(0, 2, 3, 1).reshape(-1, 3).numpy()
        return points, colors

    @torch.inference_mode()
    def act(self, observation: Observation, goal: Goal, committed: TrajectoryChunk | None = None) -> TrajectoryChunk:
        """Denoises one trajectory for ``observation`` conditioned on ``goal``.

        ``committed``: waypoints, timed from the observation like the result, that the arm will
        have executed when the result arrives (real-time chunking); the result starts with
        them and continues from them (see :meth:`DiffuserActor.predict_trajectory`).

        Raises ValueError (from the processor) on invalid observations or goals.
        """
        prefix = None
        if committed is not None:
            prefix = torch.from_numpy(np.concatenate(
                [committed.positions, committed.orientations, committed.gripper_openness[:, None]], axis=1)
            ).float()[None].to(self.device)
        return self.act_together([self], [observation], [goal], committed=prefix)[0]

    @staticmethod
    @torch.inference_mode()
    def act_together(controllers: Sequence["TrajectoryController"], observations: Sequence[Observation],
                     goals: Sequence[Goal], committed: torch.Tensor | None = None) -> list[TrajectoryChunk]:
        """One System 1 call with batch ``N`` for ``N`` controllers that share one model (e.g. one per
        simulated environment): each keeps its own proprioception history and noise stream, so
        chunk ``i`` is what ``controllers[i].act(observations[i], goals[i])`` returns, to float
        rounding.

        Raises ValueError when the controllers do not share a model, or from the processor.
        """
        model = controllers[0].model
        if any(c.model is not model for c in controllers):
            raise ValueError("act_together needs controllers that share one System 1 model")
        observations = [c.filtered(o) for c, o in zip(controllers, observations)]
        items = [c.processor.observation_to_batch(o, g.embedding, history=list(c.history))
                 for c, o, g in zip(controllers, observations, goals)]
        device = controllers[0].device
        batch = {key: torch.cat([item[key] for item in items]).to(device) for key in items[0]}
        trajectories = model.predict_trajectory(batch, generator=[c.generator for c in controllers],
                                                committed=committed).cpu().numpy()
        chunks = []
        for controller, observation, goal, trajectory in zip(controllers, observations, goals, trajectories):
            controller.history.append(gripper_state(observation.ee_position, observation.ee_orientation,
                                                    observation.gripper_openness))
            chunks.append(controller.processor.trajectory_to_chunk(
                trajectory, controller.waypoint_period_s, goal_sequence=goal.sequence,
                goal_instruction=goal.instruction, goal_age=observation.stamp - goal.stamp))
        return chunks

    @torch.inference_mode()
    def warm_up(self) -> float:
        """One call on a synthetic observation, so that the first real call is not the slow first
        one (allocator, kernel selection); leaves the history and the noise stream untouched.

        Returns the seconds it took.
        """
        config = self.model.config
        side = config.image_resize
        intrinsics = np.array([[side, 0.0, side / 2], [0.0, side, side / 2], [0.0, 0.0, 1.0]])
        frame = CameraFrame(rgb=np.zeros((side, side, 3), np.uint8), depth=np.ones((side, side), np.float32),
                            intrinsics=intrinsics, camera_to_base=np.eye(4))
        observation = Observation(cameras={name: frame for name in config.cameras},
                                  ee_position=np.array([0.0, 0.0, 0.5]), ee_orientation=np.array([0.0, 0.0, 0.0, 1.0]),
                                  gripper_openness=1.0)
        batch = self.processor.observation_to_batch(observation, np.zeros(self.goal_dim, np.float32))
        started = time.perf_counter()
        self.model.predict_trajectory({k: v.to(self.device) for k, v in batch.items()},
                                      generator=torch.Generator(device=self.device).manual_seed(0))
        return time.perf_counter() - started
