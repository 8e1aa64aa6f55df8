"""Attacks on the controller's inputs, clock, parameters, e-stop and lifecycle, with the real nodes.

Each scenario establishes that the controller acts, attacks, and counts what is commanded
afterwards: assertions wait for events and count messages, none depends on the machine's speed.
"""
import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticStatus
from geometry_msgs.msg import PoseStamped
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.parameter_client import AsyncParameterClient
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from ros_test_harness import STARTUP_TIMEOUT_S, FakeRobot, Recorder, launch, launched_with_robot, logs
from rosgraph_msgs.msg import Clock
from std_msgs.msg import Bool, String
from std_srvs.srv import Trigger
from test_faults import assert_quiet, wait_acting

from openhelix_msgs.msg import TrajectoryChunk
from openhelix_ros import topics
from openhelix_ros.conversions import seconds_to_stamp, stamp_to_seconds
from openhelix_ros.qos import LATCHED, RELIABLE

pytestmark = pytest.mark.integration
ROBOT_LIKE = {"frozen_camera_timeout_s": "1.0"}
SIM_TIME = [Parameter("use_sim_time", Parameter.Type.BOOL, True)]


@pytest.fixture
def controller_and_robot(ros_domain, tmp_path):
    with slow_controller(ros_domain, tmp_path) as (recorder, robot, processes):
        wait_acting(recorder, robot, processes)
        yield recorder, robot, processes


def slow_controller(ros_domain, tmp_path, **parameters):
    """The controller, robot-like, with ``parameters`` (e.g. a slowed System 1), beside a robot that follows it."""
    return launched_with_robot({"controller"}, ros_domain, tmp_path,
                               overrides={"controller": {**ROBOT_LIKE, **parameters}}, follow_commands=True)


def call(recorder, robot, processes, service_type, name, request):
    client = recorder.create_client(service_type, name)
    assert client.wait_for_service(timeout_sec=30), f"no service {name}"
    future = client.call_async(request)
    assert recorder.spin_until(future.done, 30, processes, also=[n for n in (robot,) if n]), f"{name} did not answer"
    return future.result()


def transition(recorder, robot, processes, node, transition_id):
    response = call(recorder, robot, processes, ChangeState, f"/{node}/change_state",
                    ChangeState.Request(transition=Transition(id=transition_id)))
    assert response.success, f"{node}: transition {transition_id} failed; {logs(processes)}"


def readers(node: Node, topic: str, of: str) -> int:
    return sum(1 for info in node.get_subscriptions_info_by_topic(topic) if info.node_name == of)


def test_a_goal_stamped_in_the_future_is_refused(controller_and_robot):
    recorder, robot, processes = controller_and_robot
    recorder.pump_goals = False
    recorder.publish_goal(5000, ahead_s=15.0)  # would look fresh for 18 s, then the planner falls silent
    assert recorder.spin_until(lambda: recorder.refusals("future_goal") > 0, 60, processes, also=[robot])
    assert recorder.spin_until(lambda: "no motion: goal is" in recorder.messages.get("openhelix/controller", ""),
                               60, processes, also=[robot])  # the last valid goal aged out
    assert_quiet(recorder, robot, processes)


@pytest.mark.parametrize("reliability", [ReliabilityPolicy.RELIABLE, ReliabilityPolicy.BEST_EFFORT])
def test_estop_from_a_volatile_publisher_stops_motion_and_cannot_be_cleared_while_held(controller_and_robot,
                                                                                      reliability):
    recorder, robot, processes = controller_and_robot
    button = recorder.create_publisher(Bool, topics.ESTOP, QoSProfile(depth=10, reliability=reliability,
                                                                      durability=DurabilityPolicy.VOLATILE))
    held = [True]
    recorder.create_timer(0.1, lambda: button.publish(Bool(data=held[0])))  # a button driver's state stream
    assert recorder.spin_until(lambda: recorder.refusals("blocked_estop") > 0, 60, processes, also=[robot])
    assert_quiet(recorder, robot, processes)
    refused = call(recorder, robot, processes, Trigger, "/controller/clear_estop", Trigger.Request())
    assert not refused.success and "still reads true" in refused.message
    assert_quiet(recorder, robot, processes)
    held[0] = False
    recorder.spin_for(1.0, processes, also=[robot])
    assert_quiet(recorder, robot, processes)  # released, still latched
    assert call(recorder, robot, processes, Trigger, "/controller/clear_estop", Trigger.Request()).success
    wait_acting(recorder, robot, processes)


