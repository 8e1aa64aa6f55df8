"""OpenHelix training loop: stage 1 (prompt only) and stage 2 (prompt + 3D Diffuser Actor).

One step (B samples per process):

1. System 2 reads the static RGB image and the instruction of every sample
   (:class:`System2Processor` -> :class:`System2Planner`) and returns the ``(B, 512)`` goal and
   the auxiliary predictions at ``<ACT>``;
2. System 1 computes its denoising loss on the sample conditioned on that goal
   (``GOAL = goal[:, None]``); the loss is recombined from the model's unweighted parts as
   ``w_pos L1(pos noise) + w_rot L1(rot noise) + w_open BCE(openness)`` (30 / 10 / 1);
3. the auxiliary loss (:func:`compute_aux_loss`) compares the ``<ACT>`` head with the first
   target waypoint, expressed as System 1 sees it: position relative to the current gripper,
   normalised to [-1, 1] with the checkpoint's ``gripper_loc_bounds``; rotation as the 6-D
   form of the relative rotation (3DDA's wrapped Euler difference); gripper openness
   (``0.2 x (30 L1 pos + 10 L1 rot + 1 BCE gripper)``);
4. ``loss = diffusion + aux`` in the stages of ``aux_loss_stages`` (stage 2, as OpenHelix),
   ``loss = diffusion`` otherwise; gradients flow from System 1's loss through the goal into
   the ``<ACT>`` embedding and the projection in both stages.

Each training sample asks one of System 2's questions (OpenHelix: "Can you ...?" / "Can you
control the robot to ...?"), drawn from a seeded generator whose state is checkpointed;
validation cycles through them in a fixed order.

Stage 1: System 1 frozen (no gradients, eval mode), LLaVA frozen; only ``act_embedding``,
``projection`` and ``aux_head`` are optimised. Stage 2: System 1 is optimised too (its CLIP
backbone stays frozen when ``freeze_backbone``), with its own AdamW. LLaVA never trains.
Freezing only makes sense for a backbone with pretrained weights (a 3DDA / OpenHelix
``system1_checkpoint``): a frozen, never-trained ResNet gives features System 1 cannot learn
from (measured on the play-table demos: no better than standing still), so stage 2 warns when
asked to do that.

Resuming restores weights, both optimizers, both schedulers, the torch RNG, the diffusion-noise
generator of every rank and the position in the data order (epoch + batch), so a resumed run
produces the same parameters as an uninterrupted one.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import random
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

import torch
from torch import nn

from ..models.system1 import (
    CURRENT_GRIPPER,
    GOAL,
    PCD,
    RGB,
    SYSTEM1_PRESETS,
    TRAJECTORY,
    DiffuserActor,
    Normalization,
    System1Config,
    load_original_checkpoint,
)
from ..models.system2 import System2Config, System2Planner, System2Processor, compute_aux_loss, processor_for
from ..plotting import new_figure, save_png
from .configuration_training import TrainingConfig
from .dataset import OpenHelixCalvinDataset, collate
from .distributed import DistributedContext, all_reduce_mean, barrier, cleanup, init_distributed

CHECKPOINTS_DIR = "checkpoints"
LATEST_FILE = "latest"
FINAL_DIR = "final"
STATE_FILE = "training_state.pt"
#: What a run started from another checkpoint (init_from) kept, checked and recomputed.
FINE_TUNING_FILE = "fine_tuning.json"
#: System 1 settings a run started from a checkpoint may change with system1_overrides.
CHANGEABLE_SYSTEM1_FIELDS = frozenset({"cameras"})
CONFIG_FILE = "training_config.json"
METRICS_FILE = "metrics.csv"
CURVE_FILE = "loss_curve.png"
METRIC_COLUMNS = ("step", "epoch", "loss", "diffusion", "position", "rotation", "openness", "aux", "aux_position",
                  "aux_rotation", "aux_gripper", "lr_system1", "lr_system2", "it_per_s", "elapsed_s", "val_loss")
_NO_DECAY = ("bias", "norm", "LayerNorm")


# ---------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------
def system1_config_from(config: TrainingConfig) -> System1Config:
    """Preset + overrides, with ``trajectory_length`` following ``interpolation_length - 1``."""
    if config.system1_preset not in SYSTEM1_PRESETS:
        raise ValueError(f"unknown System 1 preset {config.system1_preset!r}; choose one of {sorted(SYSTEM1_PRESETS)}")
    values = SYSTEM1_PRESETS[config.system1_preset]().to_dict()
    values.update(config.system1_overrides)
    values["trajectory_length"] = config.trajectory_length
    return System1Config.from_dict(values)


def build_system1(config: TrainingConfig, normalization: Optional[Normalization]) -> DiffuserActor:
    """System 1 from ``system1_checkpoint`` (a ``save_pretrained`` directory or an original
    3DDA/OpenHelix ``.pth``) or from the preset with seeded random weights."""
    path = config.system1_checkpoint
    if path:
        if Path(path).is_dir():
            model = DiffuserActor.from_pretrained(path)
        else:
            model = load_original_checkpoint(path, config=system1_config_from(config),
                                             normalization=normalization or Normalization())
        if model.config.trajectory_length != config.trajectory_length:
            raise ValueError(f"System 1 checkpoint predicts {model.config.trajectory_length} waypoints but "
                             f"interpolation_length={config.interpolation_length} gives {config.trajectory_length}")
        return model
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return DiffuserActor(system1_config_from(config), normalization)


def build_system2(config: TrainingConfig) -> tuple[System2Planner, System2Processor]:
    if config.system2_preset == "tiny":
        s2_config = System2Config.tiny(seed=config.system2_seed, **config.system2_overrides)
    elif config.system2_preset == "llava_7b":
        if not config.llava_path:
            raise ValueError("system2_preset 'llava_7b' needs llava_path (a local LLaVA-1.5-7B directory)")
        s2_config = System2Config.llava_7b(config.llava_path, seed=config.system2_seed)
        if config.system2_overrides:
            s2_config = System2Config.from_dict({**s2_config.to_dict(), **config.system2_overrides})
    else:
        raise ValueError(f"unknown System 2 preset {config.system2_preset!r}; choose 'tiny' or 'llava_7b'")
    planner = System2Planner(s2_config)
    return planner, processor_for(planner)


def backbone_never_trained(system1: DiffuserActor) -> bool:
    """True when every BatchNorm of System 1's CLIP ResNet still has its initial statistics
    (mean 0, variance 1, no batch counted): the backbone never saw an image."""
    norms = [m for m in system1.encoder.backbone.modules() if isinstance(m, nn.BatchNorm2d)]
    return bool(norms) and all(
        int(m.num_batches_tracked) == 0 and not m.running_mean.any() and bool((m.running_var == 1).all())
        for m in norms)


@torch.no_grad()
def measure_goal_statistics(system2: System2Planner, processor: System2Processor, dataset,
                            device: torch.device, batch_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-dimension mean and standard deviation ``(goal_dim,)`` of System 2's goals (eval mode)
    over every sample of ``dataset``."""
    was_training = system2.training
    system2.eval()
    goals = []
    try:
        for start in range(0, len(dataset), batch_size):
            items = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
            inputs = processor([item["static_image"].numpy() for item in items], [item["instruction"] for item in items])
            goals.append(system2(**{k: v.to(device) for k, v in inputs.items()}).goal.float().cpu())
    finally:
        system2.train(was_training)
    goals = torch.cat(goals)
    return goals.mean(0), goals.std(0).clamp_min(1e-6)


