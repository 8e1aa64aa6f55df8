"""Fault injection with the real nodes in separate processes.

Every scenario follows the same pattern, robust on a loaded machine: establish that the
controller acts, inject the fault, wait (event-driven) until the controller reports it, let
anything already in flight drain, then assert that nothing more is commanded for a while;
remove the fault and wait until it acts again. No assertion depends on how fast the machine is.
"""
import os
import signal
import time

import pytest
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState
from ros_test_harness import STARTUP_TIMEOUT_S, FakeRobot, Recorder, launch, logs
from std_msgs.msg import Bool
from std_srvs.srv import Trigger

from openhelix_ros import topics
from openhelix_ros.qos import LATCHED

pytestmark = pytest.mark.integration
DRAIN_S = 1.5  # > execution horizon (0.67 s) and > observation staleness limit (0.5 s)
QUIET_S = 2.0


@pytest.fixture
def controller_with_fake_robot(ros_domain, tmp_path):
    recorder, robot = Recorder(), FakeRobot(rate_hz=10.0)
    # As next to a real arm: a repeated camera frame is a hung driver (the sim config turns this off).
    processes = launch({"controller"}, ros_domain, tmp_path,
                       overrides={"controller": {"frozen_camera_timeout_s": "1.0"}})
    recorder.pump_goals = True
    yield recorder, robot, processes
    processes.stop()
    recorder.destroy_node()
    robot.destroy_node()


def wait_acting(recorder, robot, processes):
    """Waits until the controller acts, then for diagnostics sent since (refusal counts are current)."""
    start = (len(recorder.chunks), len(recorder.commands))
    assert recorder.spin_until(lambda: len(recorder.chunks) >= start[0] + 2 and len(recorder.commands) > start[1],
                               STARTUP_TIMEOUT_S, processes, also=[robot]), logs(processes)
    received = recorder.diagnostics_received
    assert recorder.spin_until(lambda: recorder.diagnostics_received > received, 30, processes, also=[robot])


def assert_quiet(recorder, robot, processes):
    """Nothing is commanded once in-flight messages have drained."""
    recorder.spin_for(DRAIN_S, processes, also=[robot])
    chunks, commands = len(recorder.chunks), len(recorder.commands)
    recorder.spin_for(QUIET_S, processes, also=[robot])
    assert (len(recorder.chunks), len(recorder.commands)) == (chunks, commands), "motion was commanded"


REPORTED = {  # refusal cause -> how the controller's log reports it (once while it lasts)
    "invalid_observation": "not acting:",
    "out_of_order_observation": "dropping message: observation stamp",
    "future_observation": "dropping message: observation stamp is",
    "blocked_stale_observation": "no motion: observation",
    "blocked_ee_outside_workspace": "no motion: measured TCP position",
    "blocked_frozen_camera_static": "no motion: camera 'static' has sent the same image",
    "oversized_image": "larger than the accepted 2048x2048",
}


@pytest.mark.parametrize("fault, cause", [
    ("unknown_encoding", "invalid_observation"),
    ("wrong_size", "invalid_observation"),
    ("no_valid_depth", "invalid_observation"),
    ("no_intrinsics", "invalid_observation"),
    ("implausible_intrinsics", "invalid_observation"),
    ("nan_pose", "invalid_observation"),
    ("out_of_order", "out_of_order_observation"),
    ("future", "future_observation"),
    ("outside_workspace", "blocked_ee_outside_workspace"),
    ("far_pose", "blocked_ee_outside_workspace"),
    ("frozen", "blocked_frozen_camera_static"),
    ("oversized_image", "oversized_image"),
    ("paused", "blocked_stale_observation"),
])
def test_bad_input_stops_motion_is_reported_once_and_control_resumes(controller_with_fake_robot, fault, cause):
    recorder, robot, processes = controller_with_fake_robot
    wait_acting(recorder, robot, processes)
    before = recorder.refusals(cause)
    if fault == "paused":
        robot.paused = True
    else:
        robot.fault = fault
    assert recorder.spin_until(lambda: recorder.refusals(cause) > before, 60, processes, also=[robot]), \
        recorder.controller_status()
    assert_quiet(recorder, robot, processes)
    assert not processes.exited(), "the controller crashed on bad input"
    robot.fault, robot.paused = None, False
    wait_acting(recorder, robot, processes)
    # Reported once while it applies: frames still in flight when the fault began are valid and
    # may resume control in between, but the report never repeats without a resume before it.
    events = [line for line in processes.log_files["controller"].read_text().splitlines()
              if REPORTED[cause] in line or f"resumed: '{cause}'" in line]
    reports = [index for index, line in enumerate(events) if REPORTED[cause] in line]
    assert reports, f"'{REPORTED[cause]}' never logged"
    events = events[reports[0]:]  # before it: resumes from the start-up's "nothing received yet"
    repeated = [(a, b) for a, b in zip(events, events[1:]) if REPORTED[cause] in a and REPORTED[cause] in b]
    assert not repeated, f"'{REPORTED[cause]}' logged again while it still applied: {repeated[0]}"


