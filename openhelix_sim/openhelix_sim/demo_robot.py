"""The scripted expert played on the play-table as a real robot's drivers would publish it.

:class:`DemoRobot` runs the demos of :mod:`openhelix_sim.experiments.demos` (same start states,
same instructions, same "keep only what the oracle passes" dry run) and hands what a robot would
publish to a *sink* (the ROS node ``sim_bridge.demo_robot_node`` publishes it; tests collect it),
stamped with a simulated clock:

* sim time is the physics time: 240 Hz substeps, 8 per 30 Hz action (``PlayTableEnv.step``);
  it starts at 0 and runs through the whole recording (a skipped episode takes no time);
* joint and TCP states at ``state_rate_hz`` (default 100): after the physics substep where
  ``floor(t * rate)`` increments, stamped with that substep's time (so consecutive stamps are
  2 or 3 substeps apart at 100 Hz, 100 per simulated second);
* camera images at ``camera_rate_hz`` (default 15): rendered at the end of every 30 Hz step
  whose end time crosses a camera tick, stamped with that time;
* the commanded TCP pose and gripper, once per expert action (30 Hz), stamped with the time the
  action starts;
* at t = 0 one state and one camera sample.

One episode, as published: the scene is reset to the task's start state (a jump, taking no sim
time); the arm holds still up to the next camera tick (at least one step, so that the frame at
the instruction's time shows the start state; :meth:`SensorSchedule.lead_in_steps`); the
instruction is published; the expert's actions run (commands published); then the arm holds
its last command for ``pause_s`` (no commands published). The dry run that decides whether an
episode is kept does exactly the same steps without publishing or advancing the clock, so the
published episode is the one the oracle passed.

Nothing here imports ROS.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Protocol, Sequence

import numpy as np

from openhelix_core.data.calvin_format import CALVIN_CONTROL_RATE_HZ
from openhelix_core.geometry import pose_to_matrix

from .envs.expert import Expert
from .envs.play_table import PHYSICS_HZ
from .execution import hold_action
from .experiments.demos import DemoJob
from .start_states import initial_state

CAMERAS = ("static", "gripper")


def optical_frame(camera: str) -> str:
    """Frame id of a camera's images (the sim bridge's naming): ``<camera>_camera_optical_frame``."""
    return f"{camera}_camera_optical_frame"


def _ticks(count: int, rate: float, base: float) -> int:
    """Whole ticks of ``rate`` Hz elapsed after ``count`` periods of ``base`` Hz."""
    return math.floor(count * rate / base + 1e-9)


@dataclass(frozen=True)
class SensorSchedule:
    """Which physics substeps publish states and which control steps render cameras.

    Substeps and steps are counted from the start of the recording (substep ``k`` ends at
    ``k / physics_hz`` s, step ``s`` at ``s / control_hz`` s); count 0 is the start, where
    everything is published once."""

    state_rate_hz: float = 100.0
    camera_rate_hz: float = 15.0
    physics_hz: int = PHYSICS_HZ
    control_hz: float = CALVIN_CONTROL_RATE_HZ

    def __post_init__(self) -> None:
        if not self.physics_hz > 0 or not self.control_hz > 0 or self.physics_hz % self.control_hz:
            raise ValueError(f"physics_hz ({self.physics_hz}) must be a multiple of control_hz ({self.control_hz})")
        if not 0 < self.state_rate_hz <= self.physics_hz:
            raise ValueError(f"state_rate_hz must lie in (0, {self.physics_hz}] (the physics rate), "
                             f"got {self.state_rate_hz}")
        if not 0 < self.camera_rate_hz <= self.control_hz:
            raise ValueError(f"camera_rate_hz must lie in (0, {self.control_hz:g}] (the control rate: cameras "
                             f"render at the end of a step), got {self.camera_rate_hz}")

    @property
    def substeps_per_step(self) -> int:
        return int(round(self.physics_hz / self.control_hz))

    def substep_time(self, substep: int) -> float:
        """Sim time (s) at the end of physics substep ``substep``."""
        return substep / self.physics_hz

    def step_time(self, step: int) -> float:
        """Sim time (s) at the end of control step ``step`` (the same clock as substeps)."""
        return self.substep_time(step * self.substeps_per_step)

    def state_due(self, substep: int) -> bool:
        """Whether states are published after substep ``substep`` (``floor(t * rate)`` increments)."""
        return substep == 0 or (_ticks(substep, self.state_rate_hz, self.physics_hz)
                                > _ticks(substep - 1, self.state_rate_hz, self.physics_hz))

    def camera_due(self, step: int) -> bool:
        """Whether cameras render at the end of step ``step`` (its end time crosses a camera tick)."""
        return step == 0 or (_ticks(step, self.camera_rate_hz, self.control_hz)
                             > _ticks(step - 1, self.camera_rate_hz, self.control_hz))

    def lead_in_steps(self, step: int) -> int:
        """Steps from step ``step`` to the next step (at least one on) that ends on a camera tick."""
        count = 1
        while not self.camera_due(step + count):
            count += 1
        return count

    def state_substeps(self, first: int, last: int) -> list[int]:
        """The substeps in ``first .. last`` (inclusive) that publish states."""
        return [k for k in range(first, last + 1) if self.state_due(k)]

    def camera_steps(self, first: int, last: int) -> list[int]:
        """The steps in ``first .. last`` (inclusive) that render cameras."""
        return [s for s in range(first, last + 1) if self.camera_due(s)]


class DemoSink(Protocol):
    """What :class:`DemoRobot` hands over, each with its sim time ``t`` (s from the start)."""

    def pace(self, t: float) -> None:
        """Called before anything stamped ``t`` is published (a real-time sink sleeps here)."""

    def state(self, t: float) -> None:
        """Publish the arm's joint states and TCP pose (read from the env) stamped ``t``."""

    def cameras(self, t: float, images: dict) -> None:
        """Publish ``{camera: (rgb (H, W, 3) uint8, depth (H, W) float32 m)}`` stamped ``t``."""

    def command(self, t: float, action: np.ndarray) -> None:
        """Publish one absolute action (TCP xyz, Euler xyz, gripper +1 open / -1 closed) stamped ``t``."""

    def instruction(self, t: float, text: str, job: DemoJob) -> None:
        """Publish the instruction of the episode starting at ``t``."""


