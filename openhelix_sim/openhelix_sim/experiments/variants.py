"""What the learning demo compares on the same seeds: the trained policy and its ablations, built
as weights, so that the in-process evaluation and the ROS nodes (which load them as checkpoints)
run exactly the same ablation."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Sequence

import numpy as np

#: What is compared on the same seeds (see :func:`variant_models`).
VARIANTS = ("trained", "goal zeroed", "goal averaged", "untrained")
UNTRAINED_SEED = 1234


def variant_models(system1, system2, variant: str):
    """System 1 and System 2 of one evaluation variant, built from the trained models (which
    are left untouched):

    * ``"trained"``: the models themselves;
    * ``"goal zeroed"``: System 2 ablated: its goal projection has zero weights and bias, so
      the goal is all zeros whatever the image and the instruction;
    * ``"goal averaged"``: its projection outputs the training data's mean goal (System 1's
      ``goal_mean``: no instruction in it, and nothing System 1 has not seen); needs goal
      statistics (``standardize_goals``);
    * ``"untrained"``: fresh weights (seed :data:`UNTRAINED_SEED`) with the same configs,
      normalization and frozen LLaVA.
    """
    import torch

    from openhelix_core.models.system1 import DiffuserActor
    from openhelix_core.models.system2 import System2Planner

    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose from {list(VARIANTS)}")
    if variant == "trained":
        return system1, system2
    if variant == "untrained":
        torch.manual_seed(UNTRAINED_SEED)
        fresh = DiffuserActor(system1.config, system1.normalization)
        return fresh, System2Planner(system2.config, llava=system2.llava, tokenizer=system2.tokenizer)
    goal_mean = system1.normalization.goal_mean
    if variant == "goal averaged" and goal_mean is None:
        raise ValueError("this System 1 has no goal statistics (train with standardize_goals) for a mean goal")
    ablated = System2Planner(system2.config, llava=system2.llava, tokenizer=system2.tokenizer)
    ablated.load_trainable_state_dict(system2.trainable_state_dict())
    with torch.no_grad():
        ablated.projection.weight.zero_()
        if variant == "goal averaged":
            ablated.projection.bias.copy_(torch.as_tensor(np.asarray(goal_mean)))
        else:
            ablated.projection.bias.zero_()
    return system1, ablated


def variant_directory(out_dir, variant: str) -> Path:
    """Where a variant's files go under ``out_dir`` (its name with ``_`` for spaces)."""
    return Path(out_dir) / variant.replace(" ", "_")


def variants_to_run(checkpoint_system1, variants: Sequence[str]) -> list[str]:
    """``variants`` without ``"goal averaged"`` when the checkpoint has no goal statistics for it."""
    if checkpoint_system1.normalization.goal_mean is None and "goal averaged" in variants:
        print("[evaluate] goal averaged: skipped (the checkpoint has no goal statistics)", flush=True)
        return [v for v in variants if v != "goal averaged"]
    return list(variants)


def write_variant_checkpoints(checkpoint, out_dir, variants: Sequence[str] = VARIANTS) -> Dict[str, Path]:
    """``{variant: checkpoint directory}`` for the ROS nodes: ``checkpoint`` itself for
    ``"trained"``, ``<out_dir>/<variant>/{system1,system2}`` for the others."""
    from openhelix_core.training.trainer import load_models_from_checkpoint

    system1, system2 = load_models_from_checkpoint(checkpoint)
    paths = {}
    for variant in variants_to_run(system1, variants):
        if variant == "trained":
            paths[variant] = Path(checkpoint)
            continue
        directory = variant_directory(out_dir, variant)
        variant_system1, variant_system2 = variant_models(system1, system2, variant)
        variant_system1.save_pretrained(directory / "system1")
        variant_system2.save_pretrained(directory / "system2")
        paths[variant] = directory
    return paths
