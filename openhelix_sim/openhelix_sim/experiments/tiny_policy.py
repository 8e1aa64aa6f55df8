"""Settings of the CPU learning demo's tiny policy (``openhelix learning-table``, the training
benchmark): System 1 small enough to learn the play table in minutes on two cores, and a short
System 2 prompt for the byte-level tiny tokenizer."""
from __future__ import annotations


def tiny_policy_overrides(position_frame: str = "absolute", denoising: str = "ddpm") -> dict:
    """System 1 settings of the CPU demo (see ``pipeline --help``); ``denoising="flow_matching"``
    trains the same network on flow-matching velocities instead (10 Euler steps at inference)."""
    if denoising == "flow_matching":
        return {**tiny_policy_overrides(position_frame), "denoising": "flow_matching", "prediction_type": "velocity"}
    return {# Relative mode (CALVIN's) sees the scene only relative to the gripper, so it must
            # find the handle in 4x4 feature grids of 32-px crops; absolute positions let the
            # small model tie each instruction to where its task happens (measured: 27 % -> 70 %).
            "relative": position_frame == "relative",
            "embedding_dim": 48, "num_attn_heads": 4, "image_resize": 40, "image_size": 32, "feature_level": "res3",
            "diffusion_timesteps": 10, "dropout": 0.0,
            # With only 10 steps, scaled_linear betas (1e-4 .. 0.02) noise positions to
            # alpha_bar_T ~ 0.9, so training never sees the pure noise inference starts from;
            # the cosine schedule reaches alpha_bar_T ~ 0 at any step count.
            "position_beta_schedule": "squaredcos_cap_v2",
            # At alpha_bar_T ~ 0 an epsilon model's first step says nothing about the
            # trajectory; predicting the trajectory itself makes every step read the scene.
            "prediction_type": "sample",
            # No pretrained CLIP weights here: a frozen, randomly initialised ResNet (BatchNorm
            # in eval with its initial statistics) gives features System 1 cannot learn from.
            "freeze_backbone": False}


#: Tiny System 2 prompt: the byte-level tiny tokenizer makes OpenHelix's system sentence ~200
#: tokens; the short template keeps the image, the instruction and <ACT> last (54 tokens).
TINY_SYSTEM2_OVERRIDES = {"system_prompt": "", "prompt_template": "{system}{image}\n{instruction} {act}"}
