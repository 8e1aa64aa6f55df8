"""OpenHelix training (openhelix_core.training): reader, stages, exact resume, DDP on CPU."""
import json
import os
import socket
import warnings

import numpy as np
import pytest
import torch

from openhelix_core import geometry
from openhelix_core.data import CalvinDataset, CalvinEpisodeWriter
from openhelix_core.models.system1 import CURRENT_GRIPPER, PCD, RGB, TRAJECTORY, System1Config, System1Processor
from openhelix_core.training import (
    CameraCalibration,
    OpenHelixCalvinDataset,
    TrainingConfig,
    collate,
    discover_keyposes,
    interpolate_trajectory,
    latest_checkpoint,
    train,
)
from openhelix_core.training.cli import build_parser, config_from_args
from openhelix_core.training.dataset import CAMERA_INFO_FILE, intrinsics_from_fov, pose_from_xyz_euler
from openhelix_core.training.trainer import Trainer
from openhelix_core.types import Observation

S1_OVERRIDES = {"diffusion_timesteps": 5}
S2_OVERRIDES = {"system_prompt": "", "prompt_template": "{system}{image}\n{instruction} {act}"}
#: Two short questions (the byte-level tiny tokenizer makes OpenHelix's long prompt slow).
S2_QUESTIONS = {"system_prompt": "", "prompt_template": "{system}{image}\n{question} {act}",
                "question_templates": ["Can you {instruction}?", "Please {instruction}."]}
TASKS = ("open_drawer", "turn_on_led")
SENTENCES = {"open_drawer": "pull the handle to open the drawer", "turn_on_led": "press the button to turn on the led light"}


def _frame(k, pos, euler, grip, size=32, gsize=24):
    rng = np.random.default_rng(k)
    robot_obs = np.zeros(15)
    robot_obs[:3], robot_obs[3:6], robot_obs[6], robot_obs[14] = pos, euler, 0.08 if grip > 0 else 0.0, grip
    return {
        "robot_obs": robot_obs, "scene_obs": np.zeros(24),
        "rgb_static": rng.integers(0, 256, (size, size, 3), dtype=np.uint8),
        "rgb_gripper": rng.integers(0, 256, (gsize, gsize, 3), dtype=np.uint8),
        "depth_static": np.full((size, size), 4.0, np.float32) + rng.uniform(0, 0.1, (size, size)).astype(np.float32),
        "depth_gripper": np.full((gsize, gsize), 0.3, np.float32),
    }


def write_split(directory, episodes=2, frames=16):
    """Two tasks alternating; the arm moves at constant speed, stops at frame 8, moves back
    up, and closes the gripper at frame 12 (so keyposes are at least {8?, 11, 12, last})."""
    writer = CalvinEpisodeWriter(directory)
    for e in range(episodes):
        task = TASKS[e % 2]
        start = writer.start_episode()
        base = np.array([0.05 * e, -0.2, 0.55])
        for k in range(frames):
            if k <= 8:
                pos = base + np.array([0.01 * k, 0.0, -0.005 * k])
            else:
                pos = base + np.array([0.08, 0.0, -0.04 + 0.006 * (k - 8)])
            euler = np.array([np.pi - 0.01 * k, 0.02, 1.5 + 0.01 * k])  # x crosses the +-pi seam
            euler[0] = (euler[0] + np.pi) % (2 * np.pi) - np.pi
            grip = 1.0 if k < 12 else -1.0
            action = np.r_[pos, euler, grip]
            writer.add_frame(_frame(100 * e + k, pos, euler, grip), action)
        writer.annotate(start, writer.last_index, task, SENTENCES[task])
        writer.end_episode()
    writer.close()
    return directory


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    return write_split(tmp_path_factory.mktemp("calvin") / "training", episodes=4)


def s1_config():
    values = System1Config.tiny().to_dict()
    values.update(S1_OVERRIDES, trajectory_length=19)
    return System1Config.from_dict(values)


def config(split, out, **changes):
    values = dict(train_data=str(split), output_dir=str(out), system1_overrides=dict(S1_OVERRIDES),
                  system2_overrides=dict(S2_OVERRIDES), batch_size=4, steps=2, checkpoint_every=2, log_every=1,
                  progress=False, device="cpu", system1_lr=1e-3, system2_lr=1e-3)
    values.update(changes)
    return TrainingConfig(**values)


