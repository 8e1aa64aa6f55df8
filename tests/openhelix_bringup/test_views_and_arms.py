"""The RViz config and the Foxglove layout show only topics the nodes publish, and the per-arm
parameter files are complete controller parameter files.

Which topics exist is read from the code, not listed here: the names in openhelix_ros/topics.py,
the topic parameters' defaults of the nodes that publish (controller, planner, sim bridge, demo
robot) and the transforms. No rclpy.init: the nodes' modules are only imported.
"""
import ast
import fnmatch
import importlib
import json
import re
from pathlib import Path

import pytest
import yaml
from rclpy.qos import ReliabilityPolicy, qos_profile_sensor_data

from openhelix_core.runtime.planner import goal_model_id
from openhelix_ros import topics
from openhelix_ros.parameters import validate_values

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "openhelix_bringup" / "config"
RVIZ = CONFIG / "openhelix.rviz"
FOXGLOVE = CONFIG / "openhelix_foxglove.json"
ARM_FILES = ("arm_franka.yaml", "arm_ur.yaml", "arm_xarm.yaml")
PUBLISHING_NODES = ("openhelix_ros.controller_node", "openhelix_ros.planner_node", "sim_bridge.sim_bridge_node",
                    "sim_bridge.demo_robot_node")
TRANSFORMS = {"/tf", "/tf_static"}
# Named in topics.py, published by no node: the e-stop is the operator's input, and the sim bridge
# reports its status on /diagnostics.
NOT_PUBLISHED = {topics.ESTOP, topics.SIM_STATUS}
# What each view is for (README "Fitting your robot stack").
CAMERA_IMAGES = {topics.camera_color("static"), topics.camera_color("gripper")}
RVIZ_SHOWS = CAMERA_IMAGES | {topics.POLICY_POINT_CLOUD, topics.POLICY_MARKERS, topics.POSE_COMMAND, topics.EE_POSE}
FOXGLOVE_SHOWS = CAMERA_IMAGES | {topics.POLICY_POINT_CLOUD, topics.POLICY_MARKERS, topics.POSE_COMMAND,
                                  topics.GRIPPER_COMMAND, topics.GOAL_AGE, topics.DIAGNOSTICS}
# Published best effort (the sim bridge's sensors with qos_profile_sensor_data): a Reliable reader never
# receives them. (A Best Effort reader of the reliable command streams is fine too.)
BEST_EFFORT = CAMERA_IMAGES | {topics.EE_POSE}


def node_parameters(module: str) -> dict:
    return {spec.name: spec for spec in importlib.import_module(module).PARAMETERS}


def published_topics() -> set[str]:
    names = {value for name, value in vars(topics).items() if name.isupper() and isinstance(value, str)}
    cameras = set(node_parameters("openhelix_ros.controller_node")["camera_names"].default)
    cameras |= set(importlib.import_module("sim_bridge.sim_bridge_node").CAMERAS)
    names |= {name(camera) for camera in cameras for name in (topics.camera_color, topics.camera_depth, topics.camera_info)}
    for module in PUBLISHING_NODES:
        names |= {spec.default for spec in node_parameters(module).values()
                  if spec.name.endswith("_topic") and isinstance(spec.default, str) and spec.default}
    return (names - NOT_PUBLISHED) | TRANSFORMS


def default_base_frame() -> str:
    frames = {node_parameters(module)["base_frame"].default for module in PUBLISHING_NODES
              if "base_frame" in node_parameters(module)}
    assert len(frames) == 1, f"the nodes disagree on the default base frame: {frames}"
    return frames.pop()


def test_published_topics_are_the_nodes_outputs():
    published = published_topics()
    assert {topics.POLICY_POINT_CLOUD, topics.POLICY_MARKERS, topics.GOAL_AGE, topics.camera_depth("gripper"),
            "/tf_static"} <= published
    assert not published & NOT_PUBLISHED and "/openhelix/nothing" not in published


# RViz -------------------------------------------------------------------------------------------

def rviz_displays() -> list[dict]:
    return yaml.safe_load(RVIZ.read_text())["Visualization Manager"]["Displays"]


