"""System 1 (3D Diffuser Actor): config, FPS, model, checkpoints and processor."""
import inspect
import json
import math
import os

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from openhelix_core import geometry
from openhelix_core.checkpoint_keys import CheckpointError
from openhelix_core.models.system1 import (
    CALVIN_REL_TRAJ_BOUNDS_ABC_D,
    CURRENT_GRIPPER,
    GOAL,
    PCD,
    RGB,
    TRAJECTORY,
    DiffuserActor,
    Normalization,
    System1Config,
    System1Processor,
    convert_original_state_dict,
    count_parameters,
    load_original_checkpoint,
)
from openhelix_core.models.system1.fps import farthest_point_sample, farthest_point_sample_reference
from openhelix_core.types import CameraFrame, Observation

pytestmark = pytest.mark.usefixtures("single_torch_thread")


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return DiffuserActor(System1Config.tiny())


def make_batch(config, batch_size=2, steps=None, seed=0):
    gen = torch.Generator().manual_seed(seed)
    s, ncam = config.image_size, len(config.cameras)
    current = torch.tensor([0.05, -0.1, 0.55, 0.0, 0.0, 0.0, 1.0, 1.0])
    current[3:7] = torch.tensor(geometry.euler_to_quaternion(np.array([3.1, -0.03, 1.5]), "xyz"))
    steps = steps or config.trajectory_length
    offsets = torch.cumsum(torch.randn(batch_size, steps, 3, generator=gen) * 0.01, dim=1)
    euler = torch.tensor([3.1, -0.03, 1.5]) + torch.cumsum(torch.randn(batch_size, steps, 3, generator=gen) * 0.02, 1)
    traj = torch.cat([current[:3] + offsets, geometry.euler_to_quaternion(euler, "xyz").float(),
                      (torch.rand(batch_size, steps, 1, generator=gen) > 0.5).float()], dim=-1)
    return {
        RGB: torch.rand(batch_size, ncam, 3, s, s, generator=gen),
        PCD: current[:3].view(1, 1, 3, 1, 1) + 0.2 * torch.randn(batch_size, ncam, 3, s, s, generator=gen),
        GOAL: torch.randn(batch_size, 1, config.goal_dim, generator=gen),
        CURRENT_GRIPPER: current.expand(batch_size, config.nhist, 8).clone(),
        TRAJECTORY: traj,
    }


# ------------------------------------------------------------------------------------------ config
def test_openhelix_calvin_defaults():
    cfg = System1Config.openhelix_calvin()
    assert cfg.embedding_dim == 192 and cfg.diffusion_timesteps == 25
    assert cfg.fps_subsampling_factor == 3 and cfg.nhist == 1
    assert cfg.image_resize == 200 and cfg.image_size == 160 and cfg.feature_level == "res3"
    assert cfg.cameras == ("static", "gripper")
    assert cfg.position_beta_schedule == "scaled_linear"
    assert cfg.rotation_beta_schedule == "squaredcos_cap_v2"
    assert cfg.use_instruction and cfg.lang_enhanced and cfg.relative
    assert cfg.trajectory_length == 19  # interpolation_length 20 minus the current pose
    assert cfg.feature_map_size == 20 and cfg.num_scene_tokens == 800 and cfg.num_sampled_tokens == 266


@pytest.mark.parametrize("changes, field", [
    ({"embedding_dim": 25}, "embedding_dim"),
    ({"embedding_dim": 198, "num_attn_heads": 4}, "num_attn_heads"),
    ({"image_size": 240}, "image_size"),
    ({"image_size": 164}, "image_size"),
    ({"nhist": 0}, "nhist"),
    ({"cameras": ()}, "cameras"),
    ({"cameras": ("a", "a")}, "cameras"),
    ({"feature_level": "res9"}, "feature_level"),
    ({"position_beta_schedule": "cosine"}, "position_beta_schedule"),
    ({"euler_convention": "zyx"}, "euler_convention"),
    ({"prediction_type": "v_prediction"}, "prediction_type"),
    ({"lang_enhanced": True, "use_instruction": False}, "lang_enhanced"),
    ({"dropout": 1.0}, "dropout"),
    ({"trajectory_length": 2.5}, "trajectory_length"),
])
def test_config_validation_names_the_field(changes, field):
    with pytest.raises(ValueError, match=field):
        System1Config(**changes)


