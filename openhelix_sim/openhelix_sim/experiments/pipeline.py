"""The learning demo in one command: demos -> train stage 1 -> train stage 2 -> every variant
evaluated on the same held-out seeds, in process and then through the ROS nodes; writes
``results.json`` and ``results.md`` and prints both tables (README: "A policy that learns on this
machine"). The settings of the CPU demo's tiny policy are here too."""
from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path

from ..task_set import EVAL_SEED_OFFSET
from .demos import DEMOS_INFO, generate_demos
from .in_process import evaluate_variants
from .report import success_table
from .ros_evaluation import evaluate_variants_through_ros
from .variants import write_variant_checkpoints


def tiny_policy_overrides(position_frame: str = "absolute") -> dict:
    """System 1 settings of the CPU demo (see ``pipeline --help``)."""
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


def run_pipeline(args) -> dict:
    """The ``pipeline`` command with its parsed options (:func:`~.cli.build_parser`); returns the
    in-process results ``{variant: {task: [success per seed]}}``."""
    import torch

    from openhelix_core.training import TrainingConfig, train

    out = Path(args.out)
    if args.ros_eval:
        missing = [name for name in ("rclpy", "openhelix_ros") if importlib.util.find_spec(name) is None]
        if missing:
            raise RuntimeError(f"the evaluation through ROS needs {missing}: run `source scripts/env.sh` first "
                               f"(after ./scripts/setup), or pass --no-ros-eval")
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    timings = {}
    demos = out / "demos" / "training"
    t0 = time.perf_counter()
    if (demos / DEMOS_INFO).is_file():
        existing = json.loads((demos / DEMOS_INFO).read_text())
        if existing.get("scene_variation", "full") != args.scene_variation:
            raise ValueError(f"{demos} holds demos with scene_variation {existing.get('scene_variation', 'full')!r}, "
                             f"this run asks for {args.scene_variation!r}: choose another --out")
    if not (demos / "lang_annotations" / "auto_lang_ann.npy").is_file():
        info = generate_demos(demos, args.tasks, args.episodes, seed=0, static_size=args.static_size,
                              gripper_size=args.gripper_size, workers=args.workers,
                              scene_variation=args.scene_variation)
        print(f"[demos] kept {len(info['kept'])}, failed {len(info['failed'])}, {info['frames']} frames, "
              f"{info['seconds']:.0f} s", flush=True)
    timings["demos_s"] = time.perf_counter() - t0
    common = dict(train_data=str(demos), tasks=list(args.tasks), cache_dir=str(out / "cache"),
                  frame_sampling=args.frame_sampling, keypose_neighbors=args.keypose_neighbors,
                  still_motion=args.still_motion,
                  system1_preset="tiny", system1_overrides=tiny_policy_overrides(args.position_frame),
                  system2_overrides=dict(TINY_SYSTEM2_OVERRIDES), batch_size=args.batch_size,
                  checkpoint_every=max(args.stage2_steps, args.stage1_steps), log_every=25, seed=0,
                  progress=not args.quiet)
    t0 = time.perf_counter()
    stage1 = TrainingConfig(stage=1, steps=args.stage1_steps, output_dir=str(out / "stage1"),
                            system2_lr=args.stage1_system2_lr, **common)
    train(stage1, resume="auto" if args.resume else None)
    timings["stage1_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    stage2 = TrainingConfig(stage=2, steps=args.stage2_steps, output_dir=str(out / "stage2"),
                            init_from=str(out / "stage1" / "final"), standardize_goals=True, system1_lr=args.system1_lr,
                            system2_lr=args.system2_lr, lr_schedule="cosine", warmup_steps=50, **common)
    train(stage2, resume="auto" if args.resume else None)
    timings["stage2_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    seeds = [EVAL_SEED_OFFSET + k for k in range(args.eval_seeds)]
    results = evaluate_variants(out / "stage2" / "final", args.tasks, seeds, args.max_steps, args.execute_steps,
                                args.static_size, args.gripper_size, progress=not args.quiet,
                                scene_variation=args.scene_variation)
    timings["evaluation_s"] = time.perf_counter() - t0
    report = {"results": results, "seeds": seeds, "timings": timings,
              "args": {k: v for k, v in vars(args).items() if k != "func"}}
    tables = ["In process (DualSystemPolicy in PlayTableEnv):\n\n" + success_table(results, seeds)]
    if args.ros_eval:
        t0 = time.perf_counter()
        checkpoints = write_variant_checkpoints(out / "stage2" / "final", out / "variants")
        report["ros_results"] = evaluate_variants_through_ros(
            checkpoints, args.tasks, seeds, args.max_steps, args.execute_steps, args.static_size, args.gripper_size,
            out / "ros_evaluation", workers=args.workers, scene_variation=args.scene_variation,
            execution=args.execution)
        timings["ros_evaluation_s"] = time.perf_counter() - t0
        tables.append("Through ROS (sim bridge, planner and controller nodes; `openhelix eval-calvin --protocol "
                      "tasks`):\n\n" + success_table(report["ros_results"], seeds))
    (out / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "results.md").write_text("\n\n".join(tables) + "\n\n" + json.dumps(timings, indent=2) + "\n")
    print("\n\n".join(tables))
    print("timings (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()))
    return results
