"""The learning demo's commands without ROS: expert demos and their in-process evaluation.

* ``generate``: expert demos as a CALVIN split (:mod:`.demos`);
* ``evaluate``: the in-process evaluation (:mod:`.in_process`) on held-out seeds of a trained
  checkpoint and its ablations (:mod:`.variants`: "goal zeroed", System 2 ablated; "goal
  averaged", the training data's mean goal; "untrained", fresh weights).

The whole learning table (demos -> stage 1 -> stage 2 -> every variant in process and through
the ROS nodes) is ``openhelix learning-table`` (``openhelix_bringup``), which reuses the
argument groups defined here.
"""
from __future__ import annotations

import argparse
from typing import Optional, Sequence

from openhelix_core.evaluation.sequences import STEPS_PER_SUBTASK, TASK_NAMES
from openhelix_core.models.system1 import SamplerConfig
from openhelix_core.models.system1.configuration_system1 import SAMPLERS

from ..envs import BACKENDS
from ..envs.expert import SUPPORTED
from ..task_set import (
    DEFAULT_TASKS,
    DEMO_IMAGE_SIZES,
    EPISODE_MAX_STEPS,
    EVAL_EPISODES_PER_TASK,
    EVAL_SEED_OFFSET,
    EXECUTION_HORIZON,
    SCENE_VARIATIONS,
)
from .demos import DEFAULT_DEMO_CHAINS, generate_chain_demos, generate_demos
from .in_process import evaluate_variant_chains, evaluate_variants
from .report import chain_table, success_table
from .variants import VARIANTS


def selected_tasks(names: Sequence[str]) -> list:
    """``--tasks``: the names given, or every task the scripted expert performs for ``all``."""
    return [t for t in TASK_NAMES if t in SUPPORTED] if list(names) == ["all"] else list(names)


def _cmd_generate(args) -> int:
    if args.scene_variation == "calvin":
        info = generate_chain_demos(args.out, args.chains, selected_tasks(args.tasks), static_size=args.static_size,
                                    gripper_size=args.gripper_size, workers=args.workers,
                                    paraphrases=args.paraphrases, backend=args.backend)
    else:
        info = generate_demos(args.out, selected_tasks(args.tasks), args.episodes, seed=args.seed,
                              static_size=args.static_size, gripper_size=args.gripper_size, workers=args.workers,
                              paraphrases=args.paraphrases, scene_variation=args.scene_variation,
                              backend=args.backend)
    print(f"kept {len(info['kept'])} demos ({info['frames']} frames), failed {len(info['failed'])}: "
          f"{info['failed']} in {info['seconds']:.0f} s -> {args.out}")
    return 0


def _cmd_evaluate(args) -> int:
    if args.eval_seeds:
        seeds = [EVAL_SEED_OFFSET + k for k in range(args.eval_seeds)]
        results = evaluate_variants(args.checkpoint, selected_tasks(args.tasks), seeds, args.max_steps,
                                    args.execute_steps, args.static_size, args.gripper_size, variants=args.variants,
                                    scene_variation=args.scene_variation, backend=args.backend,
                                    sampler=sampler_from_arguments(args), environments=args.environments)
        print(success_table(results, seeds))
    if args.chains:
        summaries = evaluate_variant_chains(args.checkpoint, args.chains, args.chain_max_steps, args.execute_steps,
                                            args.static_size, args.gripper_size, variants=args.variants,
                                            backend=args.backend, sampler=sampler_from_arguments(args),
                                            environments=args.environments)
        print(chain_table(summaries))
    return 0


