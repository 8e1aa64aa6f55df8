"""The demo robot's logic without ROS: the multi-rate sensor schedule, an episode played into a
collecting sink, the static transforms, and PlayTableEnv.step's on_substep hook."""
from __future__ import annotations

import numpy as np
import pytest

from openhelix_sim.demo_robot import (
    DemoRobot,
    SensorSchedule,
    gripper_openness_command,
    optical_frame,
    static_transforms,
)
from openhelix_sim.envs import PlayTableEnv
from openhelix_sim.evaluation_runner import oracle_for
from openhelix_sim.experiments.demos import DemoJob, demo_jobs, write_camera_info

# ------------------------------------------------------------------------------------- schedule


def test_state_ticks_at_100_hz_are_the_first_substeps_at_or_after_each_10_ms():
    schedule = SensorSchedule(state_rate_hz=100.0)
    assert schedule.substeps_per_step == 8
    assert schedule.state_substeps(0, 12) == [0, 3, 5, 8, 10, 12]
    one_second = schedule.state_substeps(1, 240)
    assert len(one_second) == 100
    times = np.array([schedule.substep_time(k) for k in one_second])
    ticks = np.arange(1, 101) / 100.0
    assert np.all(times >= ticks - 1e-12) and np.all(times - ticks < 1 / 240)  # first substep at or after the tick
    assert set(np.diff(one_second)) == {2, 3}
    # a step of 8 substeps publishes 3 or 4 states; 10 s hold exactly 1000
    assert {len(schedule.state_substeps(8 * s + 1, 8 * s + 8)) for s in range(30)} == {3, 4}
    assert len(schedule.state_substeps(1, 2400)) == 1000


def test_camera_ticks_at_15_hz_are_every_second_step():
    schedule = SensorSchedule(camera_rate_hz=15.0)
    assert schedule.camera_steps(0, 10) == [0, 2, 4, 6, 8, 10]
    assert schedule.step_time(2) == pytest.approx(1 / 15)
    assert schedule.lead_in_steps(0) == 2 and schedule.lead_in_steps(1) == 1 and schedule.lead_in_steps(4) == 2
    # rates that do not divide 30: one frame per crossed tick, 7 per second
    seven = SensorSchedule(camera_rate_hz=7.0)
    assert len(seven.camera_steps(1, 30)) == 7 and len(seven.camera_steps(1, 300)) == 70
    assert SensorSchedule(camera_rate_hz=30.0).camera_steps(1, 5) == [1, 2, 3, 4, 5]
    assert len(SensorSchedule(state_rate_hz=240.0).state_substeps(1, 240)) == 240


