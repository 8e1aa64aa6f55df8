"""Launch files name things that exist, and every parameter file loads into its node."""
import argparse
import importlib
from pathlib import Path

import pytest
import yaml

from openhelix_core.runtime.planner import goal_model_id
from openhelix_ros.launching import LaunchError, parse_launch_file
from openhelix_ros.parameters import ParameterError, validate_values
from openhelix_ros.security import ENCLAVES
from openhelix_sim.task_set import DEFAULT_TASKS, EVAL_EPISODES_PER_TASK, EVAL_SEED_OFFSET

REPO = Path(__file__).resolve().parents[2]
LAUNCH_FILES = sorted((REPO / "launch").glob("*.launch.xml"))
NODE_MODULES = {
    ("openhelix_ros", "planner"): "openhelix_ros.planner_node",
    ("openhelix_ros", "controller"): "openhelix_ros.controller_node",
    ("sim_bridge", "sim_bridge"): "sim_bridge.sim_bridge_node",
    ("sim_bridge", "demo_robot"): "sim_bridge.demo_robot_node",
    ("openhelix_ros", "bag_player"): "openhelix_ros.bags.player_node",
    ("openhelix_ros", "recorder"): "openhelix_ros.bags.recorder_node",
}
BUILTIN_PARAMETERS = {"use_sim_time"}


def node_specs(package: str, executable: str):
    return importlib.import_module(NODE_MODULES[(package, executable)]).PARAMETERS


def parameters_for(parameter_file: str, node_name: str) -> dict:
    document = yaml.safe_load(Path(parameter_file).read_text())
    assert node_name in document, f"{parameter_file} has no section for node '{node_name}'"
    return document[node_name]["ros__parameters"]


def launched_values(node) -> dict:
    """The parameters a launched node gets: its files, then its inline values (YAML, where an
    empty value is an empty string, as ros2 launch and parse_launch_file pass it)."""
    values = {}
    for parameter_file in node.parameter_files:
        values.update(parameters_for(parameter_file, node.name))
    values.update({k: yaml.safe_load(v) if v else "" for k, v in node.parameters.items()
                   if k not in BUILTIN_PARAMETERS})
    return values


def test_there_are_launch_files_for_arm_sim_and_bag_replay():
    assert {p.name for p in LAUNCH_FILES} >= {"robot.launch.xml", "sim.launch.xml", "bag_replay.launch.xml"}