def test_estop_latch_survives_lifecycle_and_cleanup_destroys_what_configure_created(controller_and_robot):
    recorder, robot, processes = controller_and_robot
    assert (readers(recorder, topics.ESTOP, "controller"), readers(recorder, topics.GOAL_EMBEDDING, "controller")) \
        == (2, 1)
    call(recorder, robot, processes, Trigger, "/controller/engage_estop", Trigger.Request())
    assert_quiet(recorder, robot, processes)
    transition(recorder, robot, processes, "controller", Transition.TRANSITION_DEACTIVATE)
    transition(recorder, robot, processes, "controller", Transition.TRANSITION_ACTIVATE)
    assert_quiet(recorder, robot, processes)
    transition(recorder, robot, processes, "controller", Transition.TRANSITION_DEACTIVATE)
    transition(recorder, robot, processes, "controller", Transition.TRANSITION_CLEANUP)
    assert recorder.spin_until(lambda: readers(recorder, topics.GOAL_EMBEDDING, "controller") == 0, 30, processes,
                               also=[robot])
    recorder.spin_for(1.5, processes, also=[robot])  # goals keep coming while unconfigured: no crash
    transition(recorder, robot, processes, "controller", Transition.TRANSITION_CONFIGURE)
    transition(recorder, robot, processes, "controller", Transition.TRANSITION_ACTIVATE)
    assert recorder.spin_until(lambda: readers(recorder, topics.GOAL_EMBEDDING, "controller") == 1, 30, processes,
                               also=[robot])
    assert (readers(recorder, topics.ESTOP, "controller"), readers(recorder, topics.GOAL_EMBEDDING, "controller")) \
        == (2, 1), "configure after cleanup duplicated subscriptions"
    assert_quiet(recorder, robot, processes)  # still e-stopped
    assert call(recorder, robot, processes, Trigger, "/controller/clear_estop", Trigger.Request()).success
    wait_acting(recorder, robot, processes)
    transition(recorder, robot, processes, "controller", Transition.TRANSITION_ACTIVE_SHUTDOWN)
    assert_quiet(recorder, robot, processes)
    assert not processes.exited()


def test_planner_cleanup_destroys_and_shutdown_works_from_every_state(ros_domain, tmp_path):
    recorder = Recorder()
    image_topic = topics.camera_color("static")
    for shutdown in (Transition.TRANSITION_ACTIVE_SHUTDOWN, Transition.TRANSITION_INACTIVE_SHUTDOWN,
                     Transition.TRANSITION_UNCONFIGURED_SHUTDOWN):
        processes = launch({"planner"}, ros_domain, tmp_path / str(shutdown))
        try:
            assert recorder.spin_until(lambda: readers(recorder, image_topic, "planner") == 1, STARTUP_TIMEOUT_S,
                                       processes), logs(processes)
            for transition_id in (Transition.TRANSITION_DEACTIVATE, Transition.TRANSITION_CLEANUP,
                                  Transition.TRANSITION_CONFIGURE, Transition.TRANSITION_ACTIVATE):
                transition(recorder, None, processes, "planner", transition_id)
            assert readers(recorder, image_topic, "planner") == 1, "configure after cleanup duplicated subscriptions"
            if shutdown != Transition.TRANSITION_ACTIVE_SHUTDOWN:
                transition(recorder, None, processes, "planner", Transition.TRANSITION_DEACTIVATE)
            if shutdown == Transition.TRANSITION_UNCONFIGURED_SHUTDOWN:
                transition(recorder, None, processes, "planner", Transition.TRANSITION_CLEANUP)
            transition(recorder, None, processes, "planner", shutdown)
            assert recorder.spin_until(lambda: readers(recorder, image_topic, "planner") == 0, 30, processes)
            assert not processes.exited()
        finally:
            processes.stop()
    recorder.destroy_node()


