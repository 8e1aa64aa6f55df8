"""System 1 samplers: the fast path against the reference, DDIM and Euler against oracles,
flow matching, and the sampler configuration's refusals."""
import dataclasses

import pytest
import torch
from test_system1 import make_batch

from openhelix_core.models.system1 import (
    CURRENT_GRIPPER,
    GOAL,
    TRAJECTORY,
    DiffuserActor,
    SamplerConfig,
    System1Config,
)
from openhelix_core.models.system1.configuration_system1 import FLOW_TIMESTEP_SCALE
from openhelix_core.models.system1.fps import farthest_point_sample, farthest_point_sample_reference
from openhelix_core.models.system1.sampling_system1 import CachedDenoiser

pytestmark = pytest.mark.usefixtures("single_torch_thread")


def live_model(config: System1Config, seed: int = 0) -> DiffuserActor:
    """Random weights with the zero-initialised AdaLN modulations made non-zero, so that the
    timestep and proprioception really reach every layer (as in a trained model)."""
    torch.manual_seed(seed)
    model = DiffuserActor(config).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "adaln" in name:
                parameter.normal_(0.0, 0.05)
    return model


def inputs(config, batch_size=2, goal_tokens=1, seed=0):
    batch = make_batch(config, batch_size=batch_size, seed=seed)
    batch.pop(TRAJECTORY)
    batch[GOAL] = batch[GOAL][:, :1].repeat(1, goal_tokens, 1) + 0.1 * torch.randn(
        batch_size, goal_tokens, config.goal_dim, generator=torch.Generator().manual_seed(seed))
    return batch


def sample(model, batch, sampler, seed=3, committed=None):
    return model.predict_trajectory(batch, generator=torch.Generator().manual_seed(seed), sampler=sampler,
                                    committed=committed)


@pytest.mark.parametrize("overrides, goal_tokens", [
    ({}, 1),
    ({}, 3),  # a multi-token goal takes the cached key/value path instead of the constant
    ({"lang_enhanced": False}, 1),
    ({"lang_enhanced": False, "use_instruction": False}, 1),
    ({"prediction_type": "sample", "nhist": 2}, 1),
])
def test_fast_path_reproduces_the_reference_sampler(overrides, goal_tokens):
    config = dataclasses.replace(System1Config.tiny(), **overrides)
    model = live_model(config)
    batch = inputs(config, goal_tokens=goal_tokens)
    batch[CURRENT_GRIPPER] = batch[CURRENT_GRIPPER][:, :1].repeat(1, config.nhist, 1)
    reference = sample(model, batch, SamplerConfig.reference())
    fast = sample(model, batch, SamplerConfig(fast=True))
    torch.testing.assert_close(fast, reference, atol=2e-5, rtol=0)
    # the same noise, other weights: the two paths move together (the cache holds no weights)
    other = live_model(config, seed=1)
    assert (sample(other, batch, SamplerConfig(fast=True)) - fast).abs().max() > 1e-3


def test_fast_path_holds_committed_waypoints_as_the_reference_does():
    config = System1Config.tiny()
    model = live_model(config)
    batch = inputs(config)
    committed = sample(model, batch, SamplerConfig.reference(), seed=9)[:, :4]
    reference = sample(model, batch, SamplerConfig.reference(), committed=committed)
    fast = sample(model, batch, SamplerConfig(fast=True), committed=committed)
    torch.testing.assert_close(fast, reference, atol=2e-5, rtol=0)
    assert torch.equal(fast[:, :4], committed)


def test_cached_denoiser_matches_one_step_of_the_head_at_every_noise_level():
    config = System1Config.tiny()
    model = live_model(config)
    batch = inputs(config, batch_size=3)
    with torch.no_grad():
        fixed = model.encode_inputs(batch)
        timesteps = [torch.full((3,), t) for t in (0, 2, 4)]
        cached = CachedDenoiser(model.prediction_head, fixed, timesteps)
        trajectory = torch.randn(3, config.trajectory_length, 9, generator=torch.Generator().manual_seed(0))
        for index, timestep in enumerate(timesteps):
            torch.testing.assert_close(cached(trajectory, index), model.prediction_head(trajectory, timestep, fixed),
                                       atol=1e-5, rtol=0)