# --------------------------------------------------------------------------------------- reader
def test_keyposes_and_interpolation():
    t = np.arange(20, dtype=float)
    proprio = np.zeros((20, 7))
    proprio[:, 0] = np.where(t < 10, 0.01 * t, 0.09)  # moves then stops at 9
    proprio[15:, 6] = 1.0  # gripper opens at 15
    keys = discover_keyposes(proprio)
    assert {9, 14, 15, 19} <= set(keys.tolist())
    stretch = np.zeros((5, 7))
    stretch[:, 0] = np.linspace(0, 0.04, 5)
    stretch[:, 3] = [np.pi - 0.02, np.pi - 0.01, -np.pi, -np.pi + 0.01, -np.pi + 0.02]  # across the seam
    traj = interpolate_trajectory(stretch, 9)
    assert traj.shape == (9, 8)
    np.testing.assert_allclose(traj[:, 0], np.linspace(0, 0.04, 9), atol=1e-9)
    euler = geometry.quaternion_to_euler(traj[:, 3:7], "xyz")
    assert np.all(np.abs(geometry.wrap_angle(euler[:, 0] - np.pi)) <= 0.021)  # never the long way round


def test_reader_shapes_and_values(split):
    cfg = s1_config()
    ds = OpenHelixCalvinDataset(split, cfg, interpolation_length=20, frame_sampling="all")
    assert len(ds.segments) == 4 and ds.instructions == sorted(SENTENCES.values())
    assert len(ds) == 4 * 15  # every frame but the last of each segment
    item = ds[3]
    S = cfg.image_size
    assert item[RGB].shape == (2, 3, S, S) and item[PCD].shape == (2, 3, S, S)
    assert item[CURRENT_GRIPPER].shape == (1, 8) and item[TRAJECTORY].shape == (19, 8)
    assert item["static_image"].shape == (32, 32, 3) and item["static_image"].dtype == torch.uint8
    assert item["instruction"] == SENTENCES["open_drawer"] and item["task"] == "open_drawer"
    assert 0.0 <= float(item[RGB].min()) and float(item[RGB].max()) <= 1.0

    # proprioception and target: CALVIN pose -> quaternion; last target point = next keypose
    ref = ds.samples[3]
    frame = ds.reader.load_frame(ref.frame)
    ro = frame["robot_obs"]
    np.testing.assert_allclose(item[CURRENT_GRIPPER][0, :3].numpy(), ro[:3], atol=1e-6)
    np.testing.assert_allclose(geometry.quaternion_angle(item[CURRENT_GRIPPER][0, 3:7].double().numpy(),
                                                         geometry.euler_to_quaternion(ro[3:6], "xyz")), 0.0, atol=1e-5)
    assert float(item[CURRENT_GRIPPER][0, 7]) == 1.0  # robot_obs[14] > 0
    key = ds.reader.load_frame(ref.keypose)["robot_obs"]
    np.testing.assert_allclose(item[TRAJECTORY][-1, :3].numpy(), key[:3], atol=1e-6)
    assert ref.keypose > ref.frame

    # images and point maps are exactly what the controller's processor makes at inference
    calib = CameraCalibration.calvin()
    cams = calib.frames(frame)
    obs = Observation(cameras=cams, ee_position=ro[:3], ee_orientation=geometry.euler_to_quaternion(ro[3:6], "xyz"),
                      gripper_openness=1.0)
    batch = System1Processor(cfg).observation_to_batch(obs, np.zeros(512, np.float32))
    torch.testing.assert_close(item[RGB], batch[RGB][0])
    torch.testing.assert_close(item[PCD], batch[PCD][0])
    # static points: CALVIN camera, fov 10 deg; the centre pixel lies on the optical axis
    K = intrinsics_from_fov(32, 32, 10.0)
    assert K[0, 0] == pytest.approx(32 / (2 * np.tan(np.radians(5.0))))
    eye = np.array([2.871459009488717, -2.166602199425597, 2.555159848480571])
    np.testing.assert_allclose(cams["static"].camera_to_base[:3, 3], eye)
    # gripper camera pose = TCP pose (robot_obs) @ hand-eye transform
    np.testing.assert_allclose(cams["gripper"].camera_to_base, pose_from_xyz_euler(ro[:3], ro[3:6]) @ calib.gripper_to_tcp)

    # keypose sampling gives fewer samples; nhist > 1 repeats the first state
    kds = OpenHelixCalvinDataset(split, System1Config.from_dict({**cfg.to_dict(), "nhist": 3}), frame_sampling="keypose")
    assert 0 < len(kds) < len(ds)
    first = kds[0]
    assert first[CURRENT_GRIPPER].shape == (3, 8)
    torch.testing.assert_close(first[CURRENT_GRIPPER][0], first[CURRENT_GRIPPER][2])
    batch = collate([ds[i] for i in range(3)])
    assert batch[RGB].shape[0] == 3 and len(batch["instruction"]) == 3 and isinstance(batch["static_image"][0], np.ndarray)
    only = OpenHelixCalvinDataset(split, cfg, tasks=["turn_on_led"])
    assert {s.task for s in only.segments} == {"turn_on_led"}