@pytest.mark.parametrize("launch_file", LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_file_nodes_exist_and_their_parameters_validate(launch_file):
    nodes = parse_launch_file(launch_file)
    assert nodes, f"{launch_file.name} starts no node"
    for node in nodes:
        assert node.executable_path().is_file()
        validate_values(node_specs(node.package, node.executable), launched_values(node))


def test_record_demos_nodes_exist_and_their_parameters_validate(tmp_path, capsys):
    from openhelix_bringup.cli import main
    from openhelix_bringup.demo_commands import add_demo_commands, demo_nodes

    with pytest.raises(SystemExit) as exit_info:
        main(["record-demos", "--help"])
    assert exit_info.value.code == 0 and "--episodes-per-task" in capsys.readouterr().out
    parser = argparse.ArgumentParser()
    add_demo_commands(parser.add_subparsers())
    options = parser.parse_args(["record-demos", str(tmp_path / "bag"), "--tasks", "turn_on_led", "open_drawer",
                                 "--episodes-per-task", "3", "--seed", "7", "--storage", "mcap", "--camera-rate", "10",
                                 "--state-rate", "50"])
    nodes = demo_nodes(options, tmp_path / "bag")
    assert [(n.package, n.executable) for n in nodes] == [("openhelix_ros", "recorder"), ("sim_bridge", "demo_robot")]
    for node in nodes:
        assert node.executable_path().is_file()
        values = validate_values(node_specs(node.package, node.executable), launched_values(node))
        if node.executable == "demo_robot":
            assert values["tasks"] == "turn_on_led,open_drawer" and values["episodes_per_task"] == 3
            assert (values["seed"], values["camera_rate_hz"], values["state_rate_hz"]) == (7, 10.0, 50.0)
        else:
            assert values["storage"] == "mcap" and "/openhelix/static_transforms" in values["topics"]


@pytest.mark.parametrize("config_file", sorted((REPO / "config").glob("*.yaml")), ids=lambda p: p.name)
def test_every_parameter_file_validates_against_its_node(config_file):
    document = yaml.safe_load(config_file.read_text())
    executables = {"planner": ("openhelix_ros", "planner"), "controller": ("openhelix_ros", "controller"),
                   "sim_bridge": ("sim_bridge", "sim_bridge")}
    for node_name, section in document.items():
        assert node_name in executables, f"{config_file.name}: unknown node '{node_name}'"
        validate_values(node_specs(*executables[node_name]), section["ros__parameters"])


def test_installed_config_and_launch_are_the_repository_files():
    from ament_index_python.packages import get_package_share_directory
    share = Path(get_package_share_directory("openhelix_bringup"))
    for folder in ("launch", "config"):
        for source in (REPO / folder).iterdir():
            installed = share / folder / source.name
            assert installed.is_file(), f"{source.name} is not installed (re-run scripts/setup)"
            assert installed.read_bytes() == source.read_bytes()


def test_parameter_validation_names_every_problem():
    specs = node_specs("openhelix_ros", "planner")
    with pytest.raises(ParameterError) as error:
        validate_values(specs, {"rate_hz": -1.0, "preset": "huge", "typo_param": 1})
    text = str(error.value)
    assert "'rate_hz': must be > 0" in text and "'preset': must be one of" in text
    assert "'typo_param': unknown parameter" in text
    assert validate_values(specs, {"rate_hz": 3})["rate_hz"] == 3.0


def test_launch_parser_is_strict(tmp_path):
    bad = tmp_path / "bad.launch.xml"
    bad.write_text('<launch><group><node pkg="openhelix_ros" exec="planner"/></group></launch>')
    with pytest.raises(LaunchError, match="<group>"):
        parse_launch_file(bad)
    with pytest.raises(LaunchError, match="no <arg> named"):
        parse_launch_file(REPO / "launch" / "sim.launch.xml", {"max_step": "3"})
    missing = tmp_path / "missing.launch.xml"
    missing.write_text('<launch><node pkg="openhelix_ros" exec="planner"><param from="/nope.yaml"/></node></launch>')
    with pytest.raises(LaunchError, match="does not exist"):
        parse_launch_file(missing)
    node = parse_launch_file(REPO / "launch" / "sim.launch.xml", {"max_steps": "5"})[0]
    assert node.parameters["max_steps"] == "5"
    command = node.command()
    assert "max_steps:=5" in command
    assert command[command.index("--params-file") + 1].endswith("sim_bridge.yaml")
    assert "__node:=sim_bridge" in command


@pytest.mark.parametrize("launch_file, expected", [
    ("planner_server.launch.xml", {"planner": "/openhelix/planner"}),
    ("robot_pc.launch.xml", {"controller": "/openhelix/controller"}),
    ("robot.launch.xml", {"planner": "/openhelix/planner", "controller": "/openhelix/controller"}),
    ("sim.launch.xml", {"sim_bridge": "/openhelix/sim_bridge", "planner": "/openhelix/planner",
                        "controller": "/openhelix/controller"}),
])
def test_nodes_run_in_the_keystore_enclaves(launch_file, expected):
    nodes = parse_launch_file(REPO / "launch" / launch_file)
    enclaves = {}
    for node in nodes:
        command = node.command()
        ros_arguments = command[command.index("--ros-args") + 1:]
        assert ros_arguments[0] == "--enclave", command
        enclaves[node.name] = ros_arguments[1]
    assert enclaves == expected
    assert set(enclaves.values()) <= set(ENCLAVES)


def test_launch_ros_args_reach_the_node_and_the_enclave_can_be_chosen(tmp_path):
    node = parse_launch_file(REPO / "launch" / "robot_pc.launch.xml", {"controller_enclave": "/site/arm1"})[0]
    assert node.ros_arguments == ["--enclave", "/site/arm1"]
    custom = tmp_path / "custom.launch.xml"
    custom.write_text('<launch><arg name="level" default="debug"/><node pkg="openhelix_ros" exec="planner" '
                      'args="--extra" ros_args="--log-level $(var level) --enclave /a/b"/></launch>')
    command = parse_launch_file(custom)[0].command()
    assert command[1:8] == ["--extra", "--ros-args", "--log-level", "debug", "--enclave", "/a/b", "-r"]


def test_evaluation_launch_repeats_the_task_set_exactly():
    """An XML launch file cannot import openhelix_sim.task_set, and ros2 launch has no way to leave
    a parameter unset when an argument is not given, so calvin_eval.launch.xml spells out the tasks
    and the first held-out seed; they must be the sim bridge's defaults, which are the task set."""
    [bridge] = [node for node in parse_launch_file(REPO / "launch" / "calvin_eval.launch.xml")
                if node.name == "sim_bridge"]
    launched = launched_values(bridge)
    defaults = {spec.name: spec.default for spec in node_specs("sim_bridge", "sim_bridge")}
    assert defaults["tasks"] == ",".join(DEFAULT_TASKS) and defaults["task_first_seed"] == EVAL_SEED_OFFSET
    assert defaults["task_episodes"] == EVAL_EPISODES_PER_TASK
    for name in ("tasks", "task_first_seed", "task_episodes", "task_scene_variation"):
        assert launched[name] == defaults[name], f"calvin_eval.launch.xml: {name} {launched[name]!r}"


def test_robot_controller_accepts_only_the_robot_planner_goals():
    planner = parameters_for(str(REPO / "config" / "planner_robot.yaml"), "planner")
    controller = parameters_for(str(REPO / "config" / "controller_robot.yaml"), "controller")
    expected = goal_model_id(planner["checkpoint"], planner["preset"], planner["seed"])
    assert controller["expected_goal_model_id"] == expected == "system2/llava_7b//opt/openhelix/checkpoints/system2"


@pytest.mark.parametrize("launch_file, names", [("robot.launch.xml", ("planner", "controller")),
                                               ("sim.launch.xml", ("planner", "controller")),
                                               ("planner_server.launch.xml", ("planner",)),
                                               ("robot_pc.launch.xml", ("controller",))])
def test_release_arguments_reach_planner_and_controller(launch_file, names):
    by_default = {node.name: node for node in parse_launch_file(REPO / "launch" / launch_file)}
    given = {node.name: node for node in parse_launch_file(
        REPO / "launch" / launch_file, {"release_dir": "/data/openhelix", "release_variant": "prompt_tuning"})}
    for name in names:
        specs = node_specs("openhelix_ros", name)
        default_values = validate_values(specs, launched_values(by_default[name]))
        assert (default_values["release_dir"], default_values["release_variant"]) == ("", "prompt_tuning_aux")
        assert "release_dir:=''" in by_default[name].command()  # rcl rejects "release_dir:=" with no value
        values = validate_values(specs, launched_values(given[name]))
        assert (values["release_dir"], values["release_variant"]) == ("/data/openhelix", "prompt_tuning")
        command = given[name].command()
        assert command.index("release_dir:=/data/openhelix") > command.index("--params-file")
    with pytest.raises(ParameterError, match=r"'release_variant': must be one of \['prompt_tuning', "
                                             r"'prompt_tuning_aux'\], got 'full'"):
        validate_values(node_specs("openhelix_ros", "controller"), {"release_variant": "full"})
    with pytest.raises(ParameterError, match="'release_dir': ' /data/openhelix' starts or ends with whitespace"):
        validate_values(node_specs("openhelix_ros", "planner"), {"release_dir": " /data/openhelix"})


def test_prompt_question_parameter():
    specs = node_specs("openhelix_ros", "planner")
    assert validate_values(specs, {})["prompt_question"] == ""
    for value in ("random", "0", "1"):
        assert validate_values(specs, {"prompt_question": value})["prompt_question"] == value
    for value in ("first", "-1", " 1"):
        with pytest.raises(ParameterError, match="'prompt_question': must be '', 'random' or a question index"):
            validate_values(specs, {"prompt_question": value})