def test_parameters_cannot_be_changed_from_outside(controller_and_robot):
    recorder, robot, processes = controller_and_robot
    client = AsyncParameterClient(recorder, "controller")
    assert client.wait_for_services(timeout_sec=30)
    attempts = [Parameter("max_linear_velocity", value=100.0), Parameter("max_observation_age_s", value=1e6),
                Parameter("use_sim_time", value=True)]
    for parameter in attempts:
        future = client.set_parameters([parameter])
        assert recorder.spin_until(future.done, 30, processes, also=[robot])
        result = future.result().results[0]
        assert not result.successful and result.reason, parameter.name
    future = client.get_parameters([p.name for p in attempts])
    assert recorder.spin_until(future.done, 30, processes, also=[robot])
    assert [v.double_value for v in future.result().values[:2]] == [0.25, 0.5]
    assert future.result().values[2].bool_value is False
    wait_acting(recorder, robot, processes)  # still on its own clock and acting


class ClockDriver(Node):
    """Publishes /clock at 100 Hz of wall time; ``offset_s`` moves the simulated time."""

    def __init__(self, start_s: float):
        super().__init__("clock_driver")
        self.start_s, self.offset_s = start_s, 0.0
        self.publisher = self.create_publisher(Clock, "/clock", 10)
        self.started = self.get_clock().now().nanoseconds * 1e-9
        self.create_timer(0.01, lambda: self.publisher.publish(Clock(clock=seconds_to_stamp(self.now()))))

    def now(self) -> float:
        return self.start_s + self.offset_s + self.get_clock().now().nanoseconds * 1e-9 - self.started


def test_clock_jump_back_discards_what_was_planned_and_resumes_on_fresh_data(ros_domain, tmp_path):
    clock = ClockDriver(start_s=1000.0)
    recorder, robot = Recorder(parameter_overrides=SIM_TIME), FakeRobot(rate_hz=10.0, parameter_overrides=SIM_TIME)
    processes = launch({"controller"}, ros_domain, tmp_path, overrides={"controller": {"use_sim_time": "true"}})
    recorder.pump_goals = True
    try:
        assert recorder.spin_until(lambda: len(recorder.commands) > 3, STARTUP_TIMEOUT_S, processes,
                                   also=[robot, clock]), logs(processes)
        before_jump = clock.now()
        clock.offset_s -= 30.0  # e.g. the simulation was reset
        chunks, commands = len(recorder.chunks), len(recorder.commands)

        def fresh_chunks():
            return [c for c in recorder.chunks[chunks:] if stamp_to_seconds(c.header.stamp) < before_jump - 1.0]

        assert recorder.spin_until(lambda: len(fresh_chunks()) >= 2, 20.0, processes, also=[robot, clock]), \
            f"the controller did not act on post-jump data; {recorder.controller_status()}"
        # Everything published after the jump (but what was in flight) belongs to the new time line.
        late = [c for c in recorder.commands[commands + 3:] if stamp_to_seconds(c.header.stamp) >= before_jump - 1.0]
        assert not late, f"{len(late)} commands stamped on the pre-jump time line"
        assert int(recorder.controller_status().get("clock_jumps", 0)) >= 1
    finally:
        processes.stop()
        for node in (recorder, robot, clock):
            node.destroy_node()