def test_position_bounds_follow_the_position_frame(split):
    """Relative System 1: bounds of target offsets from the current gripper; absolute: of the
    positions themselves (targets and current), i.e. the workspace."""
    cfg = s1_config()
    relative = OpenHelixCalvinDataset(split, cfg).position_bounds()
    absolute = OpenHelixCalvinDataset(split, System1Config.from_dict({**cfg.to_dict(), "relative": False})).position_bounds()
    # the split's arm: x from 0 (episode 0 start) to 0.15 + 0.08, y fixed at -0.2, z in 0.51 .. 0.552
    np.testing.assert_allclose(absolute[:, 0], [0.0, 0.23], atol=1e-6)
    np.testing.assert_allclose(absolute[:, 1], [-0.2, -0.2], atol=1e-6)
    np.testing.assert_allclose(absolute[:, 2], [0.51, 0.552], atol=1e-6)
    # offsets: the arm moves forward in x, by at most 0.08 within a segment; never in y
    assert abs(relative[0, 0]) < 1e-9 and 0.07 < relative[1, 0] <= 0.08 + 1e-9
    np.testing.assert_allclose(relative[:, 1], [0.0, 0.0], atol=1e-9)


def test_frames_of_a_hold_target_the_motion_after_it(tmp_path):
    """The arm moves 1 cm per frame to frame 5, holds still to frame 10, moves on to 16:
    keyposes 5, 10, 16. With ``still_motion`` the hold's frames (5..9) target 10 -> 16, the
    pull after the hold, instead of 'stay'; moving frames keep their own stretch."""
    writer = CalvinEpisodeWriter(tmp_path / "training")
    start = writer.start_episode()
    xs = np.r_[0.01 * np.arange(6), np.full(5, 0.05), 0.05 + 0.01 * np.arange(1, 7)]
    for k, x in enumerate(xs):
        pos, euler = np.array([x, -0.2, 0.5]), np.array([np.pi, 0.0, 1.5])
        writer.add_frame(_frame(k, pos, euler, 1.0), np.r_[pos, euler, 1.0])
    writer.annotate(start, writer.last_index, "open_drawer", SENTENCES["open_drawer"])
    writer.end_episode()
    writer.close()
    plain = OpenHelixCalvinDataset(tmp_path / "training", s1_config())
    paused = OpenHelixCalvinDataset(tmp_path / "training", s1_config(), still_motion=0.005)
    assert len(plain) == len(paused) == len(xs) - 1
    for k in range(len(xs) - 1):
        ref, trajectory = paused.samples[k], paused.target_trajectory(k)
        if 5 <= k <= 9:
            assert (ref.stretch_start, ref.keypose) == (10, 16)
            np.testing.assert_allclose(trajectory[[0, -1], 0], [0.05 + 0.01 * 6 / 19, 0.11], atol=2e-3)
            assert np.allclose(plain.target_trajectory(k)[:, 0], 0.05)  # without: stay in place
        else:
            assert ref == plain.samples[k] and ref.stretch_start == k
            np.testing.assert_allclose(trajectory, plain.target_trajectory(k))
    with pytest.raises(ValueError, match="still_motion"):
        OpenHelixCalvinDataset(tmp_path / "training", s1_config(), still_motion=-0.01)

