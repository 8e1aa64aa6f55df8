"""Configuration of System 1, the 3D Diffuser Actor (3DDA) used by OpenHelix.

Defaults of :meth:`System1Config.openhelix_calvin` follow OpenHelix's CALVIN
scripts (``scripts/train_trajectory_lcb_pt_act_simple.sh`` and
``scripts/test_trajectory_lcb_pt_act_simple_asy10.sh`` in OpenHelix-robot/OpenHelix)
and the layer layout of ``DiffuserActor`` / ``Encoder`` / ``DiffusionHead`` in
nickgkan/3d_diffuser_actor.

Workspace normalisation statistics (``gripper_loc_bounds``) are *not* part of
the configuration: they live in :class:`Normalization`, travel with the
checkpoint in ``normalization.json`` and are never node parameters.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from ...configuration import check_int_fields, config_from_dict

#: CALVIN gripper location bounds for *relative* trajectories, ABC->D split:
#: per-axis union over tasks A, B, C, D of
#: ``tasks/calvin_rel_traj_location_bounds_task_ABC_D.json`` (nickgkan/3d_diffuser_actor)
#: widened by ``gripper_loc_bounds_buffer = 0.01`` (OpenHelix CALVIN scripts),
#: exactly as ``utils/common_utils.get_gripper_loc_bounds`` computes them.
CALVIN_REL_TRAJ_BOUNDS_ABC_D = (
    (-0.29205888509750366 - 0.01, -0.24688798189163208 - 0.01, -0.20557966828346252 - 0.01),
    (0.35127854347229004 + 0.01, 0.3277084231376648 + 0.01, 0.17373555898666382 + 0.01),
)

#: CALVIN position bounds OpenHelix clips its predicted *absolute* positions to at evaluation
#: (``[min, max]`` per axis, metres, CALVIN world frame). OpenHelix's
#: ``scripts/test_trajectory_lcb_pt_act_simple_asy10.sh`` passes
#: ``--calvin_gripper_loc_bounds /calvin/task_ABC_D/validation/statistics.yaml``;
#: ``get_calvin_gripper_loc_bounds`` in
#: ``online_evaluation_calvin/evaluate_policy_lcb_pt_act_simple_asy10.py`` reads
#: ``act_min_bound[:3]`` / ``act_max_bound[:3]`` of that file, and ``DiffusionModel.step`` in
#: ``online_evaluation_calvin/evaluate_model_act.py`` clips the absolute trajectory to them
#: (3D Diffuser Actor's ``evaluate_model.py`` / ``test_trajectory_calvin.sh`` do the same).
#: The numbers are the first three entries of that ``statistics.yaml``, a file of the CALVIN
#: dataset download (not of any repository): ``act_min_bound: [-0.432188, -0.545456, 0.293439,
#: ...]``, ``act_max_bound: [0.42977, 0.139396, 0.796262, ...]``, as quoted verbatim by public
#: CALVIN evaluation code (e.g. GR-1's ``DummyCalvinEvaluation``); the dataset file itself could
#: not be read where this was written.
CALVIN_ACTION_POSITION_BOUNDS_ABC_D = (
    (-0.432188, -0.545456, 0.293439),
    (0.42977, 0.139396, 0.796262),
)

_SUPPORTED_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
#: What the denoiser may predict, per training objective.
_PREDICTION_TYPES = {"ddpm": ("epsilon", "sample"), "flow_matching": ("velocity", "sample")}
#: Samplers per training objective; the first is the objective's own (the reference).
SAMPLERS = {"ddpm": ("ddpm", "ddim"), "flow_matching": ("euler",)}


@dataclass
class System1Config:
    """Architecture and I/O settings of :class:`~.modeling_system1.DiffuserActor`.

    Attributes:
        embedding_dim: model width ``F`` (3DDA ``embedding_dim``; OpenHelix ``C=192``).
            Must be divisible by 6 (3-D rotary encoding) and by ``num_attn_heads``.
        num_attn_heads: attention heads in every attention layer (3DDA hard-codes 8).
        cameras: camera names, in model order; keys of ``Observation.cameras``.
            OpenHelix CALVIN uses ``--cameras front wrist``, i.e. CALVIN's static and
            gripper cameras, named here ``"static"`` and ``"gripper"``.
        image_resize: every camera image is first resized to ``image_resize`` x
            ``image_resize`` (RGB bilinear, point map nearest). CALVIN: the 84x84
            gripper view is upsampled to the 200x200 static view's size
            (3DDA ``online_evaluation_calvin/evaluate_utils.prepare_visual_states``).
        image_size: side of the centred square crop fed to the network. CALVIN:
            ``[..., 20:180, 20:180]`` of the 200x200 images -> 160
            (3DDA ``datasets/dataset_calvin.py`` and ``evaluate_model.py``).
        backbone_width: stem width of CLIP's modified ResNet (64 for RN50).
        backbone_layers: bottleneck blocks per stage (``(3, 4, 6, 3)`` for RN50).
        feature_level: pyramid level whose features become 3-D scene tokens. 3DDA with
            ``image_size=(256, 256)`` (OpenHelix passes "256,256") uses ``"res3"``,
            the 1/8-resolution level (20x20 for a 160x160 crop).
        fps_subsampling_factor: farthest point sampling keeps ``N // factor`` scene
            tokens (OpenHelix: 3).
        goal_dim: width of the System 2 goal / instruction tokens (512).
        nhist: number of proprioceptive gripper states (OpenHelix ``num_history=1``).
        trajectory_length: waypoints predicted per call. OpenHelix CALVIN trains with
            ``interpolation_length=20`` and drops the first (current) pose
            (``sample["trajectory"][:, 1:]``), so the network predicts 19.
        diffusion_timesteps: DDPM training and inference steps (OpenHelix: 25).
        position_beta_schedule / rotation_beta_schedule: diffusers beta schedules
            of the position and rotation noise schedulers.
        prediction_type: what the denoiser predicts, diffusers' ``"epsilon"`` (the noise;
            3DDA / OpenHelix) or ``"sample"`` (the clean trajectory). With few steps and a
            schedule that ends near pure noise (``squaredcos_cap_v2``), an epsilon model's
            first denoising step gives no information about the trajectory (the noise *is*
            the input there) and the clipped x0 estimate it implies is arbitrary; a
            ``"sample"`` model regresses the trajectory from the scene and goal at every
            step, which is what a small model trained on CPU needs.
        denoising: the training objective. ``"ddpm"`` (3DDA / OpenHelix): DDPM noise levels
            ``0 .. diffusion_timesteps - 1`` and the two beta schedules. ``"flow_matching"``
            (as 3D FlowMatch Actor): straight paths ``x_s = (1 - s) x_0 + s noise`` for
            ``s`` drawn uniformly in [0, 1], the network sees ``s * FLOW_TIMESTEP_SCALE`` as
            its timestep and predicts the velocity ``noise - x_0`` (``prediction_type
            "velocity"``) or ``x_0`` (``"sample"``); inference integrates from ``s = 1`` to 0
            in ``diffusion_timesteps`` Euler steps (beta schedules unused).
        num_vis_ins_attn_layers: vision->goal cross-attention layers in the encoder.
        num_gripper_context_layers: layers of the current-gripper -> scene head (3).
        num_cross_attn_layers: trajectory -> all scene tokens layers (2).
        num_self_attn_layers: shared self-attention layers over trajectory + sampled
            scene tokens (4).
        num_self_lang_cross_layers: goal cross-attentions interleaved in the shared
            stack when ``lang_enhanced`` (3).
        num_head_attn_layers: self-attention layers of each of the position and
            rotation heads (2).
        num_head_lang_cross_layers: goal cross-attentions in each head when
            ``lang_enhanced`` (1).
        use_instruction: condition on the goal tokens (OpenHelix: 1).
        lang_enhanced: interleave goal cross-attention in the denoiser (OpenHelix: 1).
        relative: CALVIN relative mode: positions (scene and trajectory) relative to
            the current gripper, rotations as Euler-angle deltas (OpenHelix: 1).
        euler_convention: how CALVIN Euler angles are turned into network rotations.
            3DDA uses pytorch3d ``"XYZ"`` (intrinsic) for this, although CALVIN
            itself is extrinsic ``"xyz"``; keep ``"XYZ"`` to run 3DDA/OpenHelix weights.
        dropout: dropout of the goal cross-attention blocks (3DDA ``ParallelAttention``).
        position_loss_weight / rotation_loss_weight: L1 weights (3DDA: 30 and 10).
        freeze_backbone: keep the CLIP ResNet frozen (no gradients, BatchNorm in eval).
    """

    embedding_dim: int = 192
    num_attn_heads: int = 8
    cameras: tuple[str, ...] = ("static", "gripper")
    image_resize: int = 200
    image_size: int = 160
    backbone_width: int = 64
    backbone_layers: tuple[int, ...] = (3, 4, 6, 3)
    feature_level: str = "res3"
    fps_subsampling_factor: int = 3
    goal_dim: int = 512
    nhist: int = 1
    trajectory_length: int = 19
    diffusion_timesteps: int = 25
    position_beta_schedule: str = "scaled_linear"
    rotation_beta_schedule: str = "squaredcos_cap_v2"
    prediction_type: str = "epsilon"
    denoising: str = "ddpm"
    num_vis_ins_attn_layers: int = 2
    num_gripper_context_layers: int = 3
    num_cross_attn_layers: int = 2
    num_self_attn_layers: int = 4
    num_self_lang_cross_layers: int = 3
    num_head_attn_layers: int = 2
    num_head_lang_cross_layers: int = 1
    use_instruction: bool = True
    lang_enhanced: bool = True
    relative: bool = True
    euler_convention: str = "XYZ"
    dropout: float = 0.1
    position_loss_weight: float = 30.0
    rotation_loss_weight: float = 10.0
    freeze_backbone: bool = True

    def __post_init__(self) -> None:
        self.cameras = tuple(self.cameras)
        self.backbone_layers = tuple(int(x) for x in self.backbone_layers)
        check_int_fields(self, (
            "embedding_dim", "num_attn_heads", "image_resize", "image_size", "backbone_width",
            "fps_subsampling_factor", "goal_dim", "nhist", "trajectory_length",
            "diffusion_timesteps", "num_gripper_context_layers", "num_cross_attn_layers",
            "num_self_attn_layers", "num_head_attn_layers",
        ), minimum=1)
        check_int_fields(self, ("num_vis_ins_attn_layers", "num_self_lang_cross_layers",
                                "num_head_lang_cross_layers"), minimum=0)
        if self.embedding_dim % 6 != 0:
            raise ValueError(f"System1Config.embedding_dim must be divisible by 6 (3-D rotary "
                             f"encoding), got {self.embedding_dim}")
        if self.embedding_dim % self.num_attn_heads != 0:
            raise ValueError(f"System1Config.embedding_dim ({self.embedding_dim}) must be divisible "
                             f"by num_attn_heads ({self.num_attn_heads})")
        if len(self.cameras) == 0 or len(set(self.cameras)) != len(self.cameras):
            raise ValueError(f"System1Config.cameras must be non-empty and unique, got {self.cameras}")
        if not all(isinstance(c, str) and c for c in self.cameras):
            raise ValueError(f"System1Config.cameras must be non-empty strings, got {self.cameras}")
        if self.image_size > self.image_resize:
            raise ValueError(f"System1Config.image_size ({self.image_size}) must not exceed "
                             f"image_resize ({self.image_resize})")
        if len(self.backbone_layers) != 4 or min(self.backbone_layers) < 1:
            raise ValueError(f"System1Config.backbone_layers must be 4 positive ints, got "
                             f"{self.backbone_layers}")
        if self.feature_level not in ("res1", "res2", "res3", "res4", "res5"):
            raise ValueError(f"System1Config.feature_level must be one of res1..res5, got "
                             f"{self.feature_level!r}")
        stride = self.feature_stride
        if self.image_size % stride != 0:
            raise ValueError(f"System1Config.image_size ({self.image_size}) must be divisible by the "
                             f"stride {stride} of feature_level {self.feature_level}")
        for name in ("position_beta_schedule", "rotation_beta_schedule"):
            if getattr(self, name) not in _SUPPORTED_SCHEDULES:
                raise ValueError(f"System1Config.{name} must be one of {_SUPPORTED_SCHEDULES}, got "
                                 f"{getattr(self, name)!r}")
        if self.denoising not in _PREDICTION_TYPES:
            raise ValueError(f"System1Config.denoising must be one of {tuple(_PREDICTION_TYPES)}, got "
                             f"{self.denoising!r}")
        if self.prediction_type not in _PREDICTION_TYPES[self.denoising]:
            raise ValueError(f"System1Config.prediction_type must be one of {_PREDICTION_TYPES[self.denoising]} "
                             f"with denoising {self.denoising!r}, got {self.prediction_type!r}")
        if self.euler_convention not in ("xyz", "XYZ"):
            raise ValueError(f"System1Config.euler_convention must be 'xyz' or 'XYZ', got "
                             f"{self.euler_convention!r}")
        if self.lang_enhanced and not self.use_instruction:
            raise ValueError("System1Config.lang_enhanced requires use_instruction=True")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ValueError(f"System1Config.dropout must be in [0, 1), got {self.dropout}")
        for name in ("position_loss_weight", "rotation_loss_weight"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"System1Config.{name} must be finite and >= 0, got {value}")

    # Derived quantities -------------------------------------------------------------
    @property
    def feature_stride(self) -> int:
        """Downsampling factor of ``feature_level`` (res1 = 2, ..., res5 = 32)."""
        return 2 ** int(self.feature_level[-1])

    @property
    def feature_map_size(self) -> int:
        """Side of the scene-token grid per camera (20 for the CALVIN default)."""
        return self.image_size // self.feature_stride

    @property
    def num_scene_tokens(self) -> int:
        """Scene tokens over all cameras before farthest point sampling."""
        return len(self.cameras) * self.feature_map_size ** 2

    @property
    def num_sampled_tokens(self) -> int:
        """Scene tokens kept by farthest point sampling (``max(N // factor, 1)``)."""
        return max(self.num_scene_tokens // self.fps_subsampling_factor, 1)

    # Presets ----------------------------------------------------------------------------
    @classmethod
    def openhelix_calvin(cls) -> "System1Config":
        """OpenHelix's CALVIN System 1 (C=192, 25 steps, FPS/3, nhist 1, 160x160 crops)."""
        return cls()

    @classmethod
    def tiny(cls) -> "System1Config":
        """Same architecture with tiny widths, layers and images, for tests and benchmarks."""
        return cls(
            embedding_dim=24, num_attn_heads=4, image_resize=40, image_size=32,
            backbone_width=8, backbone_layers=(1, 1, 1, 1), diffusion_timesteps=5,
            num_vis_ins_attn_layers=1, num_gripper_context_layers=1, num_cross_attn_layers=1,
            num_self_attn_layers=2, num_self_lang_cross_layers=1, num_head_attn_layers=1,
            num_head_lang_cross_layers=1, trajectory_length=20,
        )

    # Serialisation ----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples become lists)."""
        out = dataclasses.asdict(self)
        out["cameras"] = list(self.cameras)
        out["backbone_layers"] = list(self.backbone_layers)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "System1Config":
        """Inverse of :meth:`to_dict`; unknown keys raise ValueError naming them."""
        return config_from_dict(cls, data)


#: The named presets (``preset`` parameters of the controller node and the trainer).
SYSTEM1_PRESETS = {"tiny": System1Config.tiny, "openhelix_calvin": System1Config.openhelix_calvin}


#: Flow-matching models see noise level ``s`` in [0, 1] as timestep ``s * FLOW_TIMESTEP_SCALE``,
#: the range DDPM timesteps span in 3DDA's sinusoidal embedding at 1000 training steps.
FLOW_TIMESTEP_SCALE = 1000.0


@dataclass
class SamplerConfig:
    """How System 1 turns noise into a trajectory at inference (not part of a checkpoint).

    Attributes:
        method: ``None`` -- the model's own sampler (DDPM for DDPM-trained weights, Euler for
            flow-matching ones); ``"ddpm"``; ``"ddim"`` (deterministic, DDPM-trained weights
            only, few steps: the noise levels are spaced evenly from the noisiest training
            level down, diffusers' ``"trailing"`` spacing); ``"euler"`` (flow matching only).
        steps: denoising steps; ``None`` -- ``diffusion_timesteps`` of the model. DDPM runs
            exactly its training steps.
        fast: compute once per call what does not depend on the noisy trajectory (projected
            scene keys and values, goal attention, time embeddings), run the heads' last
            layers only for the trajectory tokens, and encode with the single-goal-token
            shortcut. Same mathematics as the reference modules (agrees to float rounding);
            ``False`` runs every step through the original module forward (the reference).
    """

    method: Optional[str] = None
    steps: Optional[int] = None
    fast: bool = False

    def __post_init__(self) -> None:
        known = sorted({name for names in SAMPLERS.values() for name in names})
        if self.method is not None and self.method not in known:
            raise ValueError(f"SamplerConfig.method must be one of {known} or None, got {self.method!r}")
        if self.steps is not None and (isinstance(self.steps, bool) or not isinstance(self.steps, int)
                                       or self.steps < 1):
            raise ValueError(f"SamplerConfig.steps must be a positive int or None, got {self.steps!r}")
        if not isinstance(self.fast, bool):
            raise ValueError(f"SamplerConfig.fast must be a bool, got {self.fast!r}")

    @classmethod
    def from_options(cls, method: str = "", steps: int = 0, fast: bool = True) -> "SamplerConfig":
        """From node parameters or command-line options, where ``""`` / ``"model"`` and 0 stand for
        the model's own method and step count."""
        return cls(method=None if method in ("", "model") else method, steps=None if steps == 0 else steps, fast=fast)

    @classmethod
    def reference(cls) -> "SamplerConfig":
        """The original sampler at the training step count, module by module (3DDA's path)."""
        return cls()

    def resolved(self, config: "System1Config") -> "SamplerConfig":
        """This sampler with method and steps filled in for a model; raises ValueError naming
        what the model cannot do (DDIM on flow-matching weights, DDPM at another step count)."""
        allowed = SAMPLERS[config.denoising]
        method = self.method or allowed[0]
        if method not in allowed:
            raise ValueError(f"sampler {method!r} does not apply to a System 1 trained with denoising "
                             f"{config.denoising!r}; use one of {allowed}")
        steps = self.steps or config.diffusion_timesteps
        if method == "ddpm" and steps != config.diffusion_timesteps:
            raise ValueError(f"the DDPM sampler runs the model's {config.diffusion_timesteps} training steps, "
                             f"not {steps}; use method 'ddim' for fewer steps")
        if method == "ddim" and steps > config.diffusion_timesteps:
            raise ValueError(f"DDIM steps ({steps}) cannot exceed the model's {config.diffusion_timesteps} "
                             f"training noise levels")
        return dataclasses.replace(self, method=method, steps=steps)

    def describe(self) -> str:
        """Short label, e.g. ``ddim-5-fast``."""
        return f"{self.method or 'default'}-{self.steps or 'all'}" + ("-fast" if self.fast else "")


@dataclass
class Normalization:
    """Statistics that travel with a checkpoint (``normalization.json``).

    Attributes:
        gripper_loc_bounds: ``(2, 3)`` ``[min, max]`` of the positions the network
            sees (relative to the current gripper when ``relative``); positions are
            mapped to ``[-1, 1]`` with ``2 (p - min) / (max - min) - 1`` (3DDA
            ``normalize_pos``).
        action_position_bounds: optional ``(2, 3)`` ``[min, max]`` to clip the final
            *absolute* positions (3DDA's ``calvin_gripper_loc_bounds`` from CALVIN's
            ``statistics.yaml``: :data:`CALVIN_ACTION_POSITION_BOUNDS_ABC_D`, which the
            OpenHelix release loader sets); ``None`` disables clipping.
        goal_mean / goal_std: optional ``(goal_dim,)`` statistics of System 2's goals over the
            training data; when set, System 1 standardises every goal with them before its
            instruction encoder. OpenHelix has none (``None``): LLaVA-7B's ``<ACT>`` state
            differs strongly between instructions. A small System 2 (the random tiny LLaVA)
            moves its goal by ~2 % of its norm between instructions, which System 1 does not
            pick up unless the shared part is removed.
    """

    gripper_loc_bounds: tuple = CALVIN_REL_TRAJ_BOUNDS_ABC_D
    action_position_bounds: Optional[tuple] = None
    goal_mean: Optional[tuple] = None
    goal_std: Optional[tuple] = None

    @classmethod
    def openhelix_calvin(cls) -> "Normalization":
        """OpenHelix on CALVIN ABC->D: its relative-trajectory bounds, and the predicted absolute
        positions clipped to CALVIN's position bounds as its evaluation does."""
        return cls(gripper_loc_bounds=CALVIN_REL_TRAJ_BOUNDS_ABC_D,
                   action_position_bounds=CALVIN_ACTION_POSITION_BOUNDS_ABC_D)

    def __post_init__(self) -> None:
        self.gripper_loc_bounds = self._check_bounds("gripper_loc_bounds", self.gripper_loc_bounds)
        if self.action_position_bounds is not None:
            self.action_position_bounds = self._check_bounds(
                "action_position_bounds", self.action_position_bounds)
        if (self.goal_mean is None) != (self.goal_std is None):
            raise ValueError("Normalization.goal_mean and goal_std must be given together")
        if self.goal_mean is not None:
            mean = np.asarray(self.goal_mean, dtype=np.float64)
            std = np.asarray(self.goal_std, dtype=np.float64)
            if mean.ndim != 1 or mean.shape != std.shape:
                raise ValueError(f"Normalization.goal_mean / goal_std must be two vectors of one length, got "
                                 f"{mean.shape} and {std.shape}")
            if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(std)) and np.all(std > 0)):
                raise ValueError("Normalization.goal_mean must be finite and goal_std finite and > 0")
            self.goal_mean = tuple(float(x) for x in mean)
            self.goal_std = tuple(float(x) for x in std)

    @staticmethod
    def _check_bounds(name: str, value: Any) -> tuple:
        array = np.asarray(value, dtype=np.float64)
        if array.shape != (2, 3):
            raise ValueError(f"Normalization.{name} must have shape (2, 3), got {array.shape}")
        if not np.all(np.isfinite(array)):
            raise ValueError(f"Normalization.{name} contains non-finite values")
        if not np.all(array[1] > array[0]):
            raise ValueError(f"Normalization.{name} needs max > min on every axis, got {array.tolist()}")
        return tuple(tuple(float(x) for x in row) for row in array)

    def to_dict(self) -> dict[str, Any]:
        return {
            "gripper_loc_bounds": [list(r) for r in self.gripper_loc_bounds],
            "action_position_bounds": (None if self.action_position_bounds is None
                                       else [list(r) for r in self.action_position_bounds]),
            "goal_mean": None if self.goal_mean is None else list(self.goal_mean),
            "goal_std": None if self.goal_std is None else list(self.goal_std),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Normalization":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"Normalization.from_dict: unknown field(s) {unknown}")
        if "gripper_loc_bounds" not in data:
            raise ValueError("Normalization.from_dict: missing 'gripper_loc_bounds'")
        return cls(**data)


__all__ = ["CALVIN_ACTION_POSITION_BOUNDS_ABC_D", "CALVIN_REL_TRAJ_BOUNDS_ABC_D", "FLOW_TIMESTEP_SCALE", "Normalization",
           "SAMPLERS", "SYSTEM1_PRESETS", "SamplerConfig", "System1Config"]