def test_estop_latches_until_cleared_through_the_service(controller_with_fake_robot):
    recorder, robot, processes = controller_with_fake_robot
    wait_acting(recorder, robot, processes)
    estop = recorder.create_publisher(Bool, topics.ESTOP, LATCHED)
    estop.publish(Bool(data=True))
    assert recorder.spin_until(lambda: recorder.refusals("blocked_estop") > 0, 60, processes, also=[robot])
    assert_quiet(recorder, robot, processes)
    estop.publish(Bool(data=False))  # releasing the button does not clear a latched e-stop
    assert_quiet(recorder, robot, processes)
    client = recorder.create_client(Trigger, "/controller/clear_estop")
    assert client.wait_for_service(timeout_sec=30)
    future = client.call_async(Trigger.Request())
    assert recorder.spin_until(future.done, 30, processes, also=[robot]) and future.result().success
    wait_acting(recorder, robot, processes)


def test_deactivate_stops_commands_and_activate_resumes(controller_with_fake_robot):
    recorder, robot, processes = controller_with_fake_robot
    wait_acting(recorder, robot, processes)
    client = recorder.create_client(ChangeState, "/controller/change_state")
    assert client.wait_for_service(timeout_sec=30)

    def transition(transition_id):
        future = client.call_async(ChangeState.Request(transition=Transition(id=transition_id)))
        assert recorder.spin_until(future.done, 30, processes, also=[robot]) and future.result().success

    transition(Transition.TRANSITION_DEACTIVATE)
    chunks, commands = len(recorder.chunks), len(recorder.commands)
    recorder.spin_for(QUIET_S, processes, also=[robot])
    assert (len(recorder.chunks), len(recorder.commands)) == (chunks, commands)
    transition(Transition.TRANSITION_ACTIVATE)
    wait_acting(recorder, robot, processes)


def test_planner_killed_mid_run_stops_motion_and_restart_resumes(ros_domain, tmp_path):
    recorder = Recorder()
    processes = launch({"sim_bridge", "planner", "controller"}, ros_domain, tmp_path / "run",
                       overrides={"controller": {"max_goal_age_s": "1.5"}})
    try:
        assert recorder.spin_until(lambda: len(recorder.chunks) >= 3, STARTUP_TIMEOUT_S, processes), logs(processes)
        os.killpg(processes.processes["planner"].pid, signal.SIGKILL)
        processes.processes["planner"].wait()
        del processes.processes["planner"]
        assert recorder.spin_until(lambda: recorder.refusals("blocked_stale_goal") > 0, 60, processes)
        recorder.spin_for(DRAIN_S, processes)
        stopped_at = len(recorder.chunks)
        recorder.spin_for(QUIET_S, processes)
        assert len(recorder.chunks) == stopped_at, "the controller kept acting on a stale goal"
        assert all(chunk.goal_age.sec + chunk.goal_age.nanosec * 1e-9 <= 1.5 for chunk in recorder.chunks)
        restarted = launch({"planner"}, ros_domain, tmp_path / "restart")
        try:
            assert recorder.spin_until(lambda: len(recorder.chunks) >= stopped_at + 3, STARTUP_TIMEOUT_S,
                                       restarted), logs(restarted)
        finally:
            restarted.stop()
    finally:
        processes.stop()
        recorder.destroy_node()


def resident_memory_mb(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def test_soak_at_30_hz_keeps_memory_bounded(ros_domain, tmp_path):
    soak_s = float(os.environ.get("OPENHELIX_SOAK_S", "30"))
    recorder, robot = Recorder(), FakeRobot(rate_hz=30.0)
    processes = launch({"controller"}, ros_domain, tmp_path,
                       overrides={"controller": {"control_rate_hz": "30.0"}})
    recorder.pump_goals = True
    try:
        wait_acting(recorder, robot, processes)
        pid = processes.processes["controller"].pid
        recorder.spin_for(3.0, processes, also=[robot])
        start_mb, start_chunks, started = resident_memory_mb(pid), len(recorder.chunks), time.monotonic()
        recorder.spin_for(soak_s, processes, also=[robot])
        end_mb, elapsed = resident_memory_mb(pid), time.monotonic() - started
        rate = (len(recorder.chunks) - start_chunks) / elapsed
        print(f"soak {elapsed:.0f} s: controller RSS {start_mb:.1f} -> {end_mb:.1f} MB "
              f"({end_mb - start_mb:+.1f} MB), {rate:.1f} chunks/s, {robot.published} frames sent")
        assert len(recorder.chunks) > start_chunks, "the controller stopped acting during the soak"
        assert end_mb - start_mb < 50.0
    finally:
        processes.stop()
        recorder.destroy_node()
        robot.destroy_node()
