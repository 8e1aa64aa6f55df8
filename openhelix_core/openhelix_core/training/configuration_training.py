"""Configuration of OpenHelix training (both stages), as one JSON-serialisable dataclass.

Defaults follow OpenHelix-robot/OpenHelix (``scripts/train_trajectory_lcb_pt_act_simple.sh``,
``engine_act_simple.py``, ``main_trajectory_calvin_act_simple.py``) and nickgkan/3d_diffuser_actor:

* System 1 (3D Diffuser Actor): AdamW, lr 3e-4, weight decay 5e-3 (no decay on biases and
  LayerNorm weights, as both repositories group the parameters), batch 15 per GPU in the original;
* System 2 trainable parts (``<ACT>`` row, projection, auxiliary head): AdamW, lr 5e-5,
  weight decay 1e-5, betas (0.9, 0.95);
* diffusion loss ``30 L1(position noise) + 10 L1(rotation noise) + 1 BCE(openness)``;
* auxiliary loss ``0.2 x (30 L1(position) + 10 L1(6-D rotation) + 1 BCE(gripper))`` on the
  first target waypoint (see :mod:`.trainer` for the exact targets), in stage 2 only, as
  OpenHelix applies it. OpenHelix does not supervise the gripper output of its auxiliary head;
  this project keeps a gripper BCE term (``aux_gripper_weight=0`` drops it);
* one of OpenHelix's two questions drawn at random per sample (seeded, restored on resume);
* 20-point trajectories interpolated between the current pose and the next keypose, the
  current pose dropped, so System 1 predicts 19 waypoints (``interpolation_length=20``).

Stage 1 trains only System 2's trainable parts (both models frozen); stage 2 also trains
System 1 (the CLIP backbone stays frozen, the LLaVA always does).
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ..configuration import check_int_fields, config_from_dict

_SCHEDULES = ("constant", "cosine")
_SAMPLING = ("keypose", "all")
_OPENNESS = ("action", "width")


@dataclass
class TrainingConfig:
    """Everything a training run needs; saved as ``training_config.json`` in every checkpoint.

    Attributes (groups):
        data: ``train_data`` / ``val_data`` CALVIN split folders (``training/``, ``validation/``
            of a CALVIN download, or a folder written by ``openhelix_sim.experiments``); ``tasks``
            keeps only these CALVIN task names (None = all annotated segments);
            ``max_segments`` caps the number of annotated segments read (debugging).
        sampling: ``frame_sampling`` ``"keypose"`` (3DDA's packaged CALVIN data: the segment
            start and every keypose but the last) or ``"all"`` (every frame, each targeting its
            next keypose; OpenHelix trains with ``keypose_only=0``); ``keypose_neighbors`` adds
            frames within that many steps after each keypose in ``"keypose"`` mode;
            ``interpolation_length`` points from the current pose to the next keypose
            (the first, the current pose, is dropped -> ``interpolation_length - 1`` targets);
            ``keypose_buffer`` minimum spacing of acceleration keyposes (3DDA: 5);
            ``still_motion`` (metres, 0 = off as in 3DDA): a frame from which the arm stays
            still up to its keypose targets the motion after that keypose (holds in scripted
            demos; see :mod:`openhelix_core.training.dataset`);
            ``openness_source`` ``"action"`` (3DDA: ``robot_obs[14] > 0``) or ``"width"``.
        models: ``system1_preset`` (``tiny`` / ``openhelix_calvin``) plus ``system1_overrides``
            (any :class:`System1Config` field); ``system2_preset`` (``tiny`` / ``llava_7b``) with
            ``llava_path`` plus ``system2_overrides`` (any :class:`System2Config` field, e.g. a
            shorter ``prompt_template`` for the byte-level tiny tokenizer); ``system1_checkpoint``
            a ``save_pretrained`` directory or an original 3DDA ``.pth`` (stage 2 may start from
            it); ``init_from`` a checkpoint directory of this trainer whose weights (not
            optimizer state) start the run (stage 1 -> stage 2, or fine-tuning on a robot's own
            data): its architecture is kept (``system1_overrides`` may change only the camera
            set), the data must hold its cameras, and with ``compute_normalization`` its
            position bounds (and clipping box, if it has one) are recomputed from this run's
            data, as are the goal statistics with ``standardize_goals``;
            ``fine_tuning.json`` in the output directory lists both. ``standardize_goals``: at the
            start of stage 2, measure the mean and standard deviation of System 2's goals over
            the training data and have System 1 standardise its goal input with them (they are
            saved in ``normalization.json``); off for OpenHelix, needed for the tiny System 2.
        optimisation: ``stage`` 1 or 2; ``steps``; ``batch_size`` per process; learning rates,
            weight decays, betas; ``lr_schedule``, ``warmup_steps``; ``grad_clip`` (0 = off).
        losses: ``diffusion_*_weight``, ``aux_weight`` and ``aux_*_weight``;
            ``aux_loss_stages``: the stages whose loss includes the auxiliary term (``[2]``, as
            OpenHelix; ``[1, 2]`` also trains the head in stage 1). The auxiliary errors are
            logged in every stage.
        runtime: ``output_dir``, ``seed``, ``device``, ``checkpoint_every``, ``log_every``,
            ``num_workers``, ``cache_dir`` (pre-processed samples), ``bf16`` and
            ``gradient_checkpointing`` (used on CUDA only), ``progress`` (tqdm bar).
    """

    # data
    train_data: str = ""
    val_data: Optional[str] = None
    tasks: Optional[list] = None
    max_segments: Optional[int] = None
    cache_dir: Optional[str] = None
    # sampling / targets
    frame_sampling: str = "all"
    keypose_neighbors: int = 0
    interpolation_length: int = 20
    keypose_buffer: int = 5
    still_motion: float = 0.0
    openness_source: str = "action"
    # models
    system1_preset: str = "tiny"
    system1_overrides: dict = field(default_factory=dict)
    system1_checkpoint: Optional[str] = None
    system2_preset: str = "tiny"
    system2_overrides: dict = field(default_factory=dict)
    llava_path: Optional[str] = None
    system2_seed: int = 0
    init_from: Optional[str] = None
    compute_normalization: bool = True
    normalization_buffer: float = 0.01
    standardize_goals: bool = False
    # optimisation
    stage: int = 2
    steps: int = 1000
    batch_size: int = 16
    system1_lr: float = 3e-4
    system1_weight_decay: float = 5e-3
    system1_betas: tuple = (0.9, 0.999)
    system2_lr: float = 5e-5
    system2_weight_decay: float = 1e-5
    system2_betas: tuple = (0.9, 0.95)
    lr_schedule: str = "constant"
    warmup_steps: int = 0
    grad_clip: float = 0.0
    # losses
    diffusion_position_weight: float = 30.0
    diffusion_rotation_weight: float = 10.0
    diffusion_openness_weight: float = 1.0
    aux_weight: float = 0.2
    aux_position_weight: float = 30.0
    aux_rotation_weight: float = 10.0
    aux_gripper_weight: float = 1.0
    aux_loss_stages: list = field(default_factory=lambda: [2])
    # runtime
    output_dir: str = "runs/openhelix"
    seed: int = 0
    device: str = "auto"
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    log_every: int = 10
    val_every: int = 0
    val_batches: int = 4
    num_workers: int = 0
    bf16: bool = True
    gradient_checkpointing: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        self.system1_betas = tuple(float(b) for b in self.system1_betas)
        self.system2_betas = tuple(float(b) for b in self.system2_betas)
        if self.tasks is not None:
            self.tasks = [str(t) for t in self.tasks]
        self.system1_overrides = dict(self.system1_overrides or {})
        self.system2_overrides = dict(self.system2_overrides or {})
        if self.stage not in (1, 2):
            raise ValueError(f"TrainingConfig.stage must be 1 or 2, got {self.stage!r}")
        try:
            stages = sorted({int(stage) for stage in self.aux_loss_stages})
        except (TypeError, ValueError):
            stages = None
        if isinstance(self.aux_loss_stages, (str, int)) or stages is None or not set(stages) <= {1, 2}:
            raise ValueError(f"TrainingConfig.aux_loss_stages must be a list of stages (1, 2), got "
                             f"{self.aux_loss_stages!r}")
        self.aux_loss_stages = stages
        if self.frame_sampling not in _SAMPLING:
            raise ValueError(f"TrainingConfig.frame_sampling must be one of {_SAMPLING}, got {self.frame_sampling!r}")
        if self.openness_source not in _OPENNESS:
            raise ValueError(f"TrainingConfig.openness_source must be one of {_OPENNESS}, got "
                             f"{self.openness_source!r}")
        if self.lr_schedule not in _SCHEDULES:
            raise ValueError(f"TrainingConfig.lr_schedule must be one of {_SCHEDULES}, got {self.lr_schedule!r}")
        check_int_fields(self, ("steps", "batch_size", "interpolation_length", "checkpoint_every", "log_every",
                                "keep_checkpoints"), minimum=1)
        if self.interpolation_length < 2:
            raise ValueError("TrainingConfig.interpolation_length must be at least 2")
        check_int_fields(self, ("warmup_steps", "keypose_neighbors", "num_workers", "val_every", "keypose_buffer"),
                         minimum=0)
        floats = ("system1_lr", "system1_weight_decay", "system2_lr", "system2_weight_decay", "grad_clip",
                  "diffusion_position_weight", "diffusion_rotation_weight", "diffusion_openness_weight",
                  "aux_weight", "aux_position_weight", "aux_rotation_weight", "aux_gripper_weight",
                  "normalization_buffer", "still_motion")
        for name in floats:
            value = float(getattr(self, name))
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"TrainingConfig.{name} must be finite and >= 0, got {value}")
        for name in ("system1_betas", "system2_betas"):
            betas = getattr(self, name)
            if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
                raise ValueError(f"TrainingConfig.{name} must be two values in [0, 1), got {betas}")

    @property
    def trajectory_length(self) -> int:
        """Waypoints System 1 is trained to predict (the current pose is dropped)."""
        return self.interpolation_length - 1

    # -- serialisation ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["system1_betas"] = list(self.system1_betas)
        out["system2_betas"] = list(self.system2_betas)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainingConfig":
        return config_from_dict(cls, data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def save(self, path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_json())
        return path

    @classmethod
    def load(cls, path) -> "TrainingConfig":
        try:
            data = json.loads(Path(path).read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"{str(path)!r} is not valid JSON: {error}") from error
        if not isinstance(data, dict):
            raise ValueError(f"{str(path)!r} must hold a JSON object")
        return cls.from_dict(data)

    def replace(self, **changes: Any) -> "TrainingConfig":
        return dataclasses.replace(self, **changes)


__all__ = ["TrainingConfig"]