def test_config_dict_round_trip_and_unknown_key():
    cfg = System1Config.tiny()
    data = json.loads(json.dumps(cfg.to_dict()))
    assert System1Config.from_dict(data) == cfg
    with pytest.raises(ValueError, match="bogus"):
        System1Config.from_dict({**data, "bogus": 1})


def test_normalization_validation_and_defaults():
    norm = Normalization()
    expected = np.array(CALVIN_REL_TRAJ_BOUNDS_ABC_D)
    np.testing.assert_allclose(norm.gripper_loc_bounds, expected)
    np.testing.assert_allclose(expected[0], [-0.302058885, -0.256887982, -0.215579668], atol=1e-8)
    with pytest.raises(ValueError, match="gripper_loc_bounds"):
        Normalization(gripper_loc_bounds=[[0, 0, 0], [1, -1, 1]])
    with pytest.raises(ValueError, match="gripper_loc_bounds"):
        Normalization(gripper_loc_bounds=[[0, 0], [1, 1]])


# --------------------------------------------------------------------------------------------- FPS
def test_fps_toy_line_starts_at_zero_and_spreads():
    pts = torch.tensor([[0.0], [1.0], [2.0], [10.0], [4.0]]).unsqueeze(0)
    for fps in (farthest_point_sample, farthest_point_sample_reference):
        assert fps(pts, 3).tolist() == [[0, 3, 4]]
        assert fps(pts, 1).tolist() == [[0]]


def test_fps_picks_square_corners_before_inner_points():
    corners = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    inner = torch.tensor([[0.5, 0.5], [0.4, 0.6], [0.6, 0.4], [0.3, 0.3]])
    pts = torch.cat([corners[:1], inner, corners[1:]]).unsqueeze(0)  # corner 0 first, others last
    for fps in (farthest_point_sample, farthest_point_sample_reference):
        idx = fps(pts, 4)[0].tolist()
        assert idx[0] == 0 and idx[1] == 7  # the opposite corner (1, 1)
        assert set(idx) == {0, 5, 6, 7}


