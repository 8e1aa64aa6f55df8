"""The README's main job: `openhelix demo` runs the loop through ROS topics and exits 0."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def test_demo_runs_sim_planner_controller_loop(tmp_path):
    environment = {**os.environ, "ROS_DOMAIN_ID": str(1 + os.getpid() % 100)}
    result = subprocess.run(
        [sys.executable, "-m", "openhelix_ros.cli", "demo", "--steps", "10", "--timeout", "400",
         "--log-dir", str(tmp_path)],
        capture_output=True, text=True, env=environment, timeout=500, cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK: 10 policy steps executed" in result.stdout
    assert "chunks conditioned on a published goal" in result.stdout
    assert list(tmp_path.glob("demo-*/controller.log")), "node logs were not written"