@dataclass
class PublishedEpisode:
    task: str
    seed: int
    instruction: str
    start_s: float       # instruction (sim time)
    end_s: float         # end of the expert's last action
    pause_end_s: float   # end of the pause after it
    steps: int           # expert actions


@dataclass
class DemoSummary:
    published: list[PublishedEpisode] = field(default_factory=list)
    skipped: list[tuple[str, int, str]] = field(default_factory=list)   # task, seed, why
    sim_time_s: float = 0.0


class DemoRobot:
    """Plays ``jobs`` (see the module doc) on ``env`` (an embedded :class:`PlayTableEnv`) into
    ``sink``; ``oracle`` is the env's success check (``evaluation_runner.oracle_for``)."""

    def __init__(self, env, jobs: Sequence[DemoJob], oracle, sink: DemoSink, schedule: SensorSchedule = SensorSchedule(),
                 pause_s: float = 1.0, log: Callable[[str], None] = print) -> None:
        if pause_s < 0 or not math.isfinite(pause_s):
            raise ValueError(f"pause_s must be a finite number >= 0, got {pause_s}")
        self.env, self.jobs, self.oracle, self.sink, self.schedule, self.log = env, list(jobs), oracle, sink, schedule, log
        self.pause_steps = int(round(pause_s * schedule.control_hz))
        self.substep = 0   # physics substeps published so far: sim time = substep / physics_hz
        self.step = 0      # control steps published so far

    @property
    def time(self) -> float:
        return self.schedule.substep_time(self.substep)

    # ---------------------------------------------------------------------------------- running
    def run(self) -> DemoSummary:
        summary = DemoSummary()
        for index, job in enumerate(self.jobs):
            lead_in = self.schedule.lead_in_steps(self.step)
            ok, steps, why = self._dry_run(job, lead_in)
            if not ok:
                summary.skipped.append((job.task, job.seed, why))
                self.log(f"skipping {job.task} seed {job.seed} ({index + 1}/{len(self.jobs)}): {why}")
                continue
            summary.published.append(self._publish_episode(job, lead_in))
            episode = summary.published[-1]
            self.log(f"published {job.task} seed {job.seed} ({index + 1}/{len(self.jobs)}): '{job.annotation}', "
                     f"{episode.steps} steps, sim time {episode.start_s:.2f} .. {episode.pause_end_s:.2f} s")
        summary.sim_time_s = self.time
        return summary

    def _start(self, job: DemoJob) -> None:
        self.env.render_static = self.env.render_gripper = False
        initial_state(self.env, job.task, job.seed, scene_variation=job.scene_variation)

    def _dry_run(self, job: DemoJob, lead_in: int) -> tuple[bool, int, str]:
        """The episode without publishing: (oracle passed, expert steps, why not)."""
        try:
            self._start(job)
            hold = hold_action(self.env)
            for _ in range(lead_in):
                self.env.step(hold)
            start, steps = self.oracle.capture(self.env), 0
            for action in Expert().plan(job.task, self.env):
                self.env.step(action)
                steps += 1
        except ValueError as error:  # the expert finds no way to do it from this state
            return False, 0, f"the expert cannot do it: {error}"
        if not self.oracle.succeeded(job.task, start, self.oracle.capture(self.env)):
            return False, steps, f"the oracle says the expert failed after {steps} steps"
        return True, steps, ""

    def _publish_episode(self, job: DemoJob, lead_in: int) -> PublishedEpisode:
        self._start(job)
        if self.substep == 0:  # the first sample of the recording, at t = 0
            self.sink.pace(0.0)
            self.sink.state(0.0)
            self.sink.cameras(0.0, self._render())
        hold = hold_action(self.env)
        for _ in range(lead_in):
            self._step(hold, command=False)
        start_s = self.time
        self.sink.pace(start_s)
        self.sink.instruction(start_s, job.annotation, job)
        action, steps = hold, 0
        for action in Expert().plan(job.task, self.env):
            self._step(action, command=True)
            steps += 1
        end_s = self.time
        for _ in range(self.pause_steps):
            self._step(action, command=False)
        return PublishedEpisode(job.task, job.seed, job.annotation, start_s, end_s, self.time, steps)

    def _step(self, action: np.ndarray, command: bool) -> None:
        """One 30 Hz step: command (optional), 8 substeps with their state ticks, camera tick."""
        schedule = self.schedule
        if command:
            self.sink.pace(self.time)
            self.sink.command(self.time, np.asarray(action, dtype=np.float64))

        def on_substep(_: int) -> None:
            self.substep += 1
            if schedule.state_due(self.substep):
                self.sink.pace(self.time)
                self.sink.state(self.time)

        self.env.step(action, "absolute", on_substep=on_substep)
        self.step += 1
        if self.substep != self.step * schedule.substeps_per_step:
            raise RuntimeError(f"the env ran {self.substep} substeps in {self.step} steps; expected "
                               f"{schedule.substeps_per_step} per step (on_substep not supported?)")
        if schedule.camera_due(self.step):
            images = self._render()
            self.sink.pace(self.time)
            self.sink.cameras(self.time, images)

    def _render(self) -> dict:
        self.env.render_static = self.env.render_gripper = True
        try:
            obs = self.env.get_obs()
        finally:
            self.env.render_static = self.env.render_gripper = False
        return {camera: (obs[f"rgb_{camera}"], obs[f"depth_{camera}"]) for camera in CAMERAS}