def configure_stage(system1: DiffuserActor, system2: System2Planner, stage: int) -> None:
    """Set ``requires_grad`` for a stage (see the module docstring)."""
    system1.requires_grad_(stage == 2)
    if stage == 2 and system1.config.freeze_backbone:
        system1.encoder.backbone.requires_grad_(False)
    system2.llava.requires_grad_(False)
    for parameter in system2.trainable_parameters():
        parameter.requires_grad_(True)


class DualSystemTrainingModule(nn.Module):
    """Both systems in one module (one DistributedDataParallel wrapper); ``forward`` returns losses."""

    def __init__(self, system1: DiffuserActor, system2: System2Planner, config: TrainingConfig):
        super().__init__()
        self.system1 = system1
        self.system2 = system2
        self.stage = config.stage
        self.weights = config

    def train(self, mode: bool = True) -> "DualSystemTrainingModule":
        super().train(mode)
        if self.stage == 1:
            self.system1.eval()  # frozen: no dropout noise
        self.system2.train(mode)  # keeps the LLaVA in eval mode
        return self

    def forward(self, batch: dict[str, torch.Tensor], system2_inputs: dict[str, torch.Tensor],
                generator: Optional[torch.Generator] = None) -> dict[str, torch.Tensor]:
        cfg = self.weights
        out = self.system2(**system2_inputs)
        s1_batch = {RGB: batch[RGB], PCD: batch[PCD], CURRENT_GRIPPER: batch[CURRENT_GRIPPER],
                    TRAJECTORY: batch[TRAJECTORY], GOAL: out.goal.unsqueeze(1)}
        parts = self.system1.compute_loss(s1_batch, generator=generator)
        diffusion = (cfg.diffusion_position_weight * parts["position"]
                     + cfg.diffusion_rotation_weight * parts["rotation"]
                     + cfg.diffusion_openness_weight * parts["openness"])
        current = batch[CURRENT_GRIPPER][:, -1].to(out.goal.dtype)
        with torch.no_grad():
            first, openness = self.system1._targets(batch[TRAJECTORY][:, :1].to(out.goal.dtype), current)
        aux = compute_aux_loss(out, {"position": first[:, 0, :3], "rotation_6d": first[:, 0, 3:9],
                                     "gripper": openness[:, 0, 0]},
                               weights={"position": cfg.aux_position_weight, "rotation": cfg.aux_rotation_weight,
                                        "gripper": cfg.aux_gripper_weight})
        aux_term = cfg.aux_weight * aux["loss"]
        loss = diffusion + aux_term if self.stage in cfg.aux_loss_stages else diffusion
        return {"loss": loss, "diffusion": diffusion, "position": parts["position"], "rotation": parts["rotation"],
                "openness": parts["openness"], "aux": aux_term, "aux_position": aux["position"],
                "aux_rotation": aux["rotation"], "aux_gripper": aux["gripper"]}


