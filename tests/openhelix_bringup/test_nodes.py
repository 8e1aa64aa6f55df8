"""The real nodes as separate processes, talking through ROS topics.

Each test runs in its own ROS domain so that parallel runs and a demo on the same machine
never cross-talk. Waits are generous and event-driven: the machine may be loaded.
"""
import pytest
from ros_test_harness import STARTUP_TIMEOUT_S, Recorder, launch, logs

from openhelix_msgs.msg import GoalEmbedding

pytestmark = pytest.mark.integration


def test_chunks_carry_the_sequence_of_a_goal_the_planner_published(ros_domain, tmp_path):
    recorder = Recorder()
    processes = launch({"sim_bridge", "planner", "controller"}, ros_domain, tmp_path)
    try:
        def conditioned():
            published = {g.sequence for g in recorder.goals}
            return [c for c in recorder.chunks if c.goal_sequence in published]

        assert recorder.spin_until(lambda: len(conditioned()) >= 3, STARTUP_TIMEOUT_S, processes), \
            f"no chunk conditioned on a published goal; goals {len(recorder.goals)}, " \
            f"chunks {len(recorder.chunks)}; logs: {logs(processes)}"
        chunk = conditioned()[0]
        assert len(chunk.poses) == len(chunk.gripper_openness) == len(chunk.time_from_start) > 0
        assert chunk.header.frame_id == "world"
        goal = next(g for g in recorder.goals if g.sequence == chunk.goal_sequence)
        assert chunk.goal_instruction == goal.instruction == "open the drawer"
        assert len(goal.embedding) == 512 and goal.model_id.startswith("system2/")
        assert recorder.spin_until(
            lambda: int(recorder.diagnostics.get("openhelix/sim_bridge", {}).get("steps_executed", 0)) > 0,
            STARTUP_TIMEOUT_S, processes), "the sim bridge never executed a waypoint"
    finally:
        codes = processes.stop()
        recorder.destroy_node()
    assert all(code in (0, -2) for code in codes.values()), f"unclean shutdown {codes}"


def test_controller_refuses_a_goal_of_the_wrong_size_and_acts_on_a_valid_one(ros_domain, tmp_path):
    recorder = Recorder()
    processes = launch({"sim_bridge", "controller"}, ros_domain, tmp_path)
    try:
        def controller_status():
            return recorder.diagnostics.get("openhelix/controller", {})

        def controller_listens():
            return bool(controller_status()) and recorder.goal_publisher.get_subscription_count() > 0

        assert recorder.spin_until(controller_listens, STARTUP_TIMEOUT_S, processes), logs(processes)
        recorder.goal_publisher.publish(GoalEmbedding(sequence=41, instruction="bad", embedding=[0.5] * 511))
        assert recorder.spin_until(lambda: int(controller_status().get("refused_invalid_goal", 0)) > 0, 60,
                                   processes), recorder.diagnostics
        assert recorder.chunks == [], "the controller acted on a goal of the wrong size"

        recorder.publish_goal(42)
        assert recorder.spin_until(lambda: len(recorder.chunks) >= 2, STARTUP_TIMEOUT_S, processes), \
            logs(processes)
        assert {c.goal_sequence for c in recorder.chunks} == {42}
        assert recorder.chunks[0].goal_instruction == "lift the red block"
    finally:
        processes.stop()
        recorder.destroy_node()


def test_visual_feedback_shows_the_consumed_point_cloud_and_the_planned_path(ros_domain, tmp_path):
    from ros_test_harness import FakeRobot
    from sensor_msgs.msg import PointCloud2
    from visualization_msgs.msg import MarkerArray

    from openhelix_ros import topics

    recorder, robot = Recorder(), FakeRobot(rate_hz=10.0)
    clouds, paths = [], []
    recorder.create_subscription(PointCloud2, topics.POLICY_POINT_CLOUD, clouds.append, 1)
    recorder.create_subscription(MarkerArray, topics.POLICY_MARKERS, paths.append, 1)
    processes = launch({"controller"}, ros_domain, tmp_path,
                       overrides={"controller": {"publish_point_cloud": "true", "publish_markers": "true"}})
    recorder.pump_goals = True
    try:
        assert recorder.spin_until(lambda: clouds and paths and recorder.chunks, STARTUP_TIMEOUT_S, processes,
                                   also=[robot]), logs(processes)
        cloud = clouds[-1]
        assert cloud.header.frame_id == "world" and cloud.width > 0 and [f.name for f in cloud.fields][:3] == \
            ["x", "y", "z"]
        path = paths[-1].markers[0]
        assert len(path.points) == len(recorder.chunks[-1].poses)
    finally:
        processes.stop()
        recorder.destroy_node()
        robot.destroy_node()


def test_controller_takes_camera_poses_and_the_tcp_from_tf_and_refuses_missing_or_stale_transforms(ros_domain,
                                                                                                   tmp_path):
    from ros_test_harness import FakeRobot, launched_with_robot

    overrides = {"controller": {"extrinsics_source": "tf", "ee_pose_source": "tf", "max_transform_age_s": "0.2"}}
    with launched_with_robot({"controller"}, ros_domain, tmp_path, overrides, rate_hz=10.0) as (recorder, robot,
                                                                                                processes):
        assert isinstance(robot, FakeRobot)
        status = recorder.messages
        assert recorder.spin_until(lambda: "TCP from TF: cannot look up 'tcp' in 'world': no transform" in
                                   status.get("openhelix/controller", ""),
                                   STARTUP_TIMEOUT_S, processes, also=[robot]), (status, logs(processes))
        assert not recorder.commands

        robot.tf_age_s = 0.05  # a robot_state_publisher slightly behind the cameras
        assert recorder.spin_until(lambda: len(recorder.commands) >= 5, 120.0, processes, also=[robot]), \
            (status, logs(processes))

        robot.tf_age_s = 1.0  # TF stalls: the TCP is known only as it was a second before the images
        assert recorder.spin_until(lambda: "older than the time asked for" in status.get("openhelix/controller", ""),
                                   60.0, processes, also=[robot]), (status, logs(processes))
        recorder.spin_for(1.0, processes, also=[robot])
        stopped_at = len(recorder.commands)
        recorder.spin_for(2.0, processes, also=[robot])
        assert len(recorder.commands) == stopped_at, "commands went on while the TCP's transform was stale"


def test_gripper_joints_may_come_from_their_own_topic(ros_domain, tmp_path):
    from ros_test_harness import launched_with_robot

    overrides = {"controller": {"gripper_joint_states_topic": "/gripper/joint_states"}}
    with launched_with_robot({"controller"}, ros_domain, tmp_path, overrides, rate_hz=10.0) as (recorder, robot,
                                                                                                processes):
        status = recorder.messages
        assert recorder.spin_until(lambda: "no gripper_joint_states received yet" in
                                   status.get("openhelix/controller", ""), STARTUP_TIMEOUT_S, processes,
                                   also=[robot]), (status, logs(processes))
        assert not recorder.commands
        robot.publish_gripper_joints_on("/gripper/joint_states")
        assert recorder.spin_until(lambda: len(recorder.commands) >= 5, 120.0, processes, also=[robot]), \
            (status, logs(processes))
