"""System 1 of OpenHelix: 3D Diffuser Actor (3DDA) for CALVIN.

An independent implementation of ``DiffuserActor`` from nickgkan/3d_diffuser_actor
(``diffuser_actor/trajectory_optimization/diffuser_actor.py`` and
``diffuser_actor/utils/encoder.py``) with the options OpenHelix uses on CALVIN
(``use_instruction=1``, ``lang_enhanced=1``, ``relative_action=1``,
``rotation_parametrization=6D``). Module and parameter names mirror the original
so that its checkpoints load (:func:`load_original_checkpoint`).

Pipeline (``F = embedding_dim``, ``N`` scene tokens, ``K = N // fps_factor``):

1. *Scene tokens*: each camera's RGB goes through CLIP's modified ResNet-50 and a
   feature pyramid; the ``feature_level`` map (res3, 1/8 resolution) gives
   ``(B, N, F)`` features, and the point map, bilinearly resized to that grid,
   gives their ``(B, N, 3)`` positions (relative to the current gripper in
   ``relative`` mode, then normalised to [-1, 1] with ``gripper_loc_bounds``).
2. *Goal tokens*: System 2's ``(B, L, 512)`` goal is projected to ``F``; scene
   features cross-attend to it (``vl_attention``).
3. *Proprioception*: ``nhist`` learned queries at the gripper positions
   cross-attend to the scene with 3-D rotary relative attention; flattened and
   added to the diffusion-timestep embedding they form the AdaLN signal.
4. *Farthest point sampling* on the scene *feature vectors* keeps ``K`` tokens.
5. *Denoiser*: noisy trajectory tokens (position + 6-D rotation, ``(B, T, 9)``)
   cross-attend to the goal, then to all scene tokens, then self-attend jointly
   with the ``K`` sampled tokens (goal cross-attention interleaved), then split
   into a rotation head and a position head (each a small self-attention stack
   plus MLP) and an openness head on the position features.
6. *Diffusion*: DDPM (diffusers) with ``scaled_linear`` betas for positions and
   ``squaredcos_cap_v2`` for rotations, epsilon prediction; training loss
   ``30 L1(pos) + 10 L1(rot) + BCE(openness)``.

Rotations: the public interface uses true quaternions ``(x, y, z, w)``. In
``relative`` (CALVIN) mode a waypoint's rotation is represented, as in 3DDA's
CALVIN pipeline, by the wrapped Euler-angle difference ``wrap(e_wp - e_cur)`` of
the CALVIN (extrinsic ``xyz``) Euler angles, turned into a rotation matrix with
``config.euler_convention`` (3DDA: pytorch3d ``"XYZ"``) and then into 6-D; the
inverse (``e_cur + delta``) converts predictions back to absolute poses
(3DDA ``relative_to_absolute``). Positions are offsets from the current gripper.

Differences from the original code (behaviour otherwise matches it):

- the frozen CLIP ResNet keeps its BatchNorm layers in eval mode during training
  (3DDA only sets ``requires_grad=False``, so its BatchNorm follows ``model.train()``);
- CLIP's attention pool is not built (3DDA never runs it);
- goal cross-attention inside the denoiser is batch-correct for any ``L``; the
  original passes batch-first goal tokens to a sequence-first attention there,
  which is exact only for ``B = 1`` or ``L = 1`` (OpenHelix's single goal token);
- the always-empty start/end conditioning mask of ``conditional_sample`` is dropped;
- openness is returned as a probability (sigmoid of the logit), as in 3DDA's
  later ``compute_trajectory``.
"""
from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from safetensors.torch import load_file, save_file
from torch import nn

from ... import geometry
from ...checkpoint_keys import CheckpointError, ConvertedState, KeyMapping
from .clip_resnet import CLIPResNetFeatures
from .configuration_system1 import FLOW_TIMESTEP_SCALE, Normalization, SamplerConfig, System1Config
from .fpn import FeaturePyramidNetwork
from .fps import farthest_point_sample
from .keys import CURRENT_GRIPPER, GOAL, PCD, RGB, TRAJECTORY
from .layers import (
    FFWRelativeCrossAttentionModule,
    FFWRelativeSelfAttentionModule,
    FFWRelativeSelfCrossAttentionModule,
    ParallelAttention,
    RotaryPositionEncoding3D,
    SinusoidalPosEmb,
)
from .sampling_system1 import (
    CachedDenoiser,
    EulerLoop,
    SchedulerLoop,
    ddim_schedulers,
    random_normal,
    single_goal_vision_language_attention,
)

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
NORMALIZATION_FILE = "normalization.json"
_LEVELS = ("res1", "res2", "res3", "res4", "res5")


