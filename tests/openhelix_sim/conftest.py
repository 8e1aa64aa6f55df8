"""A headless play-table shared by the simulator tests of one module."""
import pytest

from openhelix_sim.envs import PlayTableEnv


@pytest.fixture(scope="module")
def env():
    environment = PlayTableEnv(seed=0, render_static=False, render_gripper=False)
    yield environment
    environment.close()