def add_scene_arguments(parser: argparse.ArgumentParser) -> None:
    """Tasks, image sizes, scene variation and simulator, shared by every learning-demo command."""
    parser.add_argument("--tasks", nargs="+", default=list(DEFAULT_TASKS),
                        help="task names, or 'all' (every task the scripted expert performs)")
    parser.add_argument("--static-size", type=int, default=DEMO_IMAGE_SIZES["static"], help="static camera image size (px)")
    parser.add_argument("--gripper-size", type=int, default=DEMO_IMAGE_SIZES["gripper"], help="gripper camera image size (px)")
    parser.add_argument("--scene-variation", choices=SCENE_VARIATIONS, default="task",
                        help="'task': fixed scene but the task's joint and the arm; 'full': random scenes; "
                        "'calvin': CALVIN's scene-D reset states (demos follow CALVIN-style chains)")
    parser.add_argument("--backend", choices=BACKENDS, default="embedded",
                        help="the embedded play-table, or CALVIN's own simulator (scene D; CALVIN's oracle judges)")


def add_evaluation_arguments(parser: argparse.ArgumentParser) -> None:
    """Held-out seeds and episode length of an evaluation."""
    parser.add_argument("--eval-seeds", type=int, default=EVAL_EPISODES_PER_TASK, help="held-out start states per task")
    parser.add_argument("--max-steps", type=int, default=EPISODE_MAX_STEPS, help="30 Hz steps per episode")
    parser.add_argument("--execute-steps", type=int, default=EXECUTION_HORIZON,
                        help="waypoints executed per System 1 call (default: the whole trajectory to the next keypose)")
    parser.add_argument("--environments", type=int, default=1,
                        help="play-tables stepped side by side in process, System 1 called once for all of them "
                        "(same results as one; more steps per second)")
    add_sampler_arguments(parser)


def add_sampler_arguments(parser: argparse.ArgumentParser) -> None:
    """How System 1 samples (:class:`~openhelix_core.models.system1.SamplerConfig`)."""
    parser.add_argument("--sampler", choices=("model", *sorted({m for ms in SAMPLERS.values() for m in ms})),
                        default="model", help="System 1's sampler: the model's own (DDPM or Euler), or DDIM "
                        "(deterministic, fewer steps) for DDPM-trained weights")
    parser.add_argument("--sampling-steps", type=int, default=0,
                        help="denoising steps of System 1 (0: the model's diffusion_timesteps)")
    parser.add_argument("--reference-sampling", action="store_true",
                        help="run System 1 module by module as the original code does, instead of the fast path "
                        "(same mathematics, several times slower)")


def sampler_command_line(args) -> list:
    """:func:`add_sampler_arguments`' options as arguments for another command (``eval-calvin``)."""
    return (["--sampler", args.sampler, "--sampling-steps", str(args.sampling_steps)]
            + (["--reference-sampling"] if args.reference_sampling else []))


def sampler_from_arguments(args) -> SamplerConfig:
    """The :class:`SamplerConfig` of :func:`add_sampler_arguments`' options."""
    return SamplerConfig.from_options(args.sampler, args.sampling_steps, fast=not args.reference_sampling)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m openhelix_sim.experiments", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="write expert demos as a CALVIN split")
    g.add_argument("--out", required=True, help="split folder to write (e.g. demos/training)")
    g.add_argument("--episodes", type=int, default=16, help="demos per task")
    g.add_argument("--chains", type=int, default=DEFAULT_DEMO_CHAINS,
                   help="--scene-variation calvin: CALVIN-style sequences the expert performs")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--workers", type=int, default=2)
    g.add_argument("--paraphrases", action="store_true", help="cycle through CALVIN's training phrasings")
    add_scene_arguments(g)
    g.set_defaults(func=_cmd_generate)

    e = sub.add_parser("evaluate", help="evaluate a checkpoint (trained / goal zeroed / untrained)")
    e.add_argument("--checkpoint", required=True, help="a trainer checkpoint directory (e.g. runs/x/stage2/final)")
    e.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    e.add_argument("--chains", type=int, default=0,
                   help="also run CALVIN's protocol on its first N evaluation sequences (chains of five)")
    e.add_argument("--chain-max-steps", type=int, default=STEPS_PER_SUBTASK, help="steps per subtask of a chain")
    add_scene_arguments(e)
    add_evaluation_arguments(e)
    e.set_defaults(func=_cmd_evaluate)

    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    result = args.func(args)
    return result if isinstance(result, int) else 0