# ---------------------------------------------------------------------------------------------
# Encoder
# ---------------------------------------------------------------------------------------------
class Encoder(nn.Module):
    """Scene, goal and proprioception encoder (3DDA ``Encoder`` with one sampling level)."""

    def __init__(self, config: System1Config):
        super().__init__()
        width = config.embedding_dim
        self.feature_level = config.feature_level
        self.fps_subsampling_factor = config.fps_subsampling_factor
        self.freeze_backbone = config.freeze_backbone
        self.backbone = CLIPResNetFeatures(config.backbone_layers, config.backbone_width)
        if config.freeze_backbone:
            self.backbone.requires_grad_(False)
        self.feature_pyramid = FeaturePyramidNetwork(
            [self.backbone.out_channels[name] for name in _LEVELS], width, list(_LEVELS))
        self.relative_pe_layer = RotaryPositionEncoding3D(width)
        self.curr_gripper_embed = nn.Embedding(config.nhist, width)
        self.gripper_context_head = FFWRelativeCrossAttentionModule(
            width, config.num_attn_heads, num_layers=config.num_gripper_context_layers, use_adaln=False)
        # Unused by trajectory prediction; kept so 3DDA checkpoints load unchanged.
        self.goal_gripper_embed = nn.Embedding(1, width)
        self.instruction_encoder = nn.Linear(config.goal_dim, width)
        self.vl_attention = nn.ModuleList([ParallelAttention(
            config.num_vis_ins_attn_layers, width, config.num_attn_heads, dropout=config.dropout)])
        # (weights version, backbone copy with BatchNorm folded) for the fast path; inside a
        # tuple so that the copy is no submodule (not in state_dict, not moved by .to()).
        self._folded_backbone: Optional[tuple] = None

    def train(self, mode: bool = True) -> "Encoder":
        super().train(mode)
        if self.freeze_backbone:
            self.backbone.eval()  # frozen backbone: BatchNorm always uses its running statistics
        return self

    def inference_backbone(self) -> CLIPResNetFeatures:
        """The backbone with BatchNorm folded into its convolutions, rebuilt whenever the
        backbone's tensors change (loading weights, training, moving device or dtype)."""
        if torch.compiler.is_compiling() and self._folded_backbone is not None:
            # Traced tensors (ONNX export) have no addresses: the caller builds the copy first.
            return self._folded_backbone[1]
        tensors = list(self.backbone.parameters()) + list(self.backbone.buffers())
        version = tuple((t.data_ptr(), t.dtype, t._version) for t in tensors)
        if self._folded_backbone is None or self._folded_backbone[0] != version:
            with torch.inference_mode(False), torch.no_grad():  # ordinary tensors, usable in any mode
                self._folded_backbone = (version, self.backbone.with_batch_norm_folded())
        return self._folded_backbone[1]

    def encode_images(self, rgb: torch.Tensor, pcd: torch.Tensor, fast: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """``rgb (B, ncam, 3, H, W)`` in [0, 1], ``pcd (B, ncam, 3, H, W)`` ->
        features ``(B, ncam*h*w, F)`` and positions ``(B, ncam*h*w, 3)``. ``fast`` (inference
        only) runs :meth:`inference_backbone`."""
        batch, ncam = rgb.shape[:2]
        images = self.backbone.normalize(rgb.flatten(0, 1))
        if fast and not self.training:
            pyramid = self.inference_backbone()(images)
        else:
            with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_backbone):
                pyramid = self.backbone(images)
        features = self.feature_pyramid(pyramid, levels=[self.feature_level])[self.feature_level]
        h, w = features.shape[-2:]
        points = F.interpolate(pcd.flatten(0, 1), (h, w), mode="bilinear")
        features = features.view(batch, ncam, -1, h, w).permute(0, 1, 3, 4, 2).reshape(batch, ncam * h * w, -1)
        points = points.view(batch, ncam, 3, h, w).permute(0, 1, 3, 4, 2).reshape(batch, ncam * h * w, 3)
        return features, points

    def encode_instruction(self, goal: torch.Tensor) -> torch.Tensor:
        """``(B, L, goal_dim)`` -> ``(B, L, F)``."""
        return self.instruction_encoder(goal)

    def vision_language_attention(self, features: torch.Tensor, goal_features: torch.Tensor) -> torch.Tensor:
        """Scene ``(B, N, F)`` cross-attends to goal ``(B, L, F)`` -> ``(B, N, F)``."""
        return self.vl_attention[0](features, goal_features)

    def encode_curr_gripper(self, gripper_pos: torch.Tensor, context_feats: torch.Tensor,
                            context_pos: torch.Tensor) -> torch.Tensor:
        """Learned queries at ``gripper_pos (B, nhist, 3)`` attend to the scene -> ``(B, nhist, F)``."""
        batch = gripper_pos.shape[0]
        queries = self.curr_gripper_embed.weight.unsqueeze(0).expand(batch, -1, -1)
        return self.gripper_context_head(
            queries, context_feats, query_pos=self.relative_pe_layer(gripper_pos), value_pos=context_pos)

    def run_fps(self, context_feats: torch.Tensor, context_pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Farthest point sampling on features ``(B, N, F)`` (start 0, keep ``max(N // factor, 1)``)
        -> ``(B, K, F)`` features and ``(B, K, F, 2)`` rotary codes."""
        batch, npts, width = context_feats.shape
        indices = farthest_point_sample(context_feats.detach(), max(npts // self.fps_subsampling_factor, 1), 0)
        feats = torch.gather(context_feats, 1, indices.unsqueeze(-1).expand(-1, -1, width))
        pos = torch.gather(context_pos, 1, indices[:, :, None, None].expand(-1, -1, *context_pos.shape[2:]))
        return feats, pos


# ---------------------------------------------------------------------------------------------
# Denoising head
# ---------------------------------------------------------------------------------------------
class DiffusionHead(nn.Module):
    """Denoising transformer (3DDA ``DiffusionHead``); outputs ``(B, T, 3 + 6 + 1)``."""

    def __init__(self, config: System1Config):
        super().__init__()
        width, heads = config.embedding_dim, config.num_attn_heads
        self.use_instruction = config.use_instruction
        self.lang_enhanced = config.lang_enhanced
        self.traj_encoder = nn.Linear(9, width)
        self.relative_pe_layer = RotaryPositionEncoding3D(width)
        self.time_emb = nn.Sequential(
            SinusoidalPosEmb(width), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, width))
        self.curr_gripper_emb = nn.Sequential(
            nn.Linear(width * config.nhist, width), nn.ReLU(), nn.Linear(width, width))
        self.traj_time_emb = SinusoidalPosEmb(width)
        self.traj_lang_attention = nn.ModuleList([ParallelAttention(
            1, width, heads, dropout=config.dropout, apply_ffn=False)])
        self.cross_attn = FFWRelativeCrossAttentionModule(
            width, heads, num_layers=config.num_cross_attn_layers, use_adaln=True)

        def stack(num_self: int, num_cross: int) -> nn.Module:
            if self.lang_enhanced:
                return FFWRelativeSelfCrossAttentionModule(width, heads, num_self, num_cross, use_adaln=True)
            return FFWRelativeSelfAttentionModule(width, heads, num_self, use_adaln=True)

        self.self_attn = stack(config.num_self_attn_layers, config.num_self_lang_cross_layers)
        self.rotation_proj = nn.Linear(width, width)
        self.rotation_self_attn = stack(config.num_head_attn_layers, config.num_head_lang_cross_layers)
        self.rotation_predictor = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 6))
        self.position_proj = nn.Linear(width, width)
        self.position_self_attn = stack(config.num_head_attn_layers, config.num_head_lang_cross_layers)
        self.position_predictor = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 3))
        self.openess_predictor = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 1))

    def _attend(self, module: nn.Module, features, rel_pos, time_embs, goal_feats):
        if self.lang_enhanced:
            return module(features, goal_feats, diff_ts=time_embs, query_pos=rel_pos, context_pos=None)
        return module(features, diff_ts=time_embs, query_pos=rel_pos)

    def forward(self, trajectory: torch.Tensor, timestep: torch.Tensor,
                fixed: Mapping[str, Optional[torch.Tensor]]) -> torch.Tensor:
        """
        Args:
            trajectory: ``(B, T, 9)`` noisy normalised positions and 6-D rotations.
            timestep: ``(B,)`` diffusion steps.
            fixed: encoder outputs (see :meth:`DiffuserActor.encode_inputs`).

        Returns:
            ``(B, T, 10)``: position noise (3), rotation noise (6), openness logit (1).
        """
        goal_feats = fixed["goal_feats"]
        traj_feats = self.traj_encoder(trajectory)
        steps = torch.arange(trajectory.shape[1], device=trajectory.device)
        traj_time_pos = self.traj_time_emb(steps).to(traj_feats.dtype)[None].expand(len(trajectory), -1, -1)
        if self.use_instruction:
            traj_feats = self.traj_lang_attention[0](traj_feats, goal_feats, seq1_sem_pos=traj_time_pos)
        traj_feats = traj_feats + traj_time_pos

        gripper_feats = fixed["gripper_feats"]
        time_embs = self.time_emb(timestep).to(traj_feats.dtype) + self.curr_gripper_emb(gripper_feats.flatten(1))

        rel_traj_pos = self.relative_pe_layer(trajectory[..., :3])
        traj_feats = self.cross_attn(traj_feats, fixed["context_feats"], time_embs,
                                     rel_traj_pos, fixed["context_pos"])
        features = torch.cat([traj_feats, fixed["fps_feats"]], dim=1)
        rel_pos = torch.cat([rel_traj_pos, fixed["fps_pos"]], dim=1)
        features = self._attend(self.self_attn, features, rel_pos, time_embs, goal_feats)
        num_traj = trajectory.shape[1]

        rot_feats = self._attend(self.rotation_self_attn, features, rel_pos, time_embs, goal_feats)
        rotation = self.rotation_predictor(self.rotation_proj(rot_feats[:, :num_traj]))
        pos_feats = self._attend(self.position_self_attn, features, rel_pos, time_embs, goal_feats)
        pos_feats = self.position_proj(pos_feats[:, :num_traj])
        position = self.position_predictor(pos_feats)
        openness = self.openess_predictor(pos_feats)
        return torch.cat([position, rotation, openness], dim=-1)


# ---------------------------------------------------------------------------------------------
# Full policy
# ---------------------------------------------------------------------------------------------
class DiffuserActor(nn.Module):
    """3D Diffuser Actor trajectory policy (OpenHelix System 1).

    Args:
        config: architecture (:class:`System1Config`).
        normalization: workspace statistics; defaults to OpenHelix's CALVIN ABC->D
            relative-trajectory bounds.

    Batch (keys in :mod:`.keys`): ``RGB (B, ncam, 3, H, W)`` in [0, 1], ``PCD
    (B, ncam, 3, H, W)`` base-frame metres, ``GOAL (B, L, goal_dim)``,
    ``CURRENT_GRIPPER (B, nhist, 8)`` and, for training, ``TRAJECTORY (B, T, 8)``;
    poses are ``[x, y, z, qx, qy, qz, qw, openness]``.
    """

    def __init__(self, config: System1Config, normalization: Optional[Normalization] = None):
        super().__init__()
        self.config = config
        self.normalization = normalization if normalization is not None else Normalization()
        self.encoder = Encoder(config)
        self.prediction_head = DiffusionHead(config)
        self.position_noise_scheduler = DDPMScheduler(
            num_train_timesteps=config.diffusion_timesteps,
            beta_schedule=config.position_beta_schedule, prediction_type=config.prediction_type)
        self.rotation_noise_scheduler = DDPMScheduler(
            num_train_timesteps=config.diffusion_timesteps,
            beta_schedule=config.rotation_beta_schedule, prediction_type=config.prediction_type)
        self.sampler = SamplerConfig.reference()
        self.ddim_schedulers = ddim_schedulers(self.position_noise_scheduler, self.rotation_noise_scheduler)
        self.register_buffer("gripper_loc_bounds",
                             torch.tensor(self.normalization.gripper_loc_bounds, dtype=torch.float32),
                             persistent=False)
        self.register_buffer("goal_statistics", None, persistent=False)  # (2, goal_dim) mean, std
        self._load_goal_statistics()

    def _load_goal_statistics(self) -> None:
        norm = self.normalization
        if norm.goal_mean is None:
            self.goal_statistics = None
            return
        if len(norm.goal_mean) != self.config.goal_dim:
            raise ValueError(f"Normalization.goal_mean has {len(norm.goal_mean)} values, goal_dim is "
                             f"{self.config.goal_dim}")
        self.goal_statistics = torch.tensor([norm.goal_mean, norm.goal_std], dtype=torch.float32,
                                            device=self.gripper_loc_bounds.device)

    def set_position_bounds(self, gripper_loc_bounds, action_position_bounds=None) -> None:
        """Normalise positions with new ``(2, 3)`` bounds from now on (fine-tuning on another robot's
        workspace); ``action_position_bounds`` replaces the clipping box when given."""
        changes = {"gripper_loc_bounds": gripper_loc_bounds}
        if action_position_bounds is not None:
            changes["action_position_bounds"] = action_position_bounds
        self.normalization = dataclasses.replace(self.normalization, **changes)
        self.gripper_loc_bounds = torch.tensor(self.normalization.gripper_loc_bounds, dtype=torch.float32,
                                               device=self.gripper_loc_bounds.device)

    def set_sampler(self, sampler: SamplerConfig) -> None:
        """Sample with ``sampler`` from now on when :meth:`predict_trajectory` is given none;
        raises ValueError when it does not apply to this model (see
        :meth:`SamplerConfig.resolved`)."""
        sampler.resolved(self.config)
        self.sampler = sampler

    def _sampling_loop(self, sampler: SamplerConfig):
        if sampler.method == "euler":
            return EulerLoop(sampler.steps, self.config.prediction_type)
        if sampler.method == "ddim":
            return SchedulerLoop(*self.ddim_schedulers, sampler.steps)
        return SchedulerLoop(self.position_noise_scheduler, self.rotation_noise_scheduler, sampler.steps)

    def set_goal_statistics(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Standardise goals with ``(goal_dim,)`` ``mean`` / ``std`` from now on (stored in the
        checkpoint's ``normalization.json``)."""
        self.normalization = dataclasses.replace(self.normalization, goal_mean=tuple(mean.tolist()),
                                                 goal_std=tuple(std.tolist()))
        self._load_goal_statistics()

    # -- normalisation ---------------------------------------------------------------------
    def normalize_pos(self, pos: torch.Tensor) -> torch.Tensor:
        """Map positions ``(..., 3)`` from ``gripper_loc_bounds`` to [-1, 1]."""
        low, high = self.gripper_loc_bounds[0].to(pos), self.gripper_loc_bounds[1].to(pos)
        return (pos - low) / (high - low) * 2.0 - 1.0

    def unnormalize_pos(self, pos: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`normalize_pos`."""
        low, high = self.gripper_loc_bounds[0].to(pos), self.gripper_loc_bounds[1].to(pos)
        return (pos + 1.0) / 2.0 * (high - low) + low

    # -- rotation conventions ----------------------------------------------------------------
    def _rotation_to_model(self, quat: torch.Tensor, current_quat: torch.Tensor) -> torch.Tensor:
        """Absolute xyzw quaternions ``(B, T, 4)`` -> network rotation matrices ``(B, T, 3, 3)``."""
        conv = self.config.euler_convention
        if self.config.relative:
            euler = geometry.quaternion_to_euler(quat, "xyz")
            current = geometry.quaternion_to_euler(current_quat, "xyz").unsqueeze(1)
            return geometry.euler_to_matrix(geometry.wrap_angle(euler - current), conv)
        if conv == "xyz":
            return geometry.quaternion_to_matrix(quat)
        return geometry.euler_to_matrix(geometry.quaternion_to_euler(quat, "xyz"), conv)

    def _rotation_from_model(self, matrix: torch.Tensor, current_quat: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`_rotation_to_model` -> absolute xyzw quaternions ``(B, T, 4)``."""
        conv = self.config.euler_convention
        if self.config.relative:
            delta = geometry.matrix_to_euler(matrix, conv)
            current = geometry.quaternion_to_euler(current_quat, "xyz").unsqueeze(1)
            return geometry.euler_to_quaternion(current + delta, "xyz")
        if conv == "xyz":
            return geometry.matrix_to_quaternion(matrix)
        return geometry.euler_to_quaternion(geometry.matrix_to_euler(matrix, conv), "xyz")

    # -- batch handling ------------------------------------------------------------------------
    def _check_batch(self, batch: Mapping[str, torch.Tensor], training: bool) -> None:
        cfg = self.config
        required = [RGB, PCD, CURRENT_GRIPPER] + ([GOAL] if cfg.use_instruction else [])
        if training:
            required.append(TRAJECTORY)
        missing = [key for key in required if key not in batch]
        if missing:
            raise ValueError(f"System 1 batch is missing key(s) {missing}")
        rgb = batch[RGB]
        if rgb.dim() != 5 or rgb.shape[1] != len(cfg.cameras) or rgb.shape[2] != 3:
            raise ValueError(f"batch[{RGB!r}] must be (B, {len(cfg.cameras)}, 3, H, W), got {tuple(rgb.shape)}")
        batch_size = rgb.shape[0]
        if rgb.shape[-1] % cfg.feature_stride or rgb.shape[-2] % cfg.feature_stride:
            raise ValueError(f"batch[{RGB!r}] spatial size {tuple(rgb.shape[-2:])} must be divisible by "
                             f"{cfg.feature_stride}")
        if tuple(batch[PCD].shape) != tuple(rgb.shape):
            raise ValueError(f"batch[{PCD!r}] must match rgb shape {tuple(rgb.shape)}, got "
                             f"{tuple(batch[PCD].shape)}")
        grip = batch[CURRENT_GRIPPER]
        if tuple(grip.shape) != (batch_size, cfg.nhist, 8):
            raise ValueError(f"batch[{CURRENT_GRIPPER!r}] must be ({batch_size}, {cfg.nhist}, 8), got "
                             f"{tuple(grip.shape)}")
        if cfg.use_instruction:
            goal = batch[GOAL]
            if goal.dim() != 3 or goal.shape[0] != batch_size or goal.shape[2] != cfg.goal_dim \
                    or goal.shape[1] < 1:
                raise ValueError(f"batch[{GOAL!r}] must be ({batch_size}, L>=1, {cfg.goal_dim}), got "
                                 f"{tuple(goal.shape)}")
        if training:
            traj = batch[TRAJECTORY]
            if traj.dim() != 3 or traj.shape[0] != batch_size or traj.shape[2] != 8:
                raise ValueError(f"batch[{TRAJECTORY!r}] must be ({batch_size}, T, 8), got {tuple(traj.shape)}")
        for key in required:
            if not torch.isfinite(batch[key]).all():
                raise ValueError(f"batch[{key!r}] contains non-finite values")

    def encode_inputs(self, batch: Mapping[str, torch.Tensor], fast: bool = False) -> dict[str, Optional[torch.Tensor]]:
        """Encode everything that does not depend on the noisy trajectory.

        With ``fast`` (inference only) the backbone runs with BatchNorm folded
        (:meth:`Encoder.inference_backbone`) and, for a goal of one token, the scene -> goal
        attention skips the scene's query projections
        (:func:`~.sampling_system1.single_goal_vision_language_attention`).

        Returns a dict with ``context_feats (B, N, F)``, ``context (B, N, 3)``
        (normalised positions), ``context_pos (B, N, F, 2)``, ``goal_feats (B, L, F)``
        or None, ``gripper_feats (B, nhist, F)``, ``fps_feats (B, K, F)``,
        ``fps_pos (B, K, F, 2)`` and ``current (B, 8)`` (the absolute current pose).
        """
        fixed = self.encode_scene(batch, fast=fast)
        fixed["fps_feats"], fixed["fps_pos"] = self.encoder.run_fps(fixed["context_feats"], fixed["context_pos"])
        return fixed

    def encode_scene(self, batch: Mapping[str, torch.Tensor], fast: bool = False) -> dict[str, Optional[torch.Tensor]]:
        """:meth:`encode_inputs` without farthest point sampling (a data-dependent loop, which
        an exported graph leaves to the caller): all its keys but ``fps_feats`` / ``fps_pos``."""
        dtype = self.gripper_loc_bounds.dtype
        rgb = batch[RGB].to(dtype)
        pcd = batch[PCD].to(dtype)
        grip = batch[CURRENT_GRIPPER].to(dtype)
        current = grip[:, -1]
        grip_pos = grip[..., :3]
        if self.config.relative:
            center = current[:, :3]
            pcd = pcd - center[:, None, :, None, None]
            grip_pos = grip_pos - center[:, None, :]
        pcd = self.normalize_pos(pcd.permute(0, 1, 3, 4, 2)).permute(0, 1, 4, 2, 3)
        grip_pos = self.normalize_pos(grip_pos)

        context_feats, context = self.encoder.encode_images(rgb, pcd, fast=fast)
        goal_feats = None
        if self.config.use_instruction:
            goal = batch[GOAL].to(dtype)
            if self.goal_statistics is not None:
                goal = (goal - self.goal_statistics[0]) / self.goal_statistics[1]
            goal_feats = self.encoder.encode_instruction(goal)
            if fast and goal_feats.shape[1] == 1:
                context_feats = single_goal_vision_language_attention(
                    self.encoder.vl_attention[0], context_feats, goal_feats)
            else:
                context_feats = self.encoder.vision_language_attention(context_feats, goal_feats)
        context_pos = self.encoder.relative_pe_layer(context)
        gripper_feats = self.encoder.encode_curr_gripper(grip_pos, context_feats, context_pos)
        return {
            "context_feats": context_feats, "context": context, "context_pos": context_pos,
            "goal_feats": goal_feats, "gripper_feats": gripper_feats, "current": current,
        }

    def _targets(self, trajectory: torch.Tensor, current: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Absolute ``(B, T, 8)`` -> network targets ``(B, T, 9)`` and openness ``(B, T, 1)``."""
        pos = trajectory[..., :3]
        if self.config.relative:
            pos = pos - current[:, None, :3]
        quat = geometry.normalize_quaternion(trajectory[..., 3:7])
        matrix = self._rotation_to_model(quat, current[:, 3:7])
        target = torch.cat([self.normalize_pos(pos), geometry.matrix_to_rotation_6d(matrix)], dim=-1)
        return target, trajectory[..., 7:8]

    def _to_absolute(self, sample: torch.Tensor, openness_logit: torch.Tensor,
                     current: torch.Tensor) -> torch.Tensor:
        """Network sample ``(B, T, 9)`` + logits ``(B, T, 1)`` -> absolute ``(B, T, 8)``."""
        pos = self.unnormalize_pos(sample[..., :3])
        if self.config.relative:
            pos = pos + current[:, None, :3]
        bounds = self.normalization.action_position_bounds
        if bounds is not None:
            bounds_t = torch.tensor(bounds, dtype=pos.dtype, device=pos.device)
            pos = torch.maximum(torch.minimum(pos, bounds_t[1]), bounds_t[0])
        matrix = geometry.rotation_6d_to_matrix(sample[..., 3:9])
        quat = self._rotation_from_model(matrix, geometry.normalize_quaternion(current[:, 3:7]))
        return torch.cat([pos, quat, torch.sigmoid(openness_logit)], dim=-1)

    # -- training ----------------------------------------------------------------------------
    def compute_loss(self, batch: Mapping[str, torch.Tensor],
                     generator: Optional[torch.Generator] = None) -> dict[str, torch.Tensor]:
        """Denoising loss on one batch.

        Args:
            batch: see class docstring; ``TRAJECTORY (B, T, 8)`` absolute targets
                (any ``T``; the model is trained with ``config.trajectory_length``).
            generator: optional RNG for noise and timesteps.

        Returns:
            ``{"loss", "position", "rotation", "openness"}`` scalars where
            ``position``/``rotation`` are the unweighted L1 errors of the predicted
            noise (``prediction_type="epsilon"``), normalised trajectory (``"sample"``) or
            flow velocity ``noise - trajectory`` (``"velocity"``), ``openness`` the BCE of the openness logits, and
            ``loss = 30 position + 10 rotation + openness`` (weights from config).
        """
        self._check_batch(batch, training=True)
        fixed = self.encode_inputs(batch)
        target, openness = self._targets(batch[TRAJECTORY].to(fixed["current"].dtype), fixed["current"])
        batch_size = target.shape[0]
        noise = random_normal(target.shape, generator, target.device, target.dtype)
        gen_device = generator.device if generator is not None else target.device
        if self.config.denoising == "flow_matching":
            levels = torch.rand((batch_size,), generator=generator, device=gen_device).to(target)
            level = levels[:, None, None]
            noisy = (1.0 - level) * target + level * noise
            timesteps = levels * FLOW_TIMESTEP_SCALE
        else:
            timesteps = torch.randint(0, self.position_noise_scheduler.config.num_train_timesteps,
                                      (batch_size,), generator=generator, device=gen_device).to(target.device)
            noisy = torch.cat([
                self.position_noise_scheduler.add_noise(target[..., :3], noise[..., :3], timesteps),
                self.rotation_noise_scheduler.add_noise(target[..., 3:9], noise[..., 3:9], timesteps),
            ], dim=-1)
        pred = self.prediction_head(noisy, timesteps, fixed)
        wanted = {"epsilon": noise, "sample": target, "velocity": noise - target}[self.config.prediction_type]
        position = F.l1_loss(pred[..., :3], wanted[..., :3])
        rotation = F.l1_loss(pred[..., 3:9], wanted[..., 3:9])
        open_loss = F.binary_cross_entropy_with_logits(pred[..., 9:], openness)
        loss = (self.config.position_loss_weight * position
                + self.config.rotation_loss_weight * rotation + open_loss)
        return {"loss": loss, "position": position, "rotation": rotation, "openness": open_loss}

    # -- inference ------------------------------------------------------------------------------
    def predict_trajectory(self, batch: Mapping[str, torch.Tensor],
                           generator: Union[None, torch.Generator, Sequence[torch.Generator]] = None,
                           committed: Optional[torch.Tensor] = None,
                           sampler: Optional[SamplerConfig] = None) -> torch.Tensor:
        """Sample a trajectory.

        Args:
            batch: ``RGB``, ``PCD``, ``GOAL``, ``CURRENT_GRIPPER`` (see class docstring).
            generator: optional RNG; with the same generator state and weights the
                output is reproducible. A list of ``B`` generators draws each item's noise from
                its own one, so item ``b`` of a batch is what a call with ``B = 1`` and
                ``generator[b]`` returns (batched evaluation of several episodes).
            committed: optional ``(B, K, 8)`` absolute waypoints (``K < T``) that will have
                been executed by the time this trajectory is used (real-time chunking): they
                are held fixed by inpainting -- before every denoising step the first ``K``
                waypoints of the sample are replaced by the committed ones noised to that
                step's level -- and returned exactly, so the rest continues them. ``None``
                (or ``K = 0``) is the original sampler.
            sampler: how to sample (:class:`SamplerConfig`); ``None`` -- :attr:`sampler`,
                by default the reference (3DDA's DDPM, ``diffusion_timesteps`` steps, module
                by module).

        Returns:
            ``(B, T, 8)`` with ``T = config.trajectory_length``: absolute
            ``[x, y, z]`` (base frame), unit quaternion ``[qx, qy, qz, qw]`` (w >= 0)
            and openness probability in [0, 1].
        """
        sampler = (sampler or self.sampler).resolved(self.config)
        self._check_batch(batch, training=False)
        was_training = self.training
        self.eval()
        # The fast path hands out inference tensors (cheaper); the reference keeps 3DDA's no_grad.
        with torch.inference_mode() if sampler.fast else torch.no_grad():
            try:
                return self._sample(batch, generator, committed, sampler)
            finally:
                self.train(was_training)

    def _sample(self, batch, generator, committed, sampler: SamplerConfig) -> torch.Tensor:
        fixed = self.encode_inputs(batch, fast=sampler.fast)
        if sampler.fast:
            def make_denoiser(timesteps):
                return CachedDenoiser(self.prediction_head, fixed, timesteps)
        else:
            def make_denoiser(timesteps):
                return lambda trajectory, index: self.prediction_head(trajectory, timesteps[index], fixed)
        return self.denoise(fixed["current"], make_denoiser, generator, committed, sampler)

    def denoise(self, current: torch.Tensor, make_denoiser,
                generator: Union[None, torch.Generator, Sequence[torch.Generator]],
                committed: Optional[torch.Tensor], sampler: SamplerConfig) -> torch.Tensor:
        """The sampling loop of :meth:`predict_trajectory` after encoding, for any denoiser
        (the model's own, or an exported one: :mod:`.export_system1`).

        Args:
            current: ``(B, 8)`` absolute current pose (``encode_inputs(...)["current"]``).
            make_denoiser: the ``S`` network timesteps ``(B,)`` of the call's steps, noisiest
                first -> ``denoiser(trajectory (B, T, 9), step index) -> (B, T, 10)``.
            generator, committed: as in :meth:`predict_trajectory`.
            sampler: a resolved :class:`SamplerConfig`.

        Returns:
            ``(B, T, 8)`` absolute waypoints, as :meth:`predict_trajectory`.
        """
        shape = (current.shape[0], self.config.trajectory_length, 9)
        prefix = None
        if committed is not None and committed.shape[1] > 0:
            if committed.shape[0] != shape[0] or committed.shape[1] >= shape[1] or committed.shape[2] != 8:
                raise ValueError(f"committed waypoints must be (B, K < {shape[1]}, 8), got {tuple(committed.shape)}")
            prefix, _ = self._targets(committed.to(current.dtype), current)
        sample = random_normal(shape, generator, current.device, current.dtype)
        loop = self._sampling_loop(sampler)
        timesteps = [loop.network_timestep(index, shape[0], current.device) for index in range(len(loop.timesteps))]
        denoiser = make_denoiser(timesteps)
        out = None
        for index in range(len(timesteps)):
            if prefix is not None:
                sample = torch.cat([loop.noised(prefix, index, generator), sample[:, prefix.shape[1]:]], dim=1)
            out = denoiser(sample, index)
            sample = loop.step(out, index, sample, generator)
        trajectory = self._to_absolute(sample, out[..., 9:], current)
        if prefix is not None:
            trajectory = torch.cat([committed.to(trajectory.dtype), trajectory[:, prefix.shape[1]:]], dim=1)
        return trajectory

    # -- checkpoints ----------------------------------------------------------------------------
    def load_checked_state_dict(self, state_dict: Mapping[str, torch.Tensor], source: str = "checkpoint",
                                ignore_unexpected: bool = False, *, origins: Optional[Mapping[str, str]] = None,
                                ignored: Optional[Mapping[str, str]] = None) -> KeyMapping:
        """Load weights after checking names and shapes.

        Args:
            state_dict: tensors under this model's names.
            source: checkpoint description used in messages.
            ignore_unexpected: load even when ``state_dict`` holds keys the model lacks
                (they stay listed in the report).
            origins / ignored: from a :class:`~openhelix_core.checkpoint_keys.ConvertedState`,
                so the report names the checkpoint's own keys and the deliberately skipped ones.

        Returns:
            the :class:`~openhelix_core.checkpoint_keys.KeyMapping` report.

        Raises:
            CheckpointError naming the missing / unexpected keys or the mismatched shapes.
        """
        expected = self.state_dict()
        report = KeyMapping.compare(state_dict, expected, source=source, origins=origins, ignored=ignored)
        report.raise_if_incomplete("the System 1 model", allow_unexpected=ignore_unexpected)
        self.load_state_dict({k: v for k, v in state_dict.items() if k in expected}, strict=True)
        return report

    def save_pretrained(self, directory: Union[str, Path]) -> Path:
        """Write ``config.json``, ``model.safetensors`` and ``normalization.json`` to ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / CONFIG_FILE).write_text(json.dumps(self.config.to_dict(), indent=2) + "\n")
        (directory / NORMALIZATION_FILE).write_text(json.dumps(self.normalization.to_dict(), indent=2) + "\n")
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        save_file(tensors, str(directory / WEIGHTS_FILE), metadata={"format": "pt", "model": "openhelix-system1"})
        return directory

    @classmethod
    def from_pretrained(cls, directory: Union[str, Path], device: Union[str, torch.device] = "cpu") -> "DiffuserActor":
        """Load a model written by :meth:`save_pretrained`.

        Raises:
            FileNotFoundError: the directory or one of its three files is missing (named).
            ValueError / CheckpointError: unreadable or invalid JSON, or weights that do not
                match the configuration (missing/unexpected keys, wrong shapes; named).
        """
        directory = Path(directory)
        if not directory.is_dir():
            raise FileNotFoundError(f"System 1 checkpoint directory {str(directory)!r} does not exist")
        for name in (CONFIG_FILE, WEIGHTS_FILE, NORMALIZATION_FILE):
            if not (directory / name).is_file():
                raise FileNotFoundError(f"System 1 checkpoint {str(directory)!r} is missing {name!r}")
        config = System1Config.from_dict(_read_json(directory / CONFIG_FILE))
        normalization = Normalization.from_dict(_read_json(directory / NORMALIZATION_FILE))
        model = cls(config, normalization)
        try:
            state = load_file(str(directory / WEIGHTS_FILE))
        except Exception as error:  # safetensors raises its own error types
            raise CheckpointError(f"cannot read {str(directory / WEIGHTS_FILE)!r}: {error}") from error
        model.load_checked_state_dict(state, source=str(directory / WEIGHTS_FILE))
        return model.to(device).eval()


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{str(path)!r} is not valid JSON: {error}") from error
    if not isinstance(data, dict):
        raise ValueError(f"{str(path)!r} must hold a JSON object")
    return data


# ---------------------------------------------------------------------------------------------
# Original 3DDA / OpenHelix checkpoints
# ---------------------------------------------------------------------------------------------
_OLD_FPN = re.compile(r"^(encoder\.feature_pyramid\.(?:inner|layer)_blocks\.\d+)\.(weight|bias)$")


def map_original_state_dict(state_dict: Mapping[str, torch.Tensor]) -> ConvertedState:
    """Map a 3DDA / OpenHelix ``DiffuserActor`` state dict onto :class:`DiffuserActor` names.

    Key mapping:

    - every leading ``module.`` (DistributedDataParallel) is stripped;
    - ``encoder.backbone.attnpool.*`` (CLIP's attention pool, never run by 3DDA; 14,789,632
      parameters in RN50) is reported in ``ignored``, not loaded;
    - torchvision < 0.13 FPN names ``encoder.feature_pyramid.{inner,layer}_blocks.{i}.{weight,bias}``
      become ``...{i}.0.{weight,bias}`` (newer torchvision already uses ``.0``);
    - all other keys are kept as they are: ``encoder.backbone.*`` (CLIP ``visual.*`` names),
      ``encoder.feature_pyramid.*``, ``encoder.curr_gripper_embed``, ``encoder.gripper_context_head``,
      ``encoder.goal_gripper_embed``, ``encoder.instruction_encoder``, ``encoder.vl_attention.0``,
      ``prediction_head.{traj_encoder, time_emb, curr_gripper_emb, traj_lang_attention.0,
      cross_attn, self_attn, rotation_proj, rotation_self_attn, rotation_predictor,
      position_proj, position_self_attn, position_predictor, openess_predictor}`` -- the
      module tree here mirrors the original one name for name. A key the model lacks
      surfaces as *unexpected* when the result is checked.
    """
    out = ConvertedState(layout="3dda")
    for original, value in state_dict.items():
        key = original
        while key.startswith("module."):
            key = key[len("module."):]
        if key.startswith("encoder.backbone.attnpool."):
            out.ignored[original] = "CLIP attention pool: never run by 3D Diffuser Actor, not built here"
            continue
        match = _OLD_FPN.match(key)
        if match:
            key = f"{match.group(1)}.0.{match.group(2)}"
        out.add(key, value, original)
    return out


def convert_original_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Tensors of :func:`map_original_state_dict` (model names -> tensors), without the report."""
    return map_original_state_dict(state_dict).tensors


def load_original_checkpoint(path: Union[str, Path], config: Optional[System1Config] = None,
                             normalization: Optional[Normalization] = None,
                             ignore_unexpected: bool = False, return_report: bool = False):
    """Build a :class:`DiffuserActor` from an original 3DDA / OpenHelix ``.pth`` checkpoint.

    The file is always read with ``torch.load(weights_only=True)``: a checkpoint is data from
    elsewhere, and a full unpickle would run whatever code it names. There is deliberately no
    switch to turn that off; a file holding non-tensor objects is refused.

    Args:
        path: file saved by 3DDA/OpenHelix training (``{"weight": state_dict, "optimizer": ...,
            "iter": ..., "best_loss": ...}``) or a bare state dict.
        config: architecture the checkpoint was trained with (default: OpenHelix CALVIN).
        normalization: workspace bounds used in training (default: OpenHelix CALVIN ABC->D);
            the original keeps them outside the state dict.
        ignore_unexpected: load even when the checkpoint holds keys the model does not have
            (they are still reported).
        return_report: also return the :class:`~openhelix_core.checkpoint_keys.KeyMapping`
            (``ignored`` lists the CLIP ``attnpool`` keys).

    Returns:
        the model in eval mode, or ``(model, report)`` with ``return_report``.

    Raises:
        FileNotFoundError, CheckpointError (naming missing / unexpected keys and shapes, or a
        file that holds pickled objects other than tensors).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"original System 1 checkpoint {str(path)!r} does not exist")
    try:
        payload = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as error:
        raise CheckpointError(f"cannot read {str(path)!r} with torch.load(weights_only=True); objects other than "
                              f"tensors, numbers and containers are refused (save the state dict alone): "
                              f"{error}") from error
    state_dict = payload.get("weight", payload) if isinstance(payload, dict) else None
    if not isinstance(state_dict, Mapping):
        raise CheckpointError(f"{str(path)!r} holds no 'weight' state dict")
    model = DiffuserActor(config or System1Config.openhelix_calvin(), normalization)
    converted = map_original_state_dict(state_dict)
    report = model.load_checked_state_dict(converted.tensors, source=str(path), ignore_unexpected=ignore_unexpected,
                                           origins=converted.origins, ignored=converted.ignored)
    model.eval()
    return (model, report) if return_report else model


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (optionally only those with ``requires_grad``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


__all__ = [
    "DiffuserActor", "DiffusionHead", "Encoder", "convert_original_state_dict",
    "count_parameters", "load_original_checkpoint", "map_original_state_dict",
]
