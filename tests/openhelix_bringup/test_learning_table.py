"""`openhelix learning-table` is the command that trained the shipped play-table policy
(sim_bridge/checkpoints/play_table_demo, README: "A policy that learns on this machine")."""
import argparse
import json
from pathlib import Path

from openhelix_bringup.learning_table import add_learning_table_command, training_configs
from openhelix_core.training.trainer import load_models_from_checkpoint

REPO = Path(__file__).resolve().parents[2]
CHECKPOINT = REPO / "sim_bridge" / "checkpoints" / "play_table_demo"
#: Where the run wrote (paths differ per machine), whether it drew progress bars (--quiet) and
#: what the configuration gained since.
NOT_COMPARED = {"train_data", "output_dir", "cache_dir", "init_from", "progress", "aux_loss_stages"}


def _defaults() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_learning_table_command(parser.add_subparsers(dest="command"))
    return parser.parse_args(["learning-table"])


def test_the_shipped_checkpoint_was_trained_by_the_documented_command(tmp_path):
    shipped = json.loads((CHECKPOINT / "training_config.json").read_text())
    stage1, stage2 = training_configs(_defaults(), tmp_path / "demos", tmp_path)
    ours = stage2.to_dict()
    differing = {key: (shipped[key], ours[key]) for key in shipped if key not in NOT_COMPARED and shipped[key] != ours[key]}
    assert not differing, f"the learning table's stage 2 differs from the shipped run: {differing}"
    assert set(ours) - set(shipped) <= NOT_COMPARED
    assert stage1.stage == 1 and stage1.aux_loss_stages == [1, 2]  # as the shipped run's stage 1
    system1, _ = load_models_from_checkpoint(CHECKPOINT)
    assert system1.config.prediction_type == "sample" and not system1.config.freeze_backbone
    assert system1.normalization.goal_mean is not None


def test_learning_table_on_calvin_start_states_writes_chain_demos_trains_and_scores_chains(tmp_path):
    """The whole command with --scene-variation calvin, shrunk to seconds: CALVIN-style chain demos,
    both stages, the single tasks and CALVIN's chains in process; results written."""
    from openhelix_bringup.cli import main

    out = tmp_path / "table"
    code = main(["learning-table", "--out", str(out), "--scene-variation", "calvin", "--demo-chains", "1",
                 "--tasks", "open_drawer", "place_in_drawer", "unstack_block", "--workers", "1",
                 "--stage1-steps", "2", "--stage2-steps", "2", "--batch-size", "2",
                 "--static-size", "32", "--gripper-size", "32", "--eval-seeds", "1", "--max-steps", "3",
                 "--variants", "trained", "--eval-chains", "1", "--chain-variants", "trained", "goal zeroed",
                 "--chain-max-steps", "3", "--no-ros-eval", "--quiet"])
    assert code == 0
    info = json.loads((out / "demos" / "training" / "demos_info.json").read_text())
    assert info["scene_variation"] == "calvin" and info["chains"] == 1 and info["kept"]
    report = json.loads((out / "results.json").read_text())
    # one held-out start state per task, unstack_block's after the expert lifted and stacked a block
    assert {task: len(ok) for task, ok in report["results"]["trained"].items()} == {
        "open_drawer": 1, "place_in_drawer": 1, "unstack_block": 1}
    assert set(report["chain_results"]) == {"trained", "goal zeroed"}
    assert all(r["num_sequences"] == 1 for r in report["chain_results"].values())
    assert "CALVIN's chains in process" in (out / "results.md").read_text()


def test_learning_table_from_recorded_bags_converts_trains_and_scores_the_held_out_bag(tmp_path):
    """--demo-source bags, shrunk: the demo robot and the recorder write one bag per task and a
    held-out bag, bag-to-dataset converts the training bags, both stages train on the result only,
    and bag-eval scores the trained policy on the held-out bag."""
    from openhelix_bringup.cli import main
    from openhelix_core.data.calvin_format import CalvinDataset
    from openhelix_core.training.dataset import CameraCalibration
    from openhelix_sim.envs import make_play_table

    out = tmp_path / "table"
    code = main(["learning-table", "--out", str(out), "--demo-source", "bags", "--tasks", "turn_on_led",
                 "--episodes", "1", "--stage1-steps", "2", "--stage2-steps", "2", "--batch-size", "2",
                 "--static-size", "32", "--gripper-size", "32", "--eval-seeds", "1", "--max-steps", "3",
                 "--variants", "trained", "--bag-eval-variants", "trained", "--no-ros-eval", "--quiet"])
    assert code == 0
    assert sorted(p.name for p in (out / "bags").iterdir() if not p.name.endswith("-logs")) == [
        "held_out", "train_turn_on_led"]
    report = json.loads((out / "results.json").read_text())
    conversion = report["conversion"]
    assert conversion["episodes"] == 1 and conversion["state"] == "pose (/ee_pose)"
    assert abs(conversion["rates_hz"]["/cameras/static/color/image_raw"] - 15.0) < 0.5
    assert abs(conversion["rates_hz"]["/joint_states"] - 100.0) < 5.0
    (start, end), = CalvinDataset(out / "demos" / "training").episodes()
    assert end - start + 1 == conversion["frames"]
    # the camera poses came from the robot's static transforms and are the simulator's
    env = make_play_table("embedded", image_size_static=32, image_size_gripper=32)
    try:
        calibration = CameraCalibration.for_split(out / "demos" / "training")
        assert abs(calibration.static_to_base - env.camera_to_base("static")).max() < 1e-6
        assert abs(calibration.gripper_to_tcp - env.camera_to_tcp("gripper")).max() < 1e-6
    finally:
        env.close()
    scored = report["bag_eval_results"]["trained"]
    assert scored["chunks_scored"] > 0 and scored["position_error_m"]["mean"] > 0