def test_consecutive_commands_respect_the_limits_by_their_stamps(controller_and_robot):
    recorder, robot, processes = controller_and_robot
    max_velocity = 0.25
    for _ in range(5):  # a window during which nothing blocked motion (a block re-anchors at the arm)
        blocked_before = {k: v for k, v in recorder.controller_status().items() if k.startswith("refused_blocked")}
        start = len(recorder.commands)
        recorder.spin_for(4.0, processes, also=[robot])
        recorder.spin_for(1.2, processes, also=[robot])  # the next diagnostics
        blocked_after = {k: v for k, v in recorder.controller_status().items() if k.startswith("refused_blocked")}
        window = recorder.commands[start:]
        if blocked_after == blocked_before and len(window) > 20:
            break
    else:
        pytest.fail("motion was blocked in every window")
    stamps = np.array([stamp_to_seconds(c.header.stamp) for c in window])
    positions = np.array([[c.pose.position.x, c.pose.position.y, c.pose.position.z] for c in window])
    assert np.all(np.diff(stamps) > 0), "commands must carry increasing stamps"
    speeds = np.linalg.norm(np.diff(positions, axis=0), axis=1) / np.diff(stamps)
    print(f"{len(window)} commands, largest speed by stamps {speeds.max():.3f} m/s (limit {max_velocity})")
    assert speeds.max() <= max_velocity * (1 + 1e-6)


def test_a_wild_checkpoint_gets_every_published_waypoint_clipped_to_the_box(ros_domain, tmp_path):
    from openhelix_core.models.system1 import DiffuserActor, Normalization, System1Config

    wild = DiffuserActor(System1Config.tiny(), Normalization(gripper_loc_bounds=((-20.0,) * 3, (20.0,) * 3)))
    wild.save_pretrained(tmp_path / "wild")
    with launched_with_robot({"controller"}, ros_domain, tmp_path,
                             overrides={"controller": {"checkpoint": str(tmp_path / "wild")}}) as (
            recorder, robot, processes):
        assert recorder.spin_until(lambda: len(recorder.chunks) >= 5 and recorder.controller_status().get(
            "clipped_workspace"), STARTUP_TIMEOUT_S, processes, also=[robot]), logs(processes)
        low, high = np.array([-0.8, -0.8, 0.0]), np.array([0.8, 0.8, 1.2])
        waypoints = np.array([[p.position.x, p.position.y, p.position.z] for chunk in recorder.chunks for p in chunk.poses])
        commands = np.array([[c.pose.position.x, c.pose.position.y, c.pose.position.z] for c in recorder.commands])
        assert np.all((waypoints >= low) & (waypoints <= high)), "a published waypoint lies outside the box"
        assert len(commands) == 0 or np.all((commands >= low) & (commands <= high))


def test_a_driver_requesting_an_incompatible_qos_is_an_error_on_diagnostics(controller_and_robot):
    recorder, robot, processes = controller_and_robot
    # A ros2_control-style reliable reader matches the command stream (reliable, volatile, keep last 1) ...
    reliable_commands = []
    recorder.create_subscription(PoseStamped, topics.POSE_COMMAND, reliable_commands.append,
                                 QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE))
    # ... a reader asking for the history of a latched topic cannot.
    recorder.create_subscription(PoseStamped, topics.POSE_COMMAND, lambda msg: None,
                                 QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                                            durability=DurabilityPolicy.TRANSIENT_LOCAL))
    key = f"incompatible_qos {topics.POSE_COMMAND}"
    assert recorder.spin_until(lambda: key in recorder.controller_status(), 60, processes, also=[robot])
    assert recorder.levels["openhelix/controller"] == DiagnosticStatus.ERROR
    assert recorder.spin_until(lambda: reliable_commands, 60, processes, also=[robot])