def test_reader_camera_info_and_cache(split, tmp_path):
    import shutil

    copy = tmp_path / "split"
    shutil.copytree(split, copy)
    calib = CameraCalibration.calvin()
    calib.static_to_base = calib.static_to_base.copy()
    calib.static_to_base[:3, 3] += [0.0, 0.0, 1.0]
    calib.save(copy)
    assert json.loads((copy / CAMERA_INFO_FILE).read_text())["static_fov"] == 10.0
    cfg = s1_config()
    plain = OpenHelixCalvinDataset(split, cfg)
    moved = OpenHelixCalvinDataset(copy, cfg, cache_dir=tmp_path / "cache")
    assert moved.calibration.source.endswith(CAMERA_INFO_FILE)
    diff = (moved[0][PCD][0] - plain[0][PCD][0]).reshape(3, -1)
    np.testing.assert_allclose(diff[2].numpy(), 1.0, atol=2e-3)  # fp16 cache
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 1
    again = OpenHelixCalvinDataset(copy, cfg, cache_dir=tmp_path / "cache")
    torch.testing.assert_close(again[5][RGB], moved[5][RGB])
    assert float((again[5][RGB] - plain[5][RGB]).abs().max()) <= 0.5 / 255 + 1e-6


# --------------------------------------------------------------------------------------- stages
def _snapshot(trainer):
    s1 = {k: v.detach().clone() for k, v in trainer.system1.state_dict().items()}
    llava = {k: v.detach().clone() for k, v in trainer.system2.llava.state_dict().items()}
    s2 = trainer.system2.trainable_state_dict()
    return s1, llava, s2


def _changed(before, after):
    return {k for k in before if not torch.equal(before[k], after[k])}


@pytest.mark.filterwarnings("ignore:System 1's CLIP backbone is frozen")
@pytest.mark.parametrize("stage, aux_loss_stages", [(1, [2]), (1, [1, 2]), (2, [2])],
                         ids=["stage1", "stage1-with-aux", "stage2"])
def test_one_step_updates_only_what_the_stage_trains(split, tmp_path, stage, aux_loss_stages):
    trainer = Trainer(config(split, tmp_path / f"s{stage}", stage=stage, steps=1, aux_loss_stages=aux_loss_stages))
    s1, llava, s2 = _snapshot(trainer)
    batch = collate([trainer.dataset[i] for i in range(4)])
    losses = trainer.train_step(batch)
    assert np.isfinite(losses["loss"]) and losses["aux"] > 0 and losses["diffusion"] > 0
    aux_applied = stage in aux_loss_stages
    assert losses["loss"] == pytest.approx(losses["diffusion"] + (losses["aux"] if aux_applied else 0.0), rel=1e-5)
    a1, al, a2 = _snapshot(trainer)
    assert _changed(llava, al) == set()  # the LLaVA never trains
    aux_head = {k for k in s2 if k.startswith("aux_head.")}
    # <ACT> row and projection always move (System 1's loss); the aux head only with its loss
    assert _changed(s2, a2) == (set(s2) if aux_applied else set(s2) - aux_head)
    s1_changed = _changed(s1, a1)
    backbone = {k for k in s1 if k.startswith("encoder.backbone.")}
    assert backbone and not (s1_changed & backbone)  # the CLIP backbone never trains
    if stage == 1:
        assert s1_changed == set()
        assert not any(p.requires_grad for p in trainer.system1.parameters())
    else:
        assert "prediction_head.position_predictor.2.weight" in s1_changed
        assert "encoder.instruction_encoder.weight" in s1_changed
        assert set(trainer.optimizers) == {"system1", "system2"}
    assert set(trainer.optimizers["system2"].state) <= set(trainer.system2.trainable_parameters())


