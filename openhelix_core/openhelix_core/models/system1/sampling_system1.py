"""Samplers of System 1 and the per-call cache of its fast path.

A sampler turns Gaussian noise ``(B, T, 9)`` into a normalised trajectory by calling the
denoiser once per step:

- :class:`SchedulerLoop` drives diffusers schedulers, one for positions and one for
  rotations as in 3DDA: ``DDPMScheduler`` (the reference, stochastic, every training step)
  or ``DDIMScheduler`` (deterministic, any number of steps up to the training steps, noise
  levels spaced from the noisiest training level down: diffusers' ``"trailing"`` spacing,
  so the first step starts where training put pure noise);
- :class:`EulerLoop` integrates a flow-matching model from noise level 1 to 0.

:class:`CachedDenoiser` is :class:`~.modeling_system1.DiffusionHead`'s forward with the work
that does not depend on the noisy trajectory done once per call instead of once per step
(see :class:`~.configuration_system1.SamplerConfig`). It reads the head's own modules, so
it holds no weights of its own and follows any checkpoint loaded into the model.
"""
from __future__ import annotations

from typing import Mapping, Optional, Sequence, Union

import torch
from diffusers import DDIMScheduler, DDPMScheduler

from .configuration_system1 import FLOW_TIMESTEP_SCALE
from .layers import (
    FFWRelativeSelfCrossAttentionModule,
    MultiheadRelativeAttention,
    RelativeCrossAttentionLayer,
)


def random_normal(shape, generator: Union[None, torch.Generator, Sequence[torch.Generator]], device,
                  dtype) -> torch.Tensor:
    """Standard normal noise drawn on the generator's device, then moved to ``device``. With one
    generator per batch item, item ``b`` is drawn from ``generator[b]`` alone (as diffusers does),
    so a batch holds exactly the noise its items would draw one by one."""
    if isinstance(generator, (list, tuple)):
        if len(generator) != shape[0]:
            raise ValueError(f"{len(generator)} generators for a batch of {shape[0]}")
        return torch.cat([random_normal((1, *shape[1:]), g, device, dtype) for g in generator])
    gen_device = generator.device if generator is not None else device
    return torch.randn(shape, generator=generator, device=gen_device, dtype=dtype).to(device)


def ddim_schedulers(position: DDPMScheduler, rotation: DDPMScheduler) -> tuple[DDIMScheduler, DDIMScheduler]:
    """Deterministic DDIM schedulers with the noise schedules of the model's DDPM ones."""
    def like(ddpm: DDPMScheduler) -> DDIMScheduler:
        cfg = ddpm.config
        return DDIMScheduler(num_train_timesteps=cfg.num_train_timesteps, beta_schedule=cfg.beta_schedule,
                             beta_start=cfg.beta_start, beta_end=cfg.beta_end, prediction_type=cfg.prediction_type,
                             clip_sample=cfg.clip_sample, clip_sample_range=cfg.clip_sample_range,
                             set_alpha_to_one=True, timestep_spacing="trailing")
    return like(position), like(rotation)


class SchedulerLoop:
    """Denoising steps of a pair of diffusers schedulers (positions: channels 0-2, rotations:
    channels 3-8 of the ``(B, T, 9)`` sample), DDPM or DDIM.

    Attributes:
        timesteps: ``(S,)`` the network's timestep at each step, noisiest first.
    """

    def __init__(self, position, rotation, steps: int) -> None:
        self.position, self.rotation = position, rotation
        position.set_timesteps(steps)
        rotation.set_timesteps(steps)
        self.timesteps = position.timesteps

    def network_timestep(self, index: int, batch_size: int, device) -> torch.Tensor:
        """``(B,)`` long timesteps of step ``index``."""
        return torch.full((batch_size,), int(self.timesteps[index]), dtype=torch.long, device=device)

    def noised(self, target: torch.Tensor, index: int, generator: Optional[torch.Generator]) -> torch.Tensor:
        """Clean ``(B, K, 9)`` targets noised to the level of step ``index``."""
        noise = random_normal(target.shape, generator, target.device, target.dtype)
        timestep = self.network_timestep(index, target.shape[0], target.device)
        return torch.cat([
            self.position.add_noise(target[..., :3], noise[..., :3], timestep),
            self.rotation.add_noise(target[..., 3:9], noise[..., 3:9], timestep),
        ], dim=-1)

    def step(self, output: torch.Tensor, index: int, sample: torch.Tensor,
             generator: Optional[torch.Generator]) -> torch.Tensor:
        """Network ``output (B, T, 10)`` at step ``index`` -> the next, less noisy ``(B, T, 9)``."""
        t = self.timesteps[index]
        pos = self.position.step(output[..., :3], t, sample[..., :3], generator=generator).prev_sample
        rot = self.rotation.step(output[..., 3:9], t, sample[..., 3:9], generator=generator).prev_sample
        return torch.cat([pos, rot], dim=-1)