def static_transforms(env, base_frame: str = "world", robot_base_frame: str = "panda_link0",
                      ee_frame: str = "tcp") -> list[tuple[str, str, np.ndarray]]:
    """``(parent, child, 4x4)`` of the fixed frames of ``env``: the robot base and the static
    camera's optical frame in ``base_frame`` (the env's world frame, in which the TCP poses are
    published), and the gripper camera's optical frame in the TCP frame ``ee_frame`` (hand-eye).

    The numbers are the env's own (``robot_base_pose``, ``camera_to_base("static")``,
    ``camera_to_tcp("gripper")``), the ones ``experiments.demos.write_camera_info`` writes to a
    demo split's ``camera_info.json``."""
    position, orientation = env.robot_base_pose()
    return [(base_frame, robot_base_frame, pose_to_matrix(position, orientation)),
            (base_frame, optical_frame("static"), np.asarray(env.camera_to_base("static"), dtype=np.float64)),
            (ee_frame, optical_frame("gripper"), np.asarray(env.camera_to_tcp("gripper"), dtype=np.float64))]


def gripper_openness_command(action: np.ndarray) -> float:
    """The gripper command of an absolute action as the controller publishes it on
    ``/openhelix/command/gripper``: openness 1.0 (open) for a gripper entry >= 0, else 0.0."""
    return 1.0 if float(action[6]) >= 0.0 else 0.0


__all__ = ["CAMERAS", "DemoRobot", "DemoSink", "DemoSummary", "PublishedEpisode", "SensorSchedule",
           "gripper_openness_command", "optical_frame", "static_transforms"]