def test_fast_fps_matches_reference_on_features():
    feats = torch.randn(3, 300, 24, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(farthest_point_sample(feats, 100), farthest_point_sample_reference(feats, 100))
    with pytest.raises(ValueError, match="num_samples"):
        farthest_point_sample(feats, 301)


def test_encoder_fps_samples_feature_vectors(tiny_model):
    cfg = tiny_model.config
    feats = torch.randn(2, cfg.num_scene_tokens, cfg.embedding_dim)
    pos = tiny_model.encoder.relative_pe_layer(torch.randn(2, cfg.num_scene_tokens, 3))
    sampled, sampled_pos = tiny_model.encoder.run_fps(feats, pos)
    idx = farthest_point_sample_reference(feats, cfg.num_sampled_tokens)
    assert sampled.shape == (2, cfg.num_sampled_tokens, cfg.embedding_dim)
    torch.testing.assert_close(sampled, torch.gather(feats, 1, idx[..., None].expand_as(sampled)))
    torch.testing.assert_close(sampled_pos[1, 0], pos[1, 0])  # index 0 kept first


# ------------------------------------------------------------------------------------------- model
def test_tiny_loss_is_finite_and_gradients_flow():
    torch.manual_seed(1)
    model = DiffuserActor(System1Config.tiny()).train()
    batch = make_batch(model.config)
    losses = model.compute_loss(batch, generator=torch.Generator().manual_seed(0))
    assert set(losses) == {"loss", "position", "rotation", "openness"}
    for value in losses.values():
        assert value.dim() == 0 and torch.isfinite(value)
    expected = 30 * losses["position"] + 10 * losses["rotation"] + losses["openness"]
    torch.testing.assert_close(losses["loss"], expected)
    losses["loss"].backward()
    params = dict(model.named_parameters())
    for name in ("encoder.feature_pyramid.inner_blocks.2.0.weight", "encoder.instruction_encoder.weight",
                 "prediction_head.traj_encoder.weight", "prediction_head.cross_attn.attn_layers.0.adaln.modulation.1.weight",
                 "prediction_head.position_predictor.2.weight", "prediction_head.rotation_predictor.2.weight",
                 "prediction_head.openess_predictor.2.weight"):
        grad = params[name].grad
        assert grad is not None and grad.abs().sum() > 0, name
    assert all(p.grad is None for p in model.encoder.backbone.parameters())  # frozen CLIP ResNet
    assert not model.encoder.backbone.training  # BatchNorm stays in eval mode
    # AdaLN modulations start at zero (as in 3DDA), so the timestep / proprioception path gets
    # gradients only once they have moved: one SGD step opens it.
    assert params["encoder.curr_gripper_embed.weight"].grad.abs().sum() == 0
    torch.optim.SGD(model.parameters(), lr=1e-2).step()
    model.zero_grad()
    model.compute_loss(batch, generator=torch.Generator().manual_seed(0))["loss"].backward()
    for name in ("encoder.curr_gripper_embed.weight", "prediction_head.time_emb.1.weight",
                 "prediction_head.curr_gripper_emb.0.weight"):
        assert params[name].grad.abs().sum() > 0, name


def test_predict_trajectory_shape_and_ranges(tiny_model):
    batch = make_batch(tiny_model.config, batch_size=2)
    del batch[TRAJECTORY]
    out = tiny_model.predict_trajectory(batch, generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 20, 8)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[..., 3:7].norm(dim=-1), torch.ones(2, 20))
    assert (out[..., 7] >= 0).all() and (out[..., 7] <= 1).all()
    again = tiny_model.predict_trajectory(batch, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, again, rtol=0, atol=0)
    other = tiny_model.predict_trajectory(batch, generator=torch.Generator().manual_seed(1))
    assert not torch.equal(out, other)


class OracleHead(torch.nn.Module):
    """Stands in for the denoiser: always answers ``answer (B, T, 10)``, whatever it is shown."""

    def __init__(self, answer):
        super().__init__()
        self.answer = answer

    def forward(self, trajectory, timestep, fixed):
        return self.answer


@pytest.mark.parametrize("prediction_type", ["epsilon", "sample"])
def test_loss_target_follows_prediction_type(prediction_type):
    cfg = System1Config.tiny()
    cfg.prediction_type = prediction_type
    model = DiffuserActor(cfg)
    batch = make_batch(cfg, batch_size=2)
    target, openness = model._targets(batch[TRAJECTORY], batch[CURRENT_GRIPPER][:, -1])
    logits = torch.logit(openness.clamp(1e-4, 1 - 1e-4))
    model.prediction_head = OracleHead(torch.cat([target, logits], dim=-1))
    losses = model.compute_loss(batch, generator=torch.Generator().manual_seed(0))
    if prediction_type == "sample":  # the clean trajectory is exactly what a sample model must output
        assert losses["position"] == 0 and losses["rotation"] == 0
    else:  # ... while an epsilon model must output the noise, which the clean trajectory is not
        assert losses["position"] > 0.3 and losses["rotation"] > 0.3