def test_rviz_config_shows_only_published_topics():
    named = {display["Topic"]["Value"] for display in rviz_displays() if "Topic" in display}
    assert named <= published_topics(), f"not published by any node: {sorted(named - published_topics())}"
    assert named >= RVIZ_SHOWS, f"missing: {sorted(RVIZ_SHOWS - named)}"


def test_rviz_config_uses_default_plugins_and_the_default_base_frame():
    displays = rviz_displays()
    classes = {display["Class"] for display in displays}
    assert all(name.startswith("rviz_default_plugins/") for name in classes), classes
    assert {f"rviz_default_plugins/{name}" for name in ("TF", "Image", "PointCloud2", "MarkerArray", "Pose")} <= classes
    for display in displays:
        if display["Class"] == "rviz_default_plugins/Image":
            assert display["Topic"]["Value"] in CAMERA_IMAGES, "the images shown are the color images"
        if display["Class"] == "rviz_default_plugins/Pose":
            assert display["Topic"]["Value"] in {topics.POSE_COMMAND, topics.EE_POSE}
    options = yaml.safe_load(RVIZ.read_text())["Visualization Manager"]["Global Options"]
    assert options["Fixed Frame"] == default_base_frame() == "world"


def test_rviz_reads_best_effort_topics_best_effort():
    assert qos_profile_sensor_data.reliability == ReliabilityPolicy.BEST_EFFORT  # the sim bridge's sensors
    for display in rviz_displays():
        if "Topic" in display and display["Topic"]["Value"] in BEST_EFFORT:
            assert display["Topic"]["Reliability Policy"] == "Best Effort", display["Name"]


# Foxglove ---------------------------------------------------------------------------------------

def foxglove_layout() -> dict:
    return json.loads(FOXGLOVE.read_text())


def topic_of(message_path: str) -> str:
    """``/topic.field[0]{x==1}`` -> ``/topic`` (Foxglove message path syntax)."""
    return re.match(r"/[A-Za-z0-9_/~]*", message_path).group(0)


def named_topics(node) -> set[str]:
    """Every topic a layout names: message paths, topic fields, and the 3D panel's topic keys."""
    if isinstance(node, dict):
        return {topic_of(key) for key in node if key.startswith("/")}.union(*map(named_topics, node.values()))
    if isinstance(node, list):
        return set().union(*map(named_topics, node))
    return {topic_of(node)} if isinstance(node, str) and node.startswith("/") else set()


def layout_panels(tree) -> list[str]:
    if isinstance(tree, str):
        return [tree]
    return layout_panels(tree["first"]) + layout_panels(tree["second"])


def test_foxglove_layout_is_complete():
    layout = foxglove_layout()
    assert {"configById", "layout", "globalVariables", "userNodes", "playbackConfig"} <= set(layout)
    panels = layout_panels(layout["layout"])
    assert sorted(panels) == sorted(layout["configById"]), "every panel is placed once and configured"
    kinds = {panel.split("!")[0] for panel in panels}
    assert {"3D", "Image", "Plot", "DiagnosticSummary", "DiagnosticStatusPanel", "RawMessages"} <= kinds
    assert named_topics(["/a/b.c[0].d", {"/e": {"x": "/f{g==1}"}}, "frame"]) == {"/a/b", "/e", "/f"}


def test_foxglove_layout_shows_only_published_topics():
    named = named_topics(foxglove_layout()["configById"])
    assert named <= published_topics(), f"not published by any node: {sorted(named - published_topics())}"
    assert named >= FOXGLOVE_SHOWS, f"missing: {sorted(FOXGLOVE_SHOWS - named)}"


def test_foxglove_panels_show_what_they_are_for():
    config = foxglove_layout()["configById"]
    by_kind = {}
    for panel, settings in config.items():
        by_kind.setdefault(panel.split("!")[0], []).append(settings)
    (scene,) = by_kind["3D"]
    assert scene["followTf"] == default_base_frame()
    assert {topics.POLICY_POINT_CLOUD, topics.POLICY_MARKERS, topics.POSE_COMMAND} <= set(scene["topics"])
    assert {image["imageMode"]["imageTopic"] for image in by_kind["Image"]} == CAMERA_IMAGES
    plotted = {path["value"] for plot in by_kind["Plot"] for path in plot["paths"]}
    assert plotted == {f"{topics.GRIPPER_COMMAND}.data", f"{topics.GOAL_AGE}.data"}  # std_msgs/Float64
    assert [raw["topicPath"] for raw in by_kind["RawMessages"]] == [topics.POSE_COMMAND]
    diagnostics = by_kind["DiagnosticSummary"] + by_kind["DiagnosticStatusPanel"]
    assert {panel["topicToRender"] for panel in diagnostics} == {topics.DIAGNOSTICS}