def test_stage2_warns_about_a_frozen_untrained_backbone(split, tmp_path):
    with pytest.warns(UserWarning, match="backbone is frozen but was never trained"):
        Trainer(config(split, tmp_path / "frozen", stage=2, steps=1))
    overrides = dict(S1_OVERRIDES, freeze_backbone=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        trainer = Trainer(config(split, tmp_path / "trained", stage=2, steps=1, system1_overrides=overrides))
    before = {k: v.clone() for k, v in trainer.system1.encoder.backbone.state_dict().items()}
    trainer.train_step(collate([trainer.dataset[i] for i in range(4)]))
    after = trainer.system1.encoder.backbone.state_dict()
    assert all(not torch.equal(before[k], after[k]) for k in before if k.endswith(("conv1.weight", "running_mean")))


@pytest.mark.filterwarnings("ignore:System 1's CLIP backbone is frozen")
def test_stage2_measures_goal_statistics_once(split, tmp_path):
    from openhelix_core.training.trainer import measure_goal_statistics

    trainer = Trainer(config(split, tmp_path / "std", stage=2, steps=1, standardize_goals=True))
    goals = []
    for index in range(len(trainer.dataset)):
        item = trainer.dataset[index]
        inputs = trainer.processor([item["static_image"].numpy()], [item["instruction"]])
        with torch.no_grad():
            goals.append(trainer.system2.eval()(**inputs).goal[0])
    goals = torch.stack(goals)
    stats = trainer.system1.goal_statistics
    torch.testing.assert_close(stats[0], goals.mean(0), atol=1e-5, rtol=0)
    torch.testing.assert_close(stats[1], goals.std(0), atol=1e-5, rtol=0)
    assert not torch.equal(*measure_goal_statistics(trainer.system2, trainer.processor, trainer.dataset,
                                                    torch.device("cpu"), batch_size=3))  # mean != std
    result = train(trainer.config)
    saved = json.loads((result.final_dir / "system1" / "normalization.json").read_text())
    np.testing.assert_allclose(saved["goal_mean"], stats[0].numpy(), atol=1e-6)


def test_questions_are_drawn_per_sample_and_seeded(split, tmp_path):
    asked = []

    def recording(processor):
        original = processor.__call__

        def call(images, instructions, **kwargs):
            asked.append(list(kwargs["question_indices"]))
            return original(images, instructions, **kwargs)
        return call

    draws = []
    for attempt in range(2):
        trainer = Trainer(config(split, tmp_path / f"q{attempt}", stage=1, steps=1, system2_overrides=S2_QUESTIONS))
        trainer.processor = type("Recording", (), {"__call__": staticmethod(recording(trainer.processor))})()
        asked.clear()
        for _ in range(3):
            trainer.train_step(collate([trainer.dataset[i] for i in range(4)]))
        draws.append([index for step in asked for index in step])
    assert draws[0] == draws[1] and set(draws[0]) == {0, 1} and len(draws[0]) == 12


def test_exact_resume_and_outputs(split, tmp_path):
    full = config(split, tmp_path / "full", steps=4, checkpoint_every=2, system2_overrides=S2_QUESTIONS,
                  system1_overrides={**S1_OVERRIDES, "dropout": 0.1})
    train(full)
    half = full.replace(output_dir=str(tmp_path / "half"), steps=2)
    train(half)
    resumed = half.replace(steps=4)
    result = train(resumed, resume="auto")
    assert result.steps == 4
    a = Trainer(full, resume=str(tmp_path / "full" / "checkpoints" / "step_0000004"))
    b = Trainer(resumed, resume="auto")
    for (name, x), y in zip(a.system1.state_dict().items(), b.system1.state_dict().values()):
        assert torch.equal(x, y), name
    for name, x in a.system2.trainable_state_dict().items():
        assert torch.equal(x, b.system2.trainable_state_dict()[name]), name
    assert (a.epoch, a.position) == (b.epoch, b.position)
    sa, sb = a.optimizers["system1"].state_dict()["state"], b.optimizers["system1"].state_dict()["state"]
    assert all(torch.equal(sa[i]["exp_avg"], sb[i]["exp_avg"]) for i in sa)
    # outputs: checkpoints as safetensors + JSON + normalization, CSV metrics, loss curve, final models
    out = tmp_path / "half"
    ckpt = latest_checkpoint(out)
    assert ckpt.name == "step_0000004"
    for rel in ("system1/model.safetensors", "system1/config.json", "system1/normalization.json",
                "system2/system2_trainable.safetensors", "training_config.json", "training_state.pt", "rng_rank0.pt"):
        assert (ckpt / rel).is_file(), rel
    rows = (out / "metrics.csv").read_text().strip().splitlines()
    assert rows[0].startswith("step,epoch,loss") and [r.split(",")[0] for r in rows[1:]] == ["1", "2", "3", "4"]
    assert (out / "loss_curve.png").stat().st_size > 1000
    from openhelix_core.runtime.controller import TrajectoryController
    from openhelix_core.runtime.planner import GoalPlanner

    controller = TrajectoryController.load(str(out / "final" / "system1"))
    assert controller.model.config.trajectory_length == 19
    planner = GoalPlanner.load(str(out / "final" / "system2"))
    goal = planner.plan(np.zeros((32, 32, 3), np.uint8), SENTENCES["open_drawer"])
    assert goal.shape == (512,)
    norm = json.loads((out / "final" / "system1" / "normalization.json").read_text())["gripper_loc_bounds"]
    assert norm[0][0] < -0.0 < norm[1][0]  # computed from the data, widened by 0.01


def test_stage2_init_from_stage1_and_cli(split, tmp_path):
    stage1 = config(split, tmp_path / "s1", stage=1, steps=1, checkpoint_every=1)
    train(stage1)
    args = build_parser().parse_args([
        "--train-data", str(split), "--output-dir", str(tmp_path / "s2"), "--stage", "2", "--steps", "1",
        "--init-from", str(tmp_path / "s1" / "final"), "--batch-size", "4", "--progress", "false",
        "--system1-overrides", json.dumps(S1_OVERRIDES), "--system2-overrides", json.dumps(S2_OVERRIDES),
        "--tasks", "open_drawer", "turn_on_led", "--system2-betas", "0.9", "0.95", "--aux-loss-stages", "1", "2"])
    cfg = config_from_args(args)
    assert cfg.stage == 2 and cfg.tasks == list(TASKS) and cfg.system2_betas == (0.9, 0.95)
    assert cfg.aux_loss_stages == [1, 2] and TrainingConfig().aux_loss_stages == [2]
    with pytest.raises(ValueError, match="aux_loss_stages"):
        config_from_args(build_parser().parse_args(["--train-data", "x", "--aux-loss-stages", "3"]))
    trainer = Trainer(cfg)
    from safetensors.torch import load_file

    saved = load_file(str(tmp_path / "s1" / "final" / "system2" / "system2_trainable.safetensors"))
    torch.testing.assert_close(trainer.system2.act_embedding.detach(), saved["act_embedding"])
    with pytest.raises(ValueError, match="stage 1"):
        Trainer(cfg.replace(output_dir=str(tmp_path / "s1")), resume="auto")


def _shifted_split(directory, shift, cameras=("static", "gripper")):
    """The same motions in another robot's workspace (``shift`` metres away), optionally without
    the gripper camera and simulator state (what bag-to-dataset writes)."""
    reference = CalvinDataset(write_split(directory.parent / f"{directory.name}_reference"))
    writer = CalvinEpisodeWriter(directory)
    for (start, end), (_, _, task, sentence) in zip(reference.episodes(), reference.annotated_segments()):
        first = writer.start_episode()
        for index in range(start, end + 1):
            frame = reference.load_frame(index)
            frame["robot_obs"][:3] += shift
            frame["actions"][:3] += shift
            observation = {k: v for k, v in frame.items() if k != "scene_obs" and
                           (not k.endswith("_gripper") or "gripper" in cameras)}
            writer.add_frame(observation, frame["actions"])
        writer.annotate(first, writer.last_index, task, sentence)
        writer.end_episode()
    writer.close()
    return directory


def test_fine_tuning_recomputes_statistics_and_refuses_data_without_the_models_cameras(split, tmp_path):
    train(config(split, tmp_path / "base", steps=1, checkpoint_every=1))
    base = tmp_path / "base" / "final"
    shift = np.array([0.6, 0.3, -0.1])
    robot = _shifted_split(tmp_path / "robot", shift)
    trainer = Trainer(config(robot, tmp_path / "tuned", steps=1, init_from=str(base)))
    before = json.loads((base / "system1" / "normalization.json").read_text())
    report = json.loads((tmp_path / "tuned" / "fine_tuning.json").read_text())
    assert report["adapted"]["normalization_before"] == before
    after = trainer.system1.normalization.gripper_loc_bounds
    assert after == tuple(tuple(row) for row in report["adapted"]["normalization_after"]["gripper_loc_bounds"])
    relative = trainer.system1.config.relative
    if relative:   # relative bounds do not move with the workspace
        np.testing.assert_allclose(after, before["gripper_loc_bounds"], atol=1e-9)
    else:
        np.testing.assert_allclose(np.asarray(after), np.asarray(before["gripper_loc_bounds"]) + shift, atol=1e-6)
    torch.testing.assert_close(trainer.system1.gripper_loc_bounds, torch.tensor(after, dtype=torch.float32))
    assert report["must_match"]["cameras"]["data"] == ["gripper", "static"]

    static_only = _shifted_split(tmp_path / "static_only", shift, cameras=("static",))
    with pytest.raises(ValueError, match="has no gripper camera.*takes cameras"):
        Trainer(config(static_only, tmp_path / "refused", steps=1, init_from=str(base)))
    # System 1 has no per-camera weights: the camera set may change, the architecture may not
    one_camera = config(static_only, tmp_path / "one_camera", steps=1, init_from=str(base),
                        system1_overrides={**S1_OVERRIDES, "cameras": ["static"]})
    result = train(one_camera)
    tuned = json.loads((result.final_dir / "system1" / "config.json").read_text())
    assert tuned["cameras"] == ["static"]
    cameras = json.loads((tmp_path / "one_camera" / "fine_tuning.json").read_text())["must_match"]["cameras"]
    assert cameras["checkpoint"] == ["static", "gripper"] and cameras["this_run"] == ["static"]
    with pytest.raises(ValueError, match="change \\['embedding_dim'\\]"):
        Trainer(config(robot, tmp_path / "wider", steps=1, init_from=str(base),
                       system1_overrides={**S1_OVERRIDES, "embedding_dim": 48}))


def test_fine_tuning_moves_the_clipping_box_to_the_new_workspace(split, tmp_path):
    from openhelix_core.models.system1 import DiffuserActor, Normalization

    train(config(split, tmp_path / "base", steps=1, checkpoint_every=1))
    base = tmp_path / "base" / "final"
    system1 = DiffuserActor.from_pretrained(base / "system1")
    clipped = Normalization(gripper_loc_bounds=system1.normalization.gripper_loc_bounds,
                            action_position_bounds=((-0.5, -0.5, 0.0), (0.5, 0.5, 1.0)))
    (base / "system1" / "normalization.json").write_text(json.dumps(clipped.to_dict()))
    shift = np.array([2.0, 0.0, 0.0])
    trainer = Trainer(config(_shifted_split(tmp_path / "robot", shift), tmp_path / "tuned", steps=1,
                             init_from=str(base)))
    low, high = np.asarray(trainer.system1.normalization.action_position_bounds)
    positions = trainer.dataset.workspace_bounds()
    assert np.all(low < positions[0]) and np.all(high > positions[1]) and low[0] > 1.5


# --------------------------------------------------------------------------------------- DDP
def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank, world, port, cfg_dict, out_q):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    result = train(TrainingConfig.from_dict(cfg_dict))
    from openhelix_core.training import load_models_from_checkpoint

    s1, s2 = load_models_from_checkpoint(result.final_dir)
    out_q.put((rank, float(sum(p.double().sum() for p in s1.parameters())),
               float(s2.act_embedding.double().sum()), result.steps))


def test_ddp_two_cpu_processes(split, tmp_path):
    import torch.multiprocessing as tmp_mp

    cfg = config(split, tmp_path / "ddp", steps=2, batch_size=2, checkpoint_every=2).to_dict()
    ctx = tmp_mp.get_context("spawn")
    queue = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_ddp_worker, args=(r, 2, port, cfg, queue)) for r in range(2)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=150) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    results.sort()
    assert results[0][3] == results[1][3] == 2
    assert results[0][1] == pytest.approx(results[1][1], abs=0) and results[0][2] == results[1][2]
    ckpt = latest_checkpoint(tmp_path / "ddp")
    assert (ckpt / "rng_rank0.pt").is_file() and (ckpt / "rng_rank1.pt").is_file()
    assert json.loads((tmp_path / "ddp" / "run_info.json").read_text())["world_size"] == 2