def test_sample_prediction_denoises_to_the_predicted_trajectory():
    cfg = System1Config.tiny()
    cfg.prediction_type = "sample"
    model = DiffuserActor(cfg)
    batch = make_batch(cfg, batch_size=2)
    expected = batch.pop(TRAJECTORY)
    target, openness = model._targets(expected, batch[CURRENT_GRIPPER][:, -1])
    model.prediction_head = OracleHead(torch.cat([target, torch.logit(openness.clamp(1e-4, 1 - 1e-4))], dim=-1))
    out = model.predict_trajectory(batch, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(out[..., :3], expected[..., :3], atol=1e-5, rtol=0)
    dots = (out[..., 3:7] * expected[..., 3:7]).sum(-1).abs()
    torch.testing.assert_close(dots, torch.ones_like(dots), atol=1e-5, rtol=0)


def test_goal_standardisation_is_applied_and_travels_with_the_checkpoint(tmp_path):
    cfg = System1Config.tiny()
    torch.manual_seed(0)
    model = DiffuserActor(cfg).eval()
    batch = make_batch(cfg, batch_size=2)
    del batch[TRAJECTORY]
    mean, std = torch.linspace(-1, 1, cfg.goal_dim), torch.linspace(0.5, 2, cfg.goal_dim)
    standardised = dict(batch, **{GOAL: (batch[GOAL] - mean) / std})
    plain = model.predict_trajectory(standardised, generator=torch.Generator().manual_seed(0))
    model.set_goal_statistics(mean, std)
    with_stats = model.predict_trajectory(batch, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(with_stats, plain, rtol=0, atol=1e-5)
    model.save_pretrained(tmp_path / "ckpt")
    saved = json.loads((tmp_path / "ckpt" / "normalization.json").read_text())
    assert len(saved["goal_mean"]) == cfg.goal_dim and saved["goal_std"][0] == 0.5
    loaded = DiffuserActor.from_pretrained(tmp_path / "ckpt")
    again = loaded.predict_trajectory(batch, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(again, with_stats, rtol=0, atol=0)


@pytest.mark.parametrize("changes, match", [
    ({"goal_mean": [0.0] * 4}, "together"),
    ({"goal_mean": [0.0] * 4, "goal_std": [1.0] * 3}, "one length"),
    ({"goal_mean": [0.0] * 4, "goal_std": [1.0, 1.0, 0.0, 1.0]}, "> 0"),
])
def test_goal_statistics_validation(changes, match):
    with pytest.raises(ValueError, match=match):
        Normalization(**changes)


def test_unfrozen_backbone_trains_with_batch_statistics():
    cfg = System1Config.tiny()
    cfg.freeze_backbone = False
    torch.manual_seed(0)
    model = DiffuserActor(cfg).train()
    assert model.encoder.backbone.training
    running_mean = model.encoder.backbone.bn1.running_mean.clone()
    model.compute_loss(make_batch(cfg), generator=torch.Generator().manual_seed(0))["loss"].backward()
    grads = [p.grad for p in model.encoder.backbone.parameters()]
    assert all(g is not None for g in grads) and sum(g.abs().sum() for g in grads) > 0
    assert not torch.equal(model.encoder.backbone.bn1.running_mean, running_mean)


@pytest.mark.parametrize("relative, convention", [(True, "XYZ"), (True, "xyz"), (False, "XYZ"), (False, "xyz")])
def test_target_encoding_inverts(relative, convention):
    cfg = System1Config.tiny()
    cfg.relative, cfg.euler_convention = relative, convention
    model = DiffuserActor(cfg)
    batch = make_batch(cfg, batch_size=2)
    current = batch[CURRENT_GRIPPER][:, -1]
    target, openness = model._targets(batch[TRAJECTORY], current)
    assert target.shape == (2, 20, 9)
    if relative:  # the default bounds are CALVIN's relative-trajectory workspace
        assert target[..., :3].abs().max() < 1.0
    logits = torch.logit(openness.clamp(1e-4, 1 - 1e-4))
    back = model._to_absolute(target, logits, current)
    torch.testing.assert_close(back[..., :3], batch[TRAJECTORY][..., :3], atol=1e-5, rtol=0)
    dots = (back[..., 3:7] * batch[TRAJECTORY][..., 3:7]).sum(-1).abs()
    torch.testing.assert_close(dots, torch.ones_like(dots), atol=1e-5, rtol=0)
    torch.testing.assert_close(back[..., 7:].round(), openness)


def test_relative_mode_uses_euler_deltas():
    model = DiffuserActor(System1Config.tiny())
    current = torch.tensor([[0.1, 0.2, 0.3, *geometry.euler_to_quaternion(np.array([3.0, 0.1, -1.0]), "xyz"), 1.0]],
                           dtype=torch.float32)
    waypoint_euler = np.array([-3.0, 0.15, -0.8])  # crosses +-pi on x: delta wraps to 2 pi - 6
    traj = torch.tensor([[[0.15, 0.2, 0.25, *geometry.euler_to_quaternion(waypoint_euler, "xyz"), 0.0]]],
                        dtype=torch.float32)
    target, _ = model._targets(traj, current)
    matrix = geometry.rotation_6d_to_matrix(target[0, 0, 3:9].double())
    delta = geometry.matrix_to_euler(matrix, "XYZ")
    torch.testing.assert_close(delta, torch.tensor([2 * math.pi - 6.0, 0.05, 0.2], dtype=torch.float64),
                               atol=1e-5, rtol=0)
    pos = model.unnormalize_pos(target[0, 0, :3])
    torch.testing.assert_close(pos, torch.tensor([0.05, 0.0, -0.05]), atol=1e-6, rtol=0)


def test_batch_validation(tiny_model):
    batch = make_batch(tiny_model.config)
    with pytest.raises(ValueError, match="goal"):
        tiny_model.predict_trajectory({k: v for k, v in batch.items() if k != GOAL})
    bad = dict(batch)
    bad[CURRENT_GRIPPER] = batch[CURRENT_GRIPPER][..., :7]
    with pytest.raises(ValueError, match=CURRENT_GRIPPER):
        tiny_model.predict_trajectory(bad)
    bad = dict(batch)
    bad[PCD] = batch[PCD].clone()
    bad[PCD][0, 0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        tiny_model.predict_trajectory(bad)
    with pytest.raises(ValueError, match=TRAJECTORY):
        tiny_model.compute_loss({k: v for k, v in batch.items() if k != TRAJECTORY})


def test_full_size_model_builds_with_expected_parameter_counts():
    model = DiffuserActor(System1Config.openhelix_calvin())
    # CLIP RN50 visual tower without its attention pool (38,316,896 - 14,789,632).
    assert count_parameters(model.encoder.backbone) == 23_527_264
    # FPN: 1x1 laterals from (64, 256, 512, 1024, 2048) + five 3x3 outputs, 192 channels.
    lateral = sum(c * 192 + 192 for c in (64, 256, 512, 1024, 2048))
    output = 5 * (192 * 192 * 9 + 192)
    assert count_parameters(model.encoder.feature_pyramid) == lateral + output
    assert count_parameters(model, trainable_only=True) == count_parameters(model) - 23_527_264
    # One full-size forward (about half a second on one CPU thread): token counts as in OpenHelix.
    batch = make_batch(model.config, batch_size=1)
    with torch.no_grad():
        fixed = model.encode_inputs(batch)
        assert fixed["context_feats"].shape == (1, 800, 192)
        assert fixed["fps_feats"].shape == (1, 266, 192) and fixed["fps_pos"].shape == (1, 266, 192, 2)
        losses = model.compute_loss(batch, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(losses["loss"])


# ------------------------------------------------------------------------------------- checkpoints
def test_save_load_round_trip_identical_outputs(tiny_model, tmp_path):
    custom = Normalization(gripper_loc_bounds=[[-0.4, -0.3, -0.2], [0.4, 0.35, 0.25]])
    torch.manual_seed(3)
    model = DiffuserActor(System1Config.tiny(), custom)
    model.save_pretrained(tmp_path / "ckpt")
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == [
        "config.json", "model.safetensors", "normalization.json"]
    loaded = DiffuserActor.from_pretrained(tmp_path / "ckpt")
    assert loaded.config == model.config
    assert loaded.normalization == custom
    batch = make_batch(model.config)
    a = model.predict_trajectory(batch, generator=torch.Generator().manual_seed(7))
    b = loaded.predict_trajectory(batch, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_from_pretrained_missing_file(tiny_model, tmp_path):
    tiny_model.save_pretrained(tmp_path)
    (tmp_path / "normalization.json").unlink()
    with pytest.raises(FileNotFoundError, match="normalization.json"):
        DiffuserActor.from_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        DiffuserActor.from_pretrained(tmp_path / "nowhere")


def test_from_pretrained_wrong_shape_and_missing_key(tiny_model, tmp_path):
    tiny_model.save_pretrained(tmp_path)
    weights = load_file(str(tmp_path / "model.safetensors"))
    weights["prediction_head.traj_encoder.weight"] = torch.zeros(5, 9)
    save_file(weights, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"prediction_head\.traj_encoder\.weight.*\(5, 9\)"):
        DiffuserActor.from_pretrained(tmp_path)
    del weights["prediction_head.traj_encoder.weight"]
    save_file(weights, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"missing key.*traj_encoder\.weight"):
        DiffuserActor.from_pretrained(tmp_path)


def test_from_pretrained_config_mismatch(tiny_model, tmp_path):
    tiny_model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["nhist"] = 2
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="curr_gripper_emb"):
        DiffuserActor.from_pretrained(tmp_path)


def test_load_original_checkpoint(tiny_model, tmp_path):
    state = tiny_model.state_dict()
    original = {}
    for key, value in state.items():
        old = key
        if key.startswith("encoder.feature_pyramid.") and key.endswith((".0.weight", ".0.bias")):
            old = key.replace(".0.weight", ".weight").replace(".0.bias", ".bias")  # old torchvision names
        original["module." + old] = value.clone()
    original["module.encoder.backbone.attnpool.positional_embedding"] = torch.zeros(2, 3)
    path = tmp_path / "3dda.pth"
    torch.save({"weight": original, "iter": 10, "best_loss": 0.5}, path)
    assert set(convert_original_state_dict(original)) == set(state)
    loaded = load_original_checkpoint(path, config=System1Config.tiny(), normalization=tiny_model.normalization)
    batch = make_batch(tiny_model.config)
    a = tiny_model.predict_trajectory(batch, generator=torch.Generator().manual_seed(2))
    b = loaded.predict_trajectory(batch, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(a, b, rtol=0, atol=0)

    original["module.prediction_head.position_predictor.2.weight"] = torch.zeros(4, 24)
    torch.save({"weight": original}, path)
    with pytest.raises(CheckpointError, match="position_predictor"):
        load_original_checkpoint(path, config=System1Config.tiny())
    with pytest.raises(FileNotFoundError):
        load_original_checkpoint(tmp_path / "absent.pth", config=System1Config.tiny())


class _TrainingArguments:
    """Stands for the argparse namespaces original training scripts pickle beside the weights."""

    def __init__(self):
        self.lr = 3e-4


class _RunsShellCommand:
    """Unpickles as ``os.system(command)``, as a crafted checkpoint would."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def test_original_checkpoint_with_pickled_objects_is_refused(tiny_model, tmp_path):
    weights = {"module." + key: value for key, value in tiny_model.state_dict().items()}
    path = tmp_path / "with_objects.pth"
    torch.save({"weight": weights, "args": _TrainingArguments()}, path)
    with pytest.raises(CheckpointError, match=r"(?s)weights_only=True.*refused.*_TrainingArguments"):
        load_original_checkpoint(path, config=System1Config.tiny())
    marker = tmp_path / "MARKER"
    torch.save({"weight": weights, "hook": _RunsShellCommand(f"touch {marker}")}, path)
    with pytest.raises(CheckpointError, match="system"):
        load_original_checkpoint(path, config=System1Config.tiny())
    assert not marker.exists()
    # no caller can switch full unpickling back on
    assert "weights_only" not in inspect.signature(load_original_checkpoint).parameters
    with pytest.raises(TypeError, match="weights_only"):
        load_original_checkpoint(path, config=System1Config.tiny(), weights_only=False)


# --------------------------------------------------------------------------------------- processor
K = np.array([[40.0, 0.0, 24.0], [0.0, 40.0, 24.0], [0.0, 0.0, 1.0]])
DOWN = np.array([[1.0, 0, 0, 0.5], [0, -1.0, 0, 0.0], [0, 0, -1.0, 1.0], [0, 0, 0, 1.0]])


def make_observation(static_size=48, gripper_size=20, **overrides):
    rng = np.random.default_rng(0)

    def frame(size):
        k = K.copy()
        k[:2] *= size / 48
        k[2, 2] = 1.0
        return CameraFrame(rgb=rng.integers(0, 256, (size, size, 3), dtype=np.uint8),
                           depth=np.full((size, size), 1.0, dtype=np.float32), intrinsics=k,
                           camera_to_base=DOWN.copy())

    fields = dict(cameras={"static": frame(static_size), "gripper": frame(gripper_size)},
                  ee_position=np.array([0.5, 0.0, 0.3]), ee_orientation=np.array([0.0, 0.0, 0.0, 2.0]),
                  gripper_openness=0.8, stamp=1.0)
    fields.update(overrides)
    return Observation(**fields)


def test_observation_to_batch_shapes_and_points():
    cfg = System1Config.tiny()
    proc = System1Processor(cfg)
    obs = make_observation()
    batch = proc.observation_to_batch(obs, np.ones(512, dtype=np.float32))
    s = cfg.image_size
    assert batch[RGB].shape == (1, 2, 3, s, s) and batch[PCD].shape == (1, 2, 3, s, s)
    assert batch[GOAL].shape == (1, 1, 512) and batch[CURRENT_GRIPPER].shape == (1, 1, 8)
    assert batch[RGB].dtype == torch.float32 and 0 <= batch[RGB].min() and batch[RGB].max() <= 1
    torch.testing.assert_close(batch[CURRENT_GRIPPER][0, 0], torch.tensor([0.5, 0, 0.3, 0, 0, 0, 1, 0.8]))
    pcd = batch[PCD][0]
    torch.testing.assert_close(pcd[:, 2], torch.zeros_like(pcd[:, 2]), atol=1e-6, rtol=0)  # table plane
    # Static view: 48 -> 40 (nearest) then centre crop 4:36; crop pixel (r, c) -> source pixel 1.2 * (r + 4).
    row = col = 10
    src = math.floor((col + 4) * 48 / 40)
    expected_x = 0.5 + (src - 24) * 1.0 / 40
    torch.testing.assert_close(pcd[0, 0, row, col], torch.tensor(expected_x, dtype=torch.float32))
    goal = proc.observation_to_batch(obs, np.zeros((3, 512)))[GOAL]
    assert goal.shape == (1, 3, 512)


def test_observation_invalid_depth_uses_camera_position():
    cfg = System1Config.tiny()
    obs = make_observation(static_size=40)
    obs.cameras["static"].depth[:, :] = 0.0
    batch = System1Processor(cfg).observation_to_batch(obs, np.zeros(512))
    torch.testing.assert_close(batch[PCD][0, 0, :, 5, 5], torch.tensor([0.5, 0.0, 1.0]))
    assert torch.isfinite(batch[PCD]).all()


def test_observation_history_padding():
    cfg = System1Config.tiny()
    cfg.nhist = 3
    proc = System1Processor(cfg)
    obs = make_observation()
    batch = proc.observation_to_batch(obs, np.zeros(512))
    grip = batch[CURRENT_GRIPPER][0]
    assert grip.shape == (3, 8) and torch.equal(grip[0], grip[2])
    older = np.array([0.4, 0.0, 0.3, 0, 0, 0, 1, 1.0])
    grip = proc.observation_to_batch(obs, np.zeros(512), history=[older])[CURRENT_GRIPPER][0]
    torch.testing.assert_close(grip[0, :3], torch.tensor([0.4, 0.0, 0.3]))
    torch.testing.assert_close(grip[1, :3], torch.tensor([0.4, 0.0, 0.3]))
    torch.testing.assert_close(grip[2, :3], torch.tensor([0.5, 0.0, 0.3]))


@pytest.mark.parametrize("kind, match", [
    ("missing_camera", "gripper"),
    ("nan_position", "non-finite"),
    ("bad_goal", "goal_embedding"),
    ("nan_goal", "goal_embedding"),
    ("bad_depth_shape", "depth"),
    ("nan_intrinsics", "intrinsics"),
])
def test_observation_bad_input(kind, match):
    proc = System1Processor(System1Config.tiny())
    goal = np.zeros(512)
    obs = make_observation()
    if kind == "missing_camera":
        obs = make_observation(cameras={"static": obs.cameras["static"]})
    elif kind == "nan_position":
        obs = make_observation(ee_position=np.array([np.nan, 0, 0]))
    elif kind == "bad_goal":
        goal = np.zeros(256)
    elif kind == "nan_goal":
        goal = np.full(512, np.nan)
    elif kind == "bad_depth_shape":
        f = obs.cameras["static"]
        obs.cameras["static"] = CameraFrame(f.rgb, f.depth[:-1], f.intrinsics, f.camera_to_base)
    elif kind == "nan_intrinsics":
        f = obs.cameras["static"]
        obs.cameras["static"] = CameraFrame(f.rgb, f.depth, np.full((3, 3), np.nan), f.camera_to_base)
    with pytest.raises(ValueError, match=match):
        proc.observation_to_batch(obs, goal)


def test_processor_batch_runs_through_model(tiny_model):
    batch = System1Processor(tiny_model.config).observation_to_batch(make_observation(), np.zeros(512))
    out = tiny_model.predict_trajectory(batch, generator=torch.Generator().manual_seed(0))
    assert out.shape == (1, 20, 8)


def test_trajectory_to_chunk_and_calvin_actions():
    proc = System1Processor(System1Config.tiny())
    traj = np.zeros((4, 8))
    traj[:, :3] = np.arange(12).reshape(4, 3)
    traj[:, 3:7] = [0.0, 0.0, math.sqrt(0.5), math.sqrt(0.5)]  # 90 deg about z
    traj[:, 7] = [0.9, 0.5, 0.2, 1.3]
    chunk = proc.trajectory_to_chunk(torch.tensor(traj)[None], control_period_s=1 / 30, goal_sequence=4,
                                     goal_instruction="open the drawer", goal_age=0.2)
    assert len(chunk) == 4
    np.testing.assert_allclose(chunk.time_from_start, np.arange(1, 5) / 30)
    np.testing.assert_allclose(chunk.positions, traj[:, :3])
    np.testing.assert_allclose(chunk.gripper_openness, [0.9, 0.5, 0.2, 1.0])
    assert chunk.goal_sequence == 4 and chunk.goal_instruction == "open the drawer"
    actions = proc.trajectory_to_calvin_actions(traj)
    assert actions.shape == (4, 7)
    np.testing.assert_allclose(actions[:, 3:6], np.tile([0.0, 0.0, math.pi / 2], (4, 1)), atol=1e-9)
    np.testing.assert_array_equal(actions[:, 6], [1.0, 1.0, -1.0, 1.0])
    with pytest.raises(ValueError, match="trajectory"):
        proc.trajectory_to_calvin_actions(np.zeros((4, 7)))
    with pytest.raises(ValueError, match="control_period_s"):
        proc.trajectory_to_chunk(traj, control_period_s=0.0)
    bad = traj.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        proc.trajectory_to_chunk(bad, control_period_s=0.1)