def test_commands_keep_flowing_and_estop_acts_while_a_slow_system1_computes(ros_domain, tmp_path):
    with slow_controller(ros_domain, tmp_path, inference_delay_s="0.3") as (recorder, robot, processes):
        wait_acting(recorder, robot, processes)
        arrivals = []  # (chunks, commands) counted whenever a chunk arrives
        recorder.create_subscription(TrajectoryChunk, topics.TRAJECTORY_CHUNK,
                                     lambda msg: arrivals.append(len(recorder.commands)), RELIABLE)
        assert recorder.spin_until(lambda: len(arrivals) >= 6, 120, processes, also=[robot])
        between = np.diff(arrivals[1:])
        print(f"pose commands between consecutive chunks (0.3 s System 1): {between.tolist()}")
        assert np.median(between) >= 4, "the command stream waited for System 1"
        response = call(recorder, robot, processes, Trigger, "/controller/engage_estop", Trigger.Request())
        acknowledged = recorder.get_clock().now().nanoseconds * 1e-9
        assert response.success
        recorder.spin_for(2.0, processes, also=[robot])  # the call in flight ends in this time
        late = [c for c in recorder.commands if stamp_to_seconds(c.header.stamp) > acknowledged]
        assert not late, f"{len(late)} commands after the e-stop was acknowledged"
        assert_quiet(recorder, robot, processes)


def test_a_chunk_whose_observation_went_stale_during_inference_is_dropped(ros_domain, tmp_path):
    with slow_controller(ros_domain, tmp_path, inference_delay_s="1.2") as (recorder, robot, processes):
        assert recorder.spin_until(lambda: recorder.refusals("stale_after_inference") >= 2, STARTUP_TIMEOUT_S,
                                   processes, also=[robot]), logs(processes)
        assert (len(recorder.chunks), len(recorder.commands)) == (0, 0)


def test_deactivation_during_inference_drops_its_result_and_sigint_stops_the_worker(ros_domain, tmp_path):
    with slow_controller(ros_domain, tmp_path, inference_delay_s="0.3") as (recorder, robot, processes):
        wait_acting(recorder, robot, processes)
        transition(recorder, robot, processes, "controller", Transition.TRANSITION_DEACTIVATE)
        chunks = len(recorder.chunks)
        recorder.spin_for(2.0, processes, also=[robot])  # longer than the call that was in flight
        assert len(recorder.chunks) == chunks, "a chunk computed before deactivation was published"
        transition(recorder, robot, processes, "controller", Transition.TRANSITION_ACTIVATE)
        wait_acting(recorder, robot, processes)
        assert processes.stop() == {"controller": 0}  # SIGINT while System 1 computes: a clean exit


def test_the_planner_answers_while_system2_computes(ros_domain, tmp_path):
    with launched_with_robot({"planner"}, ros_domain, tmp_path,
                             overrides={"planner": {"inference_delay_s": "3.0"}}) as (recorder, robot, processes):
        recorder.pump_goals = False  # the goals counted are the planner's
        instruction = recorder.create_publisher(String, topics.INSTRUCTION, LATCHED)
        instruction.publish(String(data="open the drawer"))
        assert recorder.spin_until(lambda: len(recorder.goals) >= 1, STARTUP_TIMEOUT_S, processes, also=[robot])
        client = AsyncParameterClient(recorder, "planner")
        assert client.wait_for_services(timeout_sec=30)
        for _ in range(3):  # each answer comes while the next 3-s System 2 call runs
            goals = len(recorder.goals)
            assert recorder.spin_until(lambda: recorder.diagnostics.get("openhelix/planner", {}).get("planning")
                                       == "True", 30, processes, also=[robot])
            future = client.get_parameters(["rate_hz"])
            state = call(recorder, robot, processes, GetState, "/planner/get_state", GetState.Request())
            assert recorder.spin_until(future.done, 30, processes, also=[robot])
            assert state.current_state.label == "active" and future.result().values[0].double_value == 2.0
            assert len(recorder.goals) == goals, "the answers waited for System 2"
            assert recorder.spin_until(lambda: len(recorder.goals) > goals, 30, processes, also=[robot])