def test_fast_encoder_matches_the_reference_and_follows_new_weights():
    config = System1Config.tiny()
    model = live_model(config)
    batch = inputs(config)
    with torch.no_grad():
        for module in model.encoder.backbone.modules():  # BatchNorm with real statistics
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
        reference, fast = model.encode_inputs(batch), model.encode_inputs(batch, fast=True)
        for key in ("context_feats", "gripper_feats", "fps_feats"):
            torch.testing.assert_close(fast[key], reference[key], atol=1e-4, rtol=1e-4)
        folded = model.encoder.inference_backbone()
        assert model.encoder.inference_backbone() is folded  # reused while the weights stay
        state = {k: v + 0.01 for k, v in model.state_dict().items() if "backbone" in k and v.is_floating_point()}
        model.load_state_dict(state, strict=False)
        assert model.encoder.inference_backbone() is not folded
        torch.testing.assert_close(model.encode_inputs(batch, fast=True)["context_feats"],
                                   model.encode_inputs(batch)["context_feats"], atol=1e-4, rtol=1e-4)
    assert "_folded_backbone" not in "".join(model.state_dict())


class EpsilonOracle(torch.nn.Module):
    """Predicts the exact noise that separates the noisy input from a known clean target."""

    def __init__(self, model, target, logits):
        super().__init__()
        self.target, self.logits = target, logits
        self.position = model.position_noise_scheduler.alphas_cumprod
        self.rotation = model.rotation_noise_scheduler.alphas_cumprod

    def forward(self, trajectory, timestep, fixed):
        t = int(timestep[0])
        alpha = torch.tensor([float(self.position[t])] * 3 + [float(self.rotation[t])] * 6)
        noise = (trajectory - alpha.sqrt() * self.target) / (1 - alpha).sqrt()
        return torch.cat([noise, self.logits], dim=-1)


class VelocityOracle(torch.nn.Module):
    def __init__(self, target, logits):
        super().__init__()
        self.target, self.logits = target, logits

    def forward(self, trajectory, timestep, fixed):
        level = float(timestep[0]) / FLOW_TIMESTEP_SCALE
        return torch.cat([(trajectory - self.target) / level, self.logits], dim=-1)


def oracle_setup(config):
    model = DiffuserActor(config)
    batch = make_batch(config, batch_size=2)
    expected = batch.pop(TRAJECTORY)
    target, openness = model._targets(expected, batch[CURRENT_GRIPPER][:, -1])
    return model, batch, expected, target, torch.logit(openness.clamp(1e-4, 1 - 1e-4))


def assert_same_poses(out, expected):
    torch.testing.assert_close(out[..., :3], expected[..., :3], atol=1e-4, rtol=0)
    dots = (out[..., 3:7] * expected[..., 3:7]).sum(-1).abs()
    torch.testing.assert_close(dots, torch.ones_like(dots), atol=1e-4, rtol=0)


@pytest.mark.parametrize("steps", [1, 3, 10, 25])
def test_ddim_lands_on_the_trajectory_an_exact_noise_predictor_implies(steps):
    config = dataclasses.replace(System1Config.tiny(), diffusion_timesteps=25)
    model, batch, expected, target, logits = oracle_setup(config)
    model.prediction_head = EpsilonOracle(model, target, logits)
    out = sample(model, batch, SamplerConfig("ddim", steps))
    assert_same_poses(out, expected)
    # deterministic: only the starting noise is drawn
    loop = model._sampling_loop(SamplerConfig("ddim", steps).resolved(config))
    assert len(loop.timesteps) == steps and int(loop.timesteps[0]) == 24  # starts at the noisiest level


@pytest.mark.parametrize("prediction_type", ["velocity", "sample"])
@pytest.mark.parametrize("steps", [1, 2, 5])
def test_euler_lands_on_the_trajectory_an_exact_flow_implies(prediction_type, steps):
    config = dataclasses.replace(System1Config.tiny(), denoising="flow_matching", prediction_type=prediction_type)
    model, batch, expected, target, logits = oracle_setup(config)
    if prediction_type == "velocity":
        model.prediction_head = VelocityOracle(target, logits)
    else:
        model.prediction_head = torch.nn.Module()
        model.prediction_head.forward = lambda trajectory, timestep, fixed: torch.cat([target, logits], dim=-1)
    assert_same_poses(sample(model, batch, SamplerConfig("euler", steps)), expected)


def test_ddim_with_all_training_steps_differs_from_ddpm_only_by_ddpm_s_fresh_noise():
    config = dataclasses.replace(System1Config.tiny(), prediction_type="sample")
    model = live_model(config)
    batch = inputs(config)
    ddim_a = sample(model, batch, SamplerConfig("ddim", config.diffusion_timesteps, fast=True), seed=1)
    ddim_b = sample(model, batch, SamplerConfig("ddim", config.diffusion_timesteps), seed=1)
    torch.testing.assert_close(ddim_a, ddim_b, atol=2e-5, rtol=0)
    ddpm = sample(model, batch, SamplerConfig.reference(), seed=1)
    assert (ddpm - ddim_a).abs().max() > 1e-4


