"""The controller's sim configuration describes the simulator it is used with."""
from pathlib import Path

import numpy as np
import pytest
import yaml

from openhelix_ros.observation import camera_mounts_from_parameters
from openhelix_sim.envs import PlayTableEnv

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def env():
    with PlayTableEnv(seed=0, render_static=False, render_gripper=False) as environment:
        environment.reset(seed=0)
        yield environment


def test_sim_camera_extrinsics_match_the_play_table(env):
    parameters = yaml.safe_load((REPO / "config" / "controller_sim.yaml").read_text())["controller"]["ros__parameters"]
    cameras = {c.name: c for c in camera_mounts_from_parameters(
        parameters["camera_names"], parameters["camera_mounts"], parameters["camera_extrinsics"])}
    assert cameras["static"].mount == "base" and cameras["gripper"].mount == "ee"
    np.testing.assert_allclose(cameras["static"].optical_to_mount, env.camera_to_base("static"), atol=1e-4)
    np.testing.assert_allclose(cameras["gripper"].optical_to_mount, env.camera_to_tcp("gripper"), atol=1e-4)


def test_gripper_joint_configuration_matches_the_play_table(env):
    parameters = yaml.safe_load((REPO / "config" / "controller_sim.yaml").read_text())["controller"]["ros__parameters"]
    assert set(parameters["gripper_joint_names"]) <= set(env.joint_names())
    widths = dict(zip(env.joint_names(), env.joint_positions()))
    width = sum(widths[name] for name in parameters["gripper_joint_names"])
    assert width / parameters["gripper_max_width"] == pytest.approx(env.gripper_openness(), abs=1e-3)
