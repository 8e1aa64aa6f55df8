"""The planner and the controller run on an OpenHelix release given by ``release_dir``.

The release is written by the test in the published layout from the tiny models
(``release_architecture: tiny``); nothing published is that small. Waits are event-driven.
"""
import sys

import pytest
from lifecycle_msgs.msg import State
from lifecycle_msgs.srv import GetState
from ros_test_harness import REPO, STARTUP_TIMEOUT_S, Recorder, launch, launched_with_robot, logs
from std_msgs.msg import String

from openhelix_core.models.system1 import CALVIN_ACTION_POSITION_BOUNDS_ABC_D
from openhelix_ros import topics
from openhelix_ros.qos import LATCHED

sys.path.insert(0, str(REPO / "tests" / "openhelix_core"))
from release_layout import tiny_release_actor, tiny_release_planner, write_release  # noqa: E402

pytestmark = pytest.mark.integration
VARIANT = "prompt_tuning_aux"


def full_log(processes, name: str) -> str:
    return processes.log_files[name].read_text(errors="replace")


def test_both_nodes_load_their_system_of_the_release_and_chunks_follow_its_goals(ros_domain, tmp_path):
    root = write_release(tmp_path / "openhelix", tiny_release_planner(), tiny_release_actor(), VARIANT,
                         with_tokenizer=True)
    release = {"release_dir": str(root), "release_variant": VARIANT, "release_architecture": "tiny"}
    model_id = f"openhelix/{VARIANT}/{root}"
    with launched_with_robot({"planner", "controller"}, ros_domain, tmp_path / "logs",
                             {"planner": release, "controller": release}) as (recorder, robot, processes):
        recorder.pump_goals = False  # every goal comes from the planner
        recorder.create_publisher(String, topics.INSTRUCTION, LATCHED).publish(String(data="open the drawer"))

        def chunks_on_release_goals():
            release_goals = {goal.sequence for goal in recorder.goals if goal.model_id == model_id}
            return [chunk for chunk in recorder.chunks if chunk.goal_sequence in release_goals]

        assert recorder.spin_until(lambda: len(chunks_on_release_goals()) >= 2, STARTUP_TIMEOUT_S, processes,
                                   also=[robot]), f"goals {[g.model_id for g in recorder.goals]}; {logs(processes)}"
        assert {goal.model_id for goal in recorder.goals} == {model_id}
        assert len(recorder.goals[0].embedding) == 512
        low, high = CALVIN_ACTION_POSITION_BOUNDS_ABC_D
        for pose in chunks_on_release_goals()[0].poses:
            position = (pose.position.x, pose.position.y, pose.position.z)
            assert all(lo - 1e-6 <= value <= hi + 1e-6 for lo, value, hi in zip(low, position, high)), position
        planner_log, controller_log = full_log(processes, "planner"), full_log(processes, "controller")
        shards = root / VARIANT / "llava_ckpt_safetensors"
        for part in ("llava", "system2_heads"):
            assert f"key mapping ({part}): {shards}: " in planner_log
        assert f"key mapping (system1): {root / VARIANT / 'policy.pth'}: " in controller_log
        assert planner_log.count(", 0 missing, 0 unexpected, 0 shape-mismatched") == 2
        assert ", 0 missing, 0 unexpected, 0 shape-mismatched" in controller_log
        assert "System 2 warm-up call" in planner_log
        assert f"System 1 '{model_id}' loaded" in controller_log and f"System 2 '{model_id}' loaded" in planner_log


def test_a_missing_release_fails_configure_with_the_cause_and_the_nodes_stay_up(ros_domain, tmp_path):
    missing = tmp_path / "not_downloaded"
    recorder = Recorder()
    processes = launch({"planner", "controller"}, ros_domain, tmp_path / "logs",
                       {name: {"release_dir": str(missing)} for name in ("planner", "controller")})
    cause = f"OpenHelix release directory '{missing}' does not exist"
    try:
        def both_failed():
            return all(f"cannot load System {system}: {cause}" in full_log(processes, name)
                       for name, system in (("planner", 2), ("controller", 1)))

        assert recorder.spin_until(both_failed, STARTUP_TIMEOUT_S, processes), logs(processes)
        for name in ("planner", "controller"):
            client = recorder.create_client(GetState, f"/{name}/get_state")
            assert client.wait_for_service(timeout_sec=30), f"{name} serves no get_state"
            future = client.call_async(GetState.Request())
            assert recorder.spin_until(future.done, 30, processes), f"{name} did not answer get_state"
            assert future.result().current_state.id == State.PRIMARY_STATE_UNCONFIGURED
            assert "Traceback" not in full_log(processes, name)
        assert not processes.exited()
    finally:
        processes.stop()
        recorder.destroy_node()