# ---------------------------------------------------------------------------------------------
# Optimisation
# ---------------------------------------------------------------------------------------------
def parameter_groups(named: list[tuple[str, nn.Parameter]], weight_decay: float) -> list[dict[str, Any]]:
    """Two AdamW groups: no weight decay on biases and normalisation weights (as 3DDA/OpenHelix)."""
    decay = [p for n, p in named if p.requires_grad and not any(k in n for k in _NO_DECAY)]
    no_decay = [p for n, p in named if p.requires_grad and any(k in n for k in _NO_DECAY)]
    groups = []
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    if decay:
        groups.append({"params": decay, "weight_decay": weight_decay})
    return groups


def lr_lambda(config: TrainingConfig):
    warmup, total, schedule = config.warmup_steps, config.steps, config.lr_schedule

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if schedule == "cosine":
            progress = min(1.0, (step - warmup) / max(1, total - warmup))
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        return 1.0

    return factor


def build_optimizers(system1: DiffuserActor, system2: System2Planner, config: TrainingConfig):
    """``{"system1": AdamW or absent, "system2": AdamW}`` and matching LambdaLR schedulers."""
    optimizers: dict[str, torch.optim.Optimizer] = {}
    s2_named = list(system2.named_trainable_parameters())
    optimizers["system2"] = torch.optim.AdamW(parameter_groups(s2_named, config.system2_weight_decay),
                                              lr=config.system2_lr, betas=config.system2_betas)
    if config.stage == 2:
        groups = parameter_groups(list(system1.named_parameters()), config.system1_weight_decay)
        if not groups:
            raise ValueError("stage 2 found no trainable System 1 parameters")
        optimizers["system1"] = torch.optim.AdamW(groups, lr=config.system1_lr, betas=config.system1_betas)
    schedulers = {name: torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(config)) for name, opt in optimizers.items()}
    return optimizers, schedulers