def test_flow_matching_loss_targets_the_velocity_and_the_model_learns_it():
    config = dataclasses.replace(System1Config.tiny(), denoising="flow_matching", prediction_type="velocity",
                                 diffusion_timesteps=4, dropout=0.0)
    torch.manual_seed(0)
    model = DiffuserActor(config)
    batch = make_batch(config, batch_size=2)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(150):
        loss = model.compute_loss(batch, generator=generator)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert sum(losses[-10:]) < 0.75 * sum(losses[:10])
    expected = batch.pop(TRAJECTORY)
    trained = sample(model, batch, None)
    untrained = sample(DiffuserActor(config).eval(), batch, None)
    error = (trained[..., :3] - expected[..., :3]).norm(dim=-1).mean()
    assert error < 0.5 * (untrained[..., :3] - expected[..., :3]).norm(dim=-1).mean()
    torch.testing.assert_close(sample(model, batch, SamplerConfig(fast=True)), trained, atol=2e-5, rtol=0)


@pytest.mark.parametrize("overrides, sampler, message", [
    ({}, SamplerConfig("euler"), "does not apply"),
    ({"denoising": "flow_matching", "prediction_type": "velocity"}, SamplerConfig("ddim", 3), "does not apply"),
    ({}, SamplerConfig("ddpm", 3), "use method 'ddim'"),
    ({}, SamplerConfig("ddim", 6), "cannot exceed"),
])
def test_samplers_that_do_not_fit_the_model_are_refused(overrides, sampler, message):
    model = DiffuserActor(dataclasses.replace(System1Config.tiny(), **overrides))
    with pytest.raises(ValueError, match=message):
        model.set_sampler(sampler)
    assert model.sampler == SamplerConfig.reference()


@pytest.mark.parametrize("fields, message", [
    ({"method": "dpm"}, "method"), ({"steps": 0}, "steps"), ({"steps": 2.5}, "steps"), ({"fast": "yes"}, "fast"),
])
def test_sampler_config_validates_itself(fields, message):
    with pytest.raises(ValueError, match=message):
        SamplerConfig(**fields)


@pytest.mark.parametrize("overrides", [
    {"denoising": "flow_matching"},  # epsilon is no flow-matching target
    {"prediction_type": "velocity"},  # velocity is no DDPM target
    {"denoising": "score"},
])
def test_config_refuses_objective_and_target_that_do_not_go_together(overrides):
    with pytest.raises(ValueError, match="denoising|prediction_type"):
        dataclasses.replace(System1Config.tiny(), **overrides)


def test_numpy_selection_loop_picks_the_reference_indices():
    points = torch.randn(3, 200, 16, generator=torch.Generator().manual_seed(0))
    for start in (0, 57):
        assert torch.equal(farthest_point_sample(points, 67, start), farthest_point_sample_reference(points, 67, start))


def test_sampler_label_names_method_steps_and_path():
    assert SamplerConfig("ddim", 5, True).describe() == "ddim-5-fast"
    assert SamplerConfig().describe() == "default-all"


@pytest.mark.parametrize("sampler", [SamplerConfig.reference(), SamplerConfig(fast=True), SamplerConfig("ddim", 3, True)])
def test_one_generator_per_item_makes_a_batch_equal_its_items_one_by_one(sampler):
    config = System1Config.tiny()
    model = live_model(config)
    batch = inputs(config, batch_size=3)
    together = model.predict_trajectory(batch, sampler=sampler,
                                        generator=[torch.Generator().manual_seed(s) for s in (5, 6, 7)])
    for index, seed in enumerate((5, 6, 7)):
        alone = model.predict_trajectory({k: v[index:index + 1] for k, v in batch.items()}, sampler=sampler,
                                         generator=torch.Generator().manual_seed(seed))
        torch.testing.assert_close(together[index:index + 1], alone, atol=2e-5, rtol=0)
    with pytest.raises(ValueError, match="2 generators for a batch of 3"):
        model.predict_trajectory(batch, sampler=sampler, generator=[torch.Generator(), torch.Generator()])


def test_controller_takes_a_sampler_that_suits_its_model_and_refuses_one_that_does_not():
    from openhelix_core.runtime.controller import TrajectoryController

    controller = TrajectoryController.load(preset="tiny", sampler=SamplerConfig("ddim", 2, fast=True))
    assert controller.model.sampler == SamplerConfig("ddim", 2, fast=True)
    with pytest.raises(ValueError, match="euler"):
        TrajectoryController.load(preset="tiny", sampler=SamplerConfig("euler"))