@pytest.mark.parametrize("kwargs, match", [
    ({"state_rate_hz": 241.0}, "state_rate_hz must lie in"),
    ({"state_rate_hz": 0.0}, "state_rate_hz must lie in"),
    ({"camera_rate_hz": 31.0}, "camera_rate_hz must lie in"),
    ({"camera_rate_hz": -1.0}, "camera_rate_hz must lie in"),
    ({"control_hz": 70.0}, "multiple of control_hz"),
])
def test_schedule_refuses_impossible_rates(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SensorSchedule(**kwargs)


# ------------------------------------------------------------------------------ on_substep hook


def test_on_substep_is_called_after_every_physics_substep_and_changes_nothing():
    with PlayTableEnv(seed=0, render_static=False, render_gripper=False) as env:
        action = np.r_[env.tcp_pose()[0] + [0.03, 0.0, -0.02], np.pi, 0.0, np.pi / 2, 1.0]
        env.reset(seed=3)
        plain = [env.step(action)["robot_obs"] for _ in range(3)]
        env.reset(seed=3)
        calls, joints = [], []

        def on_substep(k):
            calls.append(k)
            joints.append(env.joint_positions())

        hooked = [env.step(action, on_substep=on_substep)["robot_obs"] for _ in range(3)]
        assert calls == list(range(1, 9)) * 3
        np.testing.assert_array_equal(np.array(plain), np.array(hooked))
        assert not np.allclose(joints[0], joints[7])  # the arm moved between the substeps


# ---------------------------------------------------------------------------- an episode played


class CollectingSink:
    def __init__(self, env):
        self.env = env
        self.paced, self.states, self.frames, self.commands, self.instructions = [], [], [], [], []

    def pace(self, t):
        self.paced.append(t)

    def state(self, t):
        self.states.append((t, self.env.joint_positions()))

    def cameras(self, t, images):
        self.frames.append((t, {c: (rgb.shape, depth.shape) for c, (rgb, depth) in images.items()}))

    def command(self, t, action):
        self.commands.append((t, action))

    def instruction(self, t, text, job):
        self.instructions.append((t, text, job.task))


class FailingOracle:
    """The embedded oracle, except that its answers number ``fail`` (0, 1, ...) are "failed"
    (the demo robot asks once per episode, in its dry run)."""

    def __init__(self, fail):
        self.inner, self.fail, self.calls = oracle_for("embedded"), set(fail), 0

    def capture(self, env):
        return self.inner.capture(env)

    def succeeded(self, task, start, end):
        self.calls += 1
        return self.inner.succeeded(task, start, end) and self.calls - 1 not in self.fail


def test_demo_robot_publishes_kept_episodes_on_the_simulated_clock():
    jobs = demo_jobs(["turn_on_led"], 2, seed=0)
    sentence = "press the button to turn on the led light"
    assert [(j.task, j.seed, j.annotation) for j in jobs] == [("turn_on_led", 0, sentence), ("turn_on_led", 1, sentence)]
    env = PlayTableEnv(seed=0, render_static=False, render_gripper=False, image_size_static=32, image_size_gripper=24)
    try:
        sink, logs = CollectingSink(env), []
        oracle = FailingOracle({1})
        summary = DemoRobot(env, jobs, oracle, sink, SensorSchedule(), pause_s=0.5, log=logs.append).run()
    finally:
        env.close()
    assert oracle.calls == 2
    assert [(e.task, e.seed) for e in summary.published] == [("turn_on_led", 0)]
    assert len(summary.skipped) == 1 and summary.skipped[0][:2] == ("turn_on_led", 1)
    assert summary.skipped[0][2].startswith("the oracle says the expert failed after")
    assert any("skipping turn_on_led seed 1" in line for line in logs)
    episode = summary.published[0]
    steps = episode.steps
    assert 30 < steps < 120 and len(sink.commands) == steps
    # the clock: 2 lead-in steps (15 Hz camera ticks on even steps), the expert, 15 pause steps
    total_steps = 2 + steps + 15
    assert summary.sim_time_s == pytest.approx(total_steps / 30)
    assert episode.start_s == pytest.approx(2 / 30) and episode.end_s == pytest.approx((2 + steps) / 30)
    assert sink.instructions == [(episode.start_s, "press the button to turn on the led light", "turn_on_led")]
    state_times = np.array([t for t, _ in sink.states])
    frame_times = np.array([t for t, _ in sink.frames])
    assert state_times[0] == 0.0 and frame_times[0] == 0.0
    assert np.all(np.diff(state_times) > 0) and np.all(np.diff(frame_times) > 0)
    assert len(state_times) == len(SensorSchedule().state_substeps(0, 8 * total_steps))
    assert len(frame_times) == 1 + total_steps // 2
    np.testing.assert_allclose(frame_times, np.arange(len(frame_times)) * 2 / 30, atol=1e-12)
    assert episode.start_s in frame_times  # a frame of the start state at the instruction's time
    command_times = np.array([t for t, _ in sink.commands])
    np.testing.assert_allclose(command_times, episode.start_s + np.arange(steps) / 30, atol=1e-12)
    assert sink.frames[0][1] == {"static": ((32, 32, 3), (32, 32)), "gripper": ((24, 24, 3), (24, 24))}
    assert sorted(sink.paced) == sink.paced  # the sink is never asked to go back in time
    # the arm holds still in the pause: joint positions hardly change in its last half
    pause = [q for t, q in sink.states if t > episode.end_s + 0.25]
    assert len(pause) > 20 and np.max(np.abs(np.diff(pause, axis=0))) < 1e-3


def test_gripper_command_is_openness_as_the_controller_publishes_it():
    assert gripper_openness_command(np.r_[np.zeros(6), 1.0]) == 1.0
    assert gripper_openness_command(np.r_[np.zeros(6), -1.0]) == 0.0


# --------------------------------------------------------------------------- static transforms


def test_static_transforms_equal_the_demos_camera_calibration(tmp_path):
    from openhelix_core.training.dataset import CameraCalibration

    with PlayTableEnv(seed=0, render_static=False, render_gripper=False) as env:
        transforms = {(parent, child): matrix for parent, child, matrix in static_transforms(env, ee_frame="tcp")}
        write_camera_info(env, tmp_path)
        base_position, base_orientation = env.robot_base_pose()
    calibration = CameraCalibration.for_split(tmp_path)
    assert set(transforms) == {("world", "panda_link0"), ("world", optical_frame("static")),
                               ("tcp", optical_frame("gripper"))}
    np.testing.assert_array_equal(transforms[("world", optical_frame("static"))], calibration.static_to_base)
    np.testing.assert_array_equal(transforms[("tcp", optical_frame("gripper"))], calibration.gripper_to_tcp)
    np.testing.assert_allclose(transforms[("world", "panda_link0")][:3, 3], base_position)
    np.testing.assert_allclose(transforms[("world", "panda_link0")][:3, :3], np.eye(3), atol=1e-12)
    assert base_orientation.tolist() == [0.0, 0.0, 0.0, 1.0]


def test_dry_run_skips_a_task_the_expert_cannot_start(monkeypatch):
    """An expert that raises ValueError (its precondition fails) makes a skip, not a crash."""
    import openhelix_sim.demo_robot as module

    def refuse(*_):
        raise ValueError("the drawer is not closed")

    monkeypatch.setattr(module.Expert, "plan", refuse)
    with PlayTableEnv(seed=0, render_static=False, render_gripper=False) as env:
        summary = DemoRobot(env, [DemoJob("open_drawer", 0, "open the drawer")], oracle_for("embedded"),
                            CollectingSink(env), log=lambda _: None).run()
    assert summary.published == []
    assert summary.skipped == [("open_drawer", 0, "the expert cannot do it: the drawer is not closed")]
    assert summary.sim_time_s == 0.0