# Per-arm parameter files ------------------------------------------------------------------------

def arm_parameters(name: str) -> dict:
    document = yaml.safe_load((CONFIG / name).read_text())
    assert list(document) == ["controller"], f"{name}: one controller block, got {list(document)}"
    return document["controller"]["ros__parameters"]


@pytest.mark.parametrize("name", ARM_FILES)
def test_arm_file_validates_against_the_controller(name):
    """Unknown names, wrong types and invalid values all fail here (needs the TF / joint
    trajectory parameters in controller_node.PARAMETERS)."""
    specs = importlib.import_module("openhelix_ros.controller_node").PARAMETERS
    validate_values(specs, arm_parameters(name))


@pytest.mark.parametrize("name", ARM_FILES)
def test_arm_file_accepts_only_the_robot_planner_goals(name):
    planner = yaml.safe_load((CONFIG / "planner_robot.yaml").read_text())["planner"]["ros__parameters"]
    expected = goal_model_id(planner["checkpoint"], planner["preset"], planner["seed"])
    assert arm_parameters(name)["expected_goal_model_id"] == expected


@pytest.mark.parametrize("name", ARM_FILES)
def test_arm_file_keeps_the_policy_cameras_and_commands_one_path(name):
    values = arm_parameters(name)
    defaults = node_parameters("openhelix_ros.controller_node")
    assert values["camera_names"] == defaults["camera_names"].default, "the cameras System 1 was trained with"
    assert len(values["camera_mounts"]) == len(values["camera_names"])
    assert values["base_frame"] and values["base_frame"] != default_base_frame(), "a robot's base, not the sim's"
    if values["joint_trajectory_topic"]:
        assert values["joint_trajectory_topic"].endswith("/joint_trajectory"), "a JointTrajectoryController's input"
        assert values["urdf_path"].startswith("/") and values["urdf_path"].endswith(".urdf")
    if values["extrinsics_source"] == "tf":
        assert len(values["camera_frames"]) == len(values["camera_names"])
        assert all(frame.endswith("_optical_frame") for frame in values["camera_frames"])
    else:
        assert len(values["camera_extrinsics"]) == 7 * len(values["camera_names"])
    if values["ee_pose_source"] == "tf":
        assert values["tcp_frame"]
    assert values["gripper_max_width"] > 0 and values["gripper_joint_names"]


def test_arm_files_cover_pose_commands_joint_trajectories_and_tf():
    files = {name: arm_parameters(name) for name in ARM_FILES}
    assert files["arm_franka.yaml"]["joint_trajectory_topic"] == "" and files["arm_franka.yaml"]["ee_pose_source"] == "topic"
    assert all(files[name]["joint_trajectory_topic"] for name in ("arm_ur.yaml", "arm_xarm.yaml"))
    assert any(values["extrinsics_source"] == "tf" and values["ee_pose_source"] == "tf" for values in files.values())


# Installation and documentation -----------------------------------------------------------------

def test_setup_installs_every_config_file():
    tree = ast.parse((REPO / "openhelix_bringup" / "setup.py").read_text())
    patterns = [argument.value for call in ast.walk(tree) if isinstance(call, ast.Call)
                and getattr(call.func, "id", None) == "files" and call.args and call.args[0].value == "config"
                for argument in call.args[1:]]
    assert patterns, "setup.py installs no config files"
    missing = [path.name for path in CONFIG.iterdir()
               if path.is_file() and not any(fnmatch.fnmatch(path.name, pattern) for pattern in patterns)]
    assert not missing, f"setup.py does not install {missing}"
    assert {RVIZ.name, FOXGLOVE.name, *ARM_FILES} <= {path.name for path in CONFIG.iterdir()}


def test_readme_explains_the_views_and_arm_files():
    readme = (REPO / "README.md").read_text()
    for name in (RVIZ.name, FOXGLOVE.name, *ARM_FILES):
        assert f"config/{name}" in readme, f"README does not mention config/{name}"