class EulerLoop:
    """Euler integration of a flow-matching model along ``x_s = (1 - s) x_0 + s noise`` from
    ``s = 1`` to ``s = 0`` in equal steps. Each step estimates ``x_0`` (clipped to [-1, 1], as
    DDPM clips its estimate) and moves to the next level on the straight line through it."""

    def __init__(self, steps: int, prediction_type: str) -> None:
        self.levels = [1.0 - index / steps for index in range(steps)] + [0.0]
        self.prediction_type = prediction_type
        self.timesteps = torch.tensor(self.levels[:-1]) * FLOW_TIMESTEP_SCALE

    def network_timestep(self, index: int, batch_size: int, device) -> torch.Tensor:
        """``(B,)`` float timesteps ``s * FLOW_TIMESTEP_SCALE`` of step ``index``."""
        return torch.full((batch_size,), float(self.timesteps[index]), device=device)

    def noised(self, target: torch.Tensor, index: int, generator: Optional[torch.Generator]) -> torch.Tensor:
        level = self.levels[index]
        noise = random_normal(target.shape, generator, target.device, target.dtype)
        return (1.0 - level) * target + level * noise

    def step(self, output: torch.Tensor, index: int, sample: torch.Tensor,
             generator: Optional[torch.Generator]) -> torch.Tensor:
        level, following = self.levels[index], self.levels[index + 1]
        prediction = output[..., :9]
        clean = prediction if self.prediction_type == "sample" else sample - level * prediction
        clean = clean.clamp(-1.0, 1.0)
        return clean + (following / level) * (sample - clean)


def _goal_attention(attention: MultiheadRelativeAttention, goal: torch.Tensor):
    """What attention to the goal tokens ``(B, L, F)`` needs per call: the constant output when
    ``L = 1`` (:meth:`~.layers.MultiheadRelativeAttention.single_key_output`), else the
    projected keys and values."""
    if goal.shape[1] == 1:
        return attention.single_key_output(goal)
    return attention.project_key_value(goal, goal)


def _cross_layer(layer: RelativeCrossAttentionLayer, cached, query: torch.Tensor,
                 time_embs: Optional[torch.Tensor], query_pos: Optional[torch.Tensor]) -> torch.Tensor:
    """:class:`~.layers.RelativeCrossAttentionLayer` forward on cached keys and values (a tuple)
    or on a cached single-key output (a tensor; the query is then not needed at all)."""
    if isinstance(cached, torch.Tensor):
        attended = cached
    else:
        modulated = layer.adaln(query, time_embs) if time_embs is not None else query
        attended = layer.multihead_attn.attend(modulated, cached, query_pos)
    return layer.norm(query + attended)