# ---------------------------------------------------------------------------------------------
# Data order
# ---------------------------------------------------------------------------------------------
class EpochBatches:
    """Deterministic, resumable batch order: epoch ``e`` is a permutation seeded by ``(seed, e)``,
    split across ranks (rank ``r`` takes every ``world``-th index), cut into full batches."""

    def __init__(self, size: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1):
        self.size, self.batch_size, self.seed = size, batch_size, seed
        self.rank, self.world_size = rank, world_size
        per_rank = size // world_size
        if per_rank < batch_size:
            raise ValueError(f"{size} samples cannot fill one batch of {batch_size} on each of {world_size} "
                             f"process(es); lower batch_size or add data")
        self.batches_per_epoch = per_rank // batch_size

    def epoch(self, epoch: int) -> list[list[int]]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        order = torch.randperm(self.size, generator=generator).tolist()
        mine = order[: (self.size // self.world_size) * self.world_size][self.rank::self.world_size]
        return [mine[i * self.batch_size:(i + 1) * self.batch_size] for i in range(self.batches_per_epoch)]


def iterate_batches(dataset, order: EpochBatches, epoch: int, position: int,
                    num_workers: int) -> Iterator[tuple[int, int, dict[str, Any]]]:
    """Yield ``(epoch, position_after, batch)`` forever, starting at batch ``position`` of ``epoch``."""
    while True:
        batches = order.epoch(epoch)[position:]
        if batches:
            # an own generator: creating a loader iterator must not draw from the global RNG
            # (that would shift dropout after a resume)
            loader = torch.utils.data.DataLoader(dataset, batch_sampler=batches, collate_fn=collate,
                                                 num_workers=num_workers,
                                                 generator=torch.Generator().manual_seed(order.seed + epoch))
            for batch in loader:
                position += 1
                yield epoch, position, batch
        epoch, position = epoch + 1, 0


# ---------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------
def _rng_state(generator: torch.Generator, questions: random.Random) -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "generator": generator.get_state(),
             "python": random.getstate(), "questions": questions.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _python_state(saved) -> tuple:
    """A ``random.getstate()`` tuple back from its saved form (lists after loading)."""
    version, internal, gauss = saved
    return version, tuple(internal), gauss


def _set_rng_state(state: dict[str, Any], generator: torch.Generator, questions: random.Random) -> None:
    torch.set_rng_state(state["torch"])
    generator.set_state(state["generator"])
    random.setstate(_python_state(state["python"]))
    if "questions" in state:  # checkpoints written before questions were drawn keep the seeded start
        questions.setstate(_python_state(state["questions"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def latest_checkpoint(output_dir) -> Optional[Path]:
    """The newest complete checkpoint under ``<output_dir>/checkpoints`` (None if there is none)."""
    root = Path(output_dir) / CHECKPOINTS_DIR
    pointer = root / LATEST_FILE
    if pointer.is_file():
        candidate = root / pointer.read_text().strip()
        if (candidate / STATE_FILE).is_file():
            return candidate
    steps = sorted(p for p in root.glob("step_*") if (p / STATE_FILE).is_file()) if root.is_dir() else []
    return steps[-1] if steps else None


def load_models_from_checkpoint(directory, config: Optional[TrainingConfig] = None,
                                device: str | torch.device = "cpu") -> tuple[DiffuserActor, System2Planner]:
    """System 1 and System 2 of a checkpoint (``step_*``, ``final``) written by this trainer."""
    directory = Path(directory)
    system1 = DiffuserActor.from_pretrained(directory / "system1", device=device)
    llava_path = config.llava_path if config is not None else None
    system2 = System2Planner.from_pretrained(directory / "system2", llava_path=llava_path, device=device)
    return system1, system2


@dataclass
class TrainResult:
    """What :func:`train` leaves behind."""

    output_dir: Path
    final_dir: Path
    steps: int
    final_loss: float
    history: list = field(default_factory=list)
    metrics_csv: Optional[Path] = None
    loss_curve: Optional[Path] = None


class Trainer:
    """Builds everything from a :class:`TrainingConfig` and runs it (see :func:`train`)."""

    def __init__(self, config: TrainingConfig, resume: Optional[str] = None,
                 ctx: Optional[DistributedContext] = None):
        self.config = config
        self.ctx = ctx or init_distributed(config.device)
        self._owns_ctx = ctx is None
        self.device = self.ctx.device
        self.output_dir = Path(config.output_dir)
        self.resume_dir = self._resolve_resume(resume)
        torch.manual_seed(config.seed + self.ctx.rank)
        random.seed(config.seed + self.ctx.rank)
        self.generator = torch.Generator().manual_seed(config.seed * 7919 + self.ctx.rank)
        self.question_rng = random.Random(config.seed * 104_729 + self.ctx.rank)
        self._build()

    # -- construction --------------------------------------------------------------------------
    def _resolve_resume(self, resume: Optional[str]) -> Optional[Path]:
        if resume is None:
            return None
        if resume == "auto":
            return latest_checkpoint(self.output_dir)
        path = Path(resume)
        if not (path / STATE_FILE).is_file():
            raise FileNotFoundError(f"{str(path)!r} is not a training checkpoint (no {STATE_FILE})")
        return path

    def _dataset(self, directory, s1_config: System1Config, progress: bool) -> OpenHelixCalvinDataset:
        cfg = self.config
        return OpenHelixCalvinDataset(
            directory, s1_config, interpolation_length=cfg.interpolation_length, frame_sampling=cfg.frame_sampling,
            keypose_neighbors=cfg.keypose_neighbors, keypose_buffer=cfg.keypose_buffer,
            still_motion=cfg.still_motion, openness_source=cfg.openness_source, tasks=cfg.tasks, max_segments=cfg.max_segments,
            cache_dir=cfg.cache_dir, progress=progress)

    def _build(self) -> None:
        cfg = self.config
        if not cfg.train_data:
            raise ValueError("TrainingConfig.train_data is empty: name a CALVIN split folder")
        source = self.resume_dir or (Path(cfg.init_from) if cfg.init_from else None)
        checkpoint_cameras = None
        if source is not None:
            system1 = DiffuserActor.from_pretrained(source / "system1")
            system2 = System2Planner.from_pretrained(source / "system2", llava_path=cfg.llava_path)
            checkpoint_cameras = list(system1.config.cameras)
            if self.resume_dir is None:
                system1.config = self._checkpoint_config_with_overrides(system1.config, source)
            if system1.config.trajectory_length != cfg.trajectory_length:
                raise ValueError(f"{source} predicts {system1.config.trajectory_length} waypoints; "
                                 f"interpolation_length {cfg.interpolation_length} needs {cfg.trajectory_length}")
            s1_config = system1.config
        else:
            s1_config = system1_config_from(cfg) if not cfg.system1_checkpoint or not Path(
                cfg.system1_checkpoint).is_dir() else DiffuserActor.from_pretrained(cfg.system1_checkpoint).config
            system1 = system2 = None
        progress = cfg.progress and self.ctx.is_main
        # rank 0 builds the cache first, the others then read it
        if cfg.cache_dir and self.ctx.distributed and not self.ctx.is_main:
            barrier(self.ctx)
        self.dataset = self._dataset(cfg.train_data, s1_config, progress)
        if cfg.cache_dir and self.ctx.distributed and self.ctx.is_main:
            barrier(self.ctx)
        self.val_dataset = self._dataset(cfg.val_data, s1_config, False) if cfg.val_data else None
        if system1 is None:
            normalization = None
            if cfg.compute_normalization and not cfg.system1_checkpoint:
                normalization = Normalization(gripper_loc_bounds=self._widened(self.dataset.position_bounds()))
            system1 = build_system1(cfg, normalization)
            system2, _ = build_system2(cfg)
        self.processor = processor_for(system2)
        fine_tuning = self.resume_dir is None and cfg.init_from is not None
        if fine_tuning:
            self._adapt_to_data(system1, Path(cfg.init_from), checkpoint_cameras)
        if cfg.stage == 2 and cfg.standardize_goals and (system1.normalization.goal_mean is None or fine_tuning):
            system1.set_goal_statistics(*measure_goal_statistics(system2, self.processor, self.dataset,
                                                                 next(system2.parameters()).device))
        configure_stage(system1, system2, cfg.stage)
        if cfg.stage == 2 and system1.config.freeze_backbone and backbone_never_trained(system1) and self.ctx.is_main:
            warnings.warn("System 1's CLIP backbone is frozen but was never trained (its BatchNorm statistics "
                          "are the initial ones), so System 1 will learn little from the images: give a "
                          "pretrained system1_checkpoint, or train the backbone with system1_overrides "
                          "{'freeze_backbone': false}", UserWarning, stacklevel=2)
        system1.to(self.device)
        system2.to(self.device)
        if cfg.gradient_checkpointing and self.device.type == "cuda":
            _checkpoint_prediction_head(system1)
        self.system1, self.system2 = system1, system2
        self.module = DualSystemTrainingModule(system1, system2, cfg)
        if self.ctx.distributed:
            kwargs = {"device_ids": [self.device.index]} if self.device.type == "cuda" else {}
            self.model = nn.parallel.DistributedDataParallel(self.module, find_unused_parameters=True,
                                                             broadcast_buffers=False, **kwargs)
        else:
            self.model = self.module
        self.optimizers, self.schedulers = build_optimizers(system1, system2, cfg)
        self.order = EpochBatches(len(self.dataset), cfg.batch_size, cfg.seed, self.ctx.rank, self.ctx.world_size)
        self.step, self.epoch, self.position = 0, 0, 0
        if self.resume_dir is not None:
            self._load_state(self.resume_dir)

    def _widened(self, bounds) -> tuple:
        """``(2, 3)`` min / max widened by ``normalization_buffer`` (3DDA widens by 0.01) on each side."""
        pad = max(self.config.normalization_buffer, 1e-3)
        return bounds[0] - pad, bounds[1] + pad

    def _checkpoint_config_with_overrides(self, config: System1Config, checkpoint: Path) -> System1Config:
        """The checkpoint's System 1 config with this run's ``system1_overrides``. Only the camera set
        may change (System 1 has no per-camera weights: every camera goes through the same
        backbone); any other override that differs would not fit the checkpoint's weights."""
        values = config.to_dict()
        values.update(self.config.system1_overrides)
        values["trajectory_length"] = config.trajectory_length
        wanted = System1Config.from_dict(values)
        changed = [f.name for f in dataclasses.fields(System1Config)
                   if getattr(wanted, f.name) != getattr(config, f.name) and f.name not in CHANGEABLE_SYSTEM1_FIELDS]
        if changed:
            raise ValueError(f"system1_overrides change {changed} of {checkpoint}'s System 1 "
                             f"({', '.join(f'{n}: {getattr(config, n)!r} -> {getattr(wanted, n)!r}' for n in changed)}); "
                             f"a checkpoint's architecture is fixed -- only {sorted(CHANGEABLE_SYSTEM1_FIELDS)} may change")
        return wanted

    def _adapt_to_data(self, system1: DiffuserActor, checkpoint: Path, checkpoint_cameras: list) -> None:
        """Starting from another run's checkpoint (stage 1 -> 2, or fine-tuning on a robot's own
        data, ``checkpoint_cameras`` the ones it was trained with): recompute the position
        statistics from this run's data, and write what matched and what changed to
        ``fine_tuning.json``."""
        cfg, dataset = self.config, self.dataset
        sizes = dataset.image_sizes()   # the dataset has refused data without the model's cameras
        before = system1.normalization.to_dict()
        if cfg.compute_normalization:
            clip = None
            if system1.normalization.action_position_bounds is not None:
                clip = self._widened(dataset.workspace_bounds())
            system1.set_position_bounds(self._widened(dataset.position_bounds()), clip)
        report = {
            "checkpoint": str(checkpoint),
            "train_data": str(cfg.train_data),
            "must_match": {
                "cameras": {"checkpoint": checkpoint_cameras, "this_run": list(system1.config.cameras),
                            "data": sorted(sizes),
                            "note": "static = fixed to the base, gripper = on the hand; the set may change "
                                    "(system1_overrides cameras), the backbone is shared"},
                "history": {"nhist": system1.config.nhist, "note": "the data's earlier frames are used"},
                "trajectory_length": system1.config.trajectory_length,
                "action_frame": "absolute TCP poses in the data's base frame; System 1 predicts them relative to "
                                "the current TCP" if system1.config.relative else "absolute TCP poses in the base frame",
            },
            "adapted": {
                "image_sizes": {"data": {k: list(v) for k, v in sizes.items()},
                                "model_input": [system1.config.image_resize, system1.config.image_size],
                                "note": "images are resized to image_resize and cropped to image_size"},
                "normalization_before": before,
                "normalization_after": system1.normalization.to_dict(),
                "recomputed": bool(cfg.compute_normalization),
            },
        }
        if self.ctx.is_main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            (self.output_dir / FINE_TUNING_FILE).write_text(json.dumps(report, indent=2) + "\n")

    def _load_state(self, directory: Path) -> None:
        state = torch.load(str(directory / STATE_FILE), map_location="cpu", weights_only=True)
        if int(state["stage"]) != self.config.stage:
            raise ValueError(f"checkpoint {directory} is from stage {state['stage']}, this run is stage "
                             f"{self.config.stage}; start a new stage with init_from instead of resume")
        if int(state["world_size"]) != self.ctx.world_size:
            raise ValueError(f"checkpoint {directory} was written by {state['world_size']} process(es); resume "
                             f"with the same number ({self.ctx.world_size} now) to keep the data order exact")
        for name, optimizer in self.optimizers.items():
            optimizer.load_state_dict(state["optimizers"][name])
            self.schedulers[name].load_state_dict(state["schedulers"][name])
        self.step, self.epoch, self.position = int(state["step"]), int(state["epoch"]), int(state["position"])
        rng_file = directory / f"rng_rank{self.ctx.rank}.pt"
        _set_rng_state(torch.load(str(rng_file), map_location="cpu", weights_only=True), self.generator,
                       self.question_rng)

    # -- checkpoints ---------------------------------------------------------------------------
    def save_checkpoint(self) -> Path:
        root = self.output_dir / CHECKPOINTS_DIR
        name = f"step_{self.step:07d}"
        final = root / name
        tmp = root / f".{name}.tmp"
        if self.ctx.is_main:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            self.system1.save_pretrained(tmp / "system1")
            self.system2.save_pretrained(tmp / "system2")
            self.config.save(tmp / CONFIG_FILE)
            torch.save({
                "step": self.step, "epoch": self.epoch, "position": self.position, "stage": self.config.stage,
                "world_size": self.ctx.world_size,
                "optimizers": {k: v.state_dict() for k, v in self.optimizers.items()},
                "schedulers": {k: v.state_dict() for k, v in self.schedulers.items()},
            }, str(tmp / STATE_FILE))
        barrier(self.ctx)
        torch.save(_rng_state(self.generator, self.question_rng), str(tmp / f"rng_rank{self.ctx.rank}.pt"))
        barrier(self.ctx)
        if self.ctx.is_main:
            shutil.rmtree(final, ignore_errors=True)
            tmp.replace(final)
            (root / LATEST_FILE).write_text(name + "\n")
            kept = sorted(p for p in root.glob("step_*") if p.is_dir())
            for old in kept[:-self.config.keep_checkpoints]:
                shutil.rmtree(old, ignore_errors=True)
        barrier(self.ctx)
        return final

    def export(self, directory) -> Path:
        """Write the deployable models (``system1/``, ``system2/``) and the config (rank 0)."""
        directory = Path(directory)
        if self.ctx.is_main:
            self.system1.save_pretrained(directory / "system1")
            self.system2.save_pretrained(directory / "system2")
            self.config.save(directory / CONFIG_FILE)
        barrier(self.ctx)
        return directory

    # -- steps -----------------------------------------------------------------------------------
    def _to_device(self, batch: dict[str, Any], questions: list[int]
                   ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        tensors = {k: batch[k].to(self.device) for k in (RGB, PCD, CURRENT_GRIPPER, TRAJECTORY)}
        s2 = self.processor(batch["static_image"], batch["instruction"], question_indices=questions)
        return tensors, {k: v.to(self.device) for k, v in s2.items()}

    @property
    def _question_count(self) -> int:
        return len(self.system2.config.question_templates) if self.system2.config.asks_question else 1

    def _autocast(self):
        enabled = bool(self.config.bf16) and self.device.type == "cuda"
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=enabled)

    def train_step(self, batch: dict[str, Any]) -> dict[str, float]:
        self.model.train()
        questions = [self.question_rng.randrange(self._question_count) for _ in batch["instruction"]]
        tensors, s2_inputs = self._to_device(batch, questions)
        for optimizer in self.optimizers.values():
            optimizer.zero_grad(set_to_none=True)
        with self._autocast():
            losses = self.model(tensors, s2_inputs, self.generator)
        losses["loss"].backward()
        if self.config.grad_clip > 0:
            params = [p for opt in self.optimizers.values() for g in opt.param_groups for p in g["params"]]
            torch.nn.utils.clip_grad_norm_(params, self.config.grad_clip)
        for name, optimizer in self.optimizers.items():
            optimizer.step()
            self.schedulers[name].step()
        self.step += 1
        return {k: float(v.detach()) for k, v in losses.items()}

    @torch.no_grad()
    def validate(self) -> Optional[float]:
        if self.val_dataset is None:
            return None
        self.module.eval()
        generator = torch.Generator().manual_seed(12345 + self.ctx.rank)
        size = min(len(self.val_dataset), self.config.batch_size)
        order = EpochBatches(len(self.val_dataset), size, 0, self.ctx.rank, self.ctx.world_size)
        total, count = 0.0, 0
        for index, batch_ids in enumerate(order.epoch(0)[: self.config.val_batches]):
            batch = collate([self.val_dataset[i] for i in batch_ids])
            questions = [(index * size + row) % self._question_count for row in range(len(batch_ids))]
            tensors, s2_inputs = self._to_device(batch, questions)
            with self._autocast():
                total += float(self.module(tensors, s2_inputs, generator)["loss"])
            count = index + 1
        return all_reduce_mean({"val": total / max(count, 1)}, self.ctx)["val"]

    # -- the loop --------------------------------------------------------------------------------
    def fit(self) -> TrainResult:
        cfg = self.config
        metrics_path = self.output_dir / METRICS_FILE
        writer = self._open_metrics(metrics_path) if self.ctx.is_main else None
        tb = _tensorboard(self.output_dir) if self.ctx.is_main else None
        history: list[dict[str, float]] = []
        bar = None
        if cfg.progress and self.ctx.is_main:
            from tqdm import tqdm

            bar = tqdm(total=cfg.steps, initial=self.step, desc=f"stage {cfg.stage}", unit="it", dynamic_ncols=True)
        batches = iterate_batches(self.dataset, self.order, self.epoch, self.position, cfg.num_workers)
        start_time = time.perf_counter()
        window_start, window_steps = start_time, 0
        running: dict[str, float] = {}
        last_loss = float("nan")
        try:
            while self.step < cfg.steps:
                self.epoch, self.position, batch = next(batches)
                if self.position == self.order.batches_per_epoch:
                    self.epoch, self.position = self.epoch + 1, 0
                losses = self.train_step(batch)
                window_steps += 1
                for k, v in losses.items():
                    running[k] = running.get(k, 0.0) + v
                last_loss = losses["loss"]
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{losses['loss']:.4f}", diff=f"{losses['diffusion']:.3f}",
                                    aux=f"{losses['aux']:.3f}")
                if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                    means = all_reduce_mean({k: v / window_steps for k, v in running.items()}, self.ctx)
                    now = time.perf_counter()
                    row = {"step": self.step, "epoch": self.epoch, **means,
                           "lr_system1": self.schedulers["system1"].get_last_lr()[0] if "system1" in self.schedulers
                           else 0.0,
                           "lr_system2": self.schedulers["system2"].get_last_lr()[0],
                           "it_per_s": window_steps / max(now - window_start, 1e-9), "elapsed_s": now - start_time,
                           "val_loss": ""}
                    if cfg.val_every and self.step % cfg.val_every == 0:
                        row["val_loss"] = self.validate()
                    history.append(row)
                    if writer is not None:
                        writer.writerow({k: row.get(k, "") for k in METRIC_COLUMNS})
                        self._metrics_file.flush()
                    if tb is not None:
                        for key in METRIC_COLUMNS[2:]:
                            if isinstance(row.get(key), float):
                                tb.add_scalar(f"train/{key}", row[key], self.step)
                    running, window_start, window_steps = {}, now, 0
                if self.step % cfg.checkpoint_every == 0 or self.step == cfg.steps:
                    self.save_checkpoint()
        finally:
            if bar is not None:
                bar.close()
            if writer is not None:
                self._metrics_file.close()
            if tb is not None:
                tb.close()
        final_dir = self.export(self.output_dir / FINAL_DIR)
        curve = None
        if self.ctx.is_main:
            curve = plot_loss_curve(metrics_path, self.output_dir / CURVE_FILE, title=f"OpenHelix stage {cfg.stage}")
        return TrainResult(self.output_dir, final_dir, self.step, last_loss, history,
                           metrics_path if self.ctx.is_main else None, curve)

    def _open_metrics(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        rows = []
        if path.is_file() and self.resume_dir is not None:
            with path.open() as handle:  # keep the rows up to the resumed step
                rows = [r for r in csv.DictReader(handle) if r.get("step") and int(r["step"]) <= self.step]
        self._metrics_file = path.open("w", newline="")
        writer = csv.DictWriter(self._metrics_file, fieldnames=METRIC_COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: row.get(k, "") for k in METRIC_COLUMNS})
        return writer

    def close(self) -> None:
        if self._owns_ctx:
            cleanup(self.ctx)


def _checkpoint_prediction_head(system1: DiffuserActor) -> None:
    """Activation checkpointing of the denoiser (GPU only; the state dict is unchanged)."""
    from torch.utils.checkpoint import checkpoint

    head = system1.prediction_head
    forward = head.forward

    def checkpointed(trajectory, timestep, fixed):
        return checkpoint(forward, trajectory, timestep, fixed, use_reentrant=False)

    head.forward = checkpointed


def _tensorboard(output_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception:  # tensorboard not installed: CSV only
        return None
    return SummaryWriter(log_dir=str(output_dir / "tensorboard"))


def plot_loss_curve(metrics_csv, path, title: str = "training loss") -> Optional[Path]:
    """PNG of loss / diffusion / aux (and validation loss) against the step, from the metrics CSV."""
    metrics_csv = Path(metrics_csv)
    if not metrics_csv.is_file():
        return None
    with metrics_csv.open() as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        return None
    steps = [int(r["step"]) for r in rows]
    fig, ax = new_figure(7, 4)
    for key in ("loss", "diffusion", "aux"):
        values = [float(r[key]) for r in rows if r.get(key) not in (None, "")]
        if len(values) == len(steps):
            ax.plot(steps, values, label=key)
    val = [(int(r["step"]), float(r["val_loss"])) for r in rows if r.get("val_loss") not in (None, "")]
    if val:
        ax.plot(*zip(*val), "o-", label="validation loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.set_title(title)
    ax.legend()
    path = Path(path)
    save_png(fig, path)
    return path


def train(config: TrainingConfig, resume: Optional[str] = None,
          ctx: Optional[DistributedContext] = None) -> TrainResult:
    """Run one training stage; ``resume`` = ``"auto"`` (latest checkpoint in ``output_dir``), a
    checkpoint directory, or None (fresh start)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    trainer = Trainer(config, resume=resume, ctx=ctx)
    try:
        if trainer.ctx.is_main:
            trainer.output_dir.mkdir(parents=True, exist_ok=True)
            config.save(trainer.output_dir / CONFIG_FILE)
            (trainer.output_dir / "run_info.json").write_text(json.dumps({
                "samples": len(trainer.dataset), "segments": len(trainer.dataset.segments),
                "instructions": trainer.dataset.instructions, "world_size": trainer.ctx.world_size,
                "device": str(trainer.device), "resumed_from": str(trainer.resume_dir) if trainer.resume_dir else None,
                "calibration": trainer.dataset.calibration.source,
                "normalization": trainer.system1.normalization.to_dict(),
            }, indent=2) + "\n")
        return trainer.fit()
    finally:
        trainer.close()


__all__ = [
    "DualSystemTrainingModule", "EpochBatches", "TrainResult", "Trainer", "build_optimizers", "build_system1",
    "build_system2", "configure_stage", "latest_checkpoint", "load_models_from_checkpoint", "plot_loss_curve",
    "system1_config_from", "train",
]