def single_goal_vision_language_attention(vl_attention, features: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
    """The encoder's scene -> goal attention (a :class:`~.layers.ParallelAttention`) for a goal of
    one token ``(B, 1, F)``: each layer adds the same attended vector to every scene token
    ``(B, N, F)``, so the scene's queries are never projected."""
    for layer in vl_attention.layers:
        features = layer.norm_12(features + layer.cross_12.single_key_output(goal))
        if layer.apply_ffn:
            features = layer.norm_122(features + layer.ffn_12(features))
    return features


class CachedDenoiser:
    """:class:`~.modeling_system1.DiffusionHead` forward for one call's encoder outputs.

    Computed once: the timestep embeddings of every step plus the proprioception embedding,
    the keys and values of all scene tokens for each trajectory -> scene cross-attention
    layer, and the goal attention of every goal cross-attention (a constant when the goal is
    one token, OpenHelix's case). The rotation and position heads' last layers run only for
    the ``T`` trajectory tokens, the only ones read from them.

    Args:
        head: the model's ``DiffusionHead`` (eval mode).
        fixed: :meth:`~.modeling_system1.DiffuserActor.encode_inputs` output.
        timesteps: ``(S, B)`` network timesteps of the call's steps.
    """

    def __init__(self, head, fixed: Mapping[str, Optional[torch.Tensor]], timesteps: torch.Tensor) -> None:
        self.head = head
        goal = fixed["goal_feats"]
        gripper = head.curr_gripper_emb(fixed["gripper_feats"].flatten(1))
        self.time_embs = [head.time_emb(t).to(gripper.dtype) + gripper for t in timesteps]
        self.context_kv = [layer.multihead_attn.project_key_value(fixed["context_feats"], fixed["context_feats"],
                                                                  fixed["context_pos"])
                           for layer in head.cross_attn.attn_layers]
        self.fps_feats, self.fps_pos = fixed["fps_feats"], fixed["fps_pos"]
        self.goal_cache: dict[int, object] = {}
        if head.use_instruction:
            self.traj_lang = _goal_attention(head.traj_lang_attention[0].layers[0].cross_12, goal)
        if head.lang_enhanced:
            for stack in (head.self_attn, head.rotation_self_attn, head.position_self_attn):
                for layer in stack.cross_attn_layers:
                    if layer is not None:
                        self.goal_cache[id(layer)] = _goal_attention(layer.multihead_attn, goal)

    def _trajectory_goal_attention(self, traj_feats: torch.Tensor, traj_time_pos: torch.Tensor) -> torch.Tensor:
        layer = self.head.traj_lang_attention[0].layers[0]
        if isinstance(self.traj_lang, torch.Tensor):
            attended = self.traj_lang
        else:
            attended = layer.cross_12.attend(traj_feats + traj_time_pos, self.traj_lang)
        return layer.norm_12(traj_feats + attended)

    def _stack(self, stack, features: torch.Tensor, rel_pos: torch.Tensor, time_embs: torch.Tensor,
               keep: Optional[int] = None) -> torch.Tensor:
        """One self-attention stack; with ``keep``, its last layer updates only the first
        ``keep`` tokens (they still attend to all)."""
        interleaved = isinstance(stack, FFWRelativeSelfCrossAttentionModule)
        attn_layers = stack.self_attn_layers if interleaved else stack.attn_layers
        for index in range(stack.num_layers):
            if interleaved and stack.cross_attn_layers[index] is not None:
                cross = stack.cross_attn_layers[index]
                features = _cross_layer(cross, self.goal_cache[id(cross)], features, time_embs, None)
            if keep is not None and index == stack.num_layers - 1:
                query, query_pos = features[:, :keep], rel_pos[:, :keep]
            else:
                query, query_pos = features, rel_pos
            features = attn_layers[index](query, features, time_embs, query_pos, rel_pos)
            features = stack.ffw_layers[index](features, time_embs)
        return features

    def __call__(self, trajectory: torch.Tensor, index: int) -> torch.Tensor:
        """``trajectory (B, T, 9)`` at step ``index`` -> ``(B, T, 10)`` as ``DiffusionHead``."""
        head = self.head
        num_traj = trajectory.shape[1]
        traj_feats = head.traj_encoder(trajectory)
        steps = torch.arange(num_traj, device=trajectory.device)
        # shape[0], not len(): an exported graph keeps the batch size symbolic
        traj_time_pos = head.traj_time_emb(steps).to(traj_feats.dtype)[None].expand(trajectory.shape[0], -1, -1)
        if head.use_instruction:
            traj_feats = self._trajectory_goal_attention(traj_feats, traj_time_pos)
        traj_feats = traj_feats + traj_time_pos
        time_embs = self.time_embs[index]

        rel_traj_pos = head.relative_pe_layer(trajectory[..., :3])
        for layer, ffw, key_value in zip(head.cross_attn.attn_layers, head.cross_attn.ffw_layers, self.context_kv):
            traj_feats = _cross_layer(layer, key_value, traj_feats, time_embs, rel_traj_pos)
            traj_feats = ffw(traj_feats, time_embs)
        features = torch.cat([traj_feats, self.fps_feats], dim=1)
        rel_pos = torch.cat([rel_traj_pos, self.fps_pos], dim=1)
        features = self._stack(head.self_attn, features, rel_pos, time_embs)

        rot_feats = self._stack(head.rotation_self_attn, features, rel_pos, time_embs, keep=num_traj)
        rotation = head.rotation_predictor(head.rotation_proj(rot_feats))
        pos_feats = head.position_proj(
            self._stack(head.position_self_attn, features, rel_pos, time_embs, keep=num_traj))
        return torch.cat([head.position_predictor(pos_feats), rotation, head.openess_predictor(pos_feats)], dim=-1)


__all__ = ["CachedDenoiser", "EulerLoop", "SchedulerLoop", "ddim_schedulers", "random_normal",
           "single_goal_vision_language_attention"]
