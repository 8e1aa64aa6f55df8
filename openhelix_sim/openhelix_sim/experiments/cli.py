"""The learning demo's commands: expert demos, their in-process evaluation, and the whole pipeline.

* ``generate``: expert demos as a CALVIN split (:mod:`.demos`);
* ``evaluate``: the in-process evaluation (:mod:`.in_process`) on held-out seeds of a trained
  checkpoint and its ablations (:mod:`.variants`: "goal zeroed", System 2 ablated; "goal
  averaged", the training data's mean goal; "untrained", fresh weights);
* ``pipeline``: generate -> train stage 1 -> train stage 2 -> evaluate every variant on the same
  held-out seeds, in process and then through the ROS nodes (:mod:`.pipeline`).
"""
from __future__ import annotations

import argparse
from typing import Optional, Sequence

from ..task_set import DEFAULT_TASKS, EVAL_SEED_OFFSET, SCENE_VARIATIONS
from .demos import generate_demos
from .in_process import evaluate_variants
from .pipeline import run_pipeline
from .report import success_table
from .variants import VARIANTS


def _cmd_generate(args) -> int:
    info = generate_demos(args.out, args.tasks, args.episodes, seed=args.seed, static_size=args.static_size,
                          gripper_size=args.gripper_size, workers=args.workers, paraphrases=args.paraphrases,
                          scene_variation=args.scene_variation)
    print(f"kept {len(info['kept'])} demos ({info['frames']} frames), failed {len(info['failed'])}: "
          f"{info['failed']} in {info['seconds']:.0f} s -> {args.out}")
    return 0


def _cmd_evaluate(args) -> int:
    seeds = [EVAL_SEED_OFFSET + k for k in range(args.eval_seeds)]
    results = evaluate_variants(args.checkpoint, args.tasks, seeds, args.max_steps, args.execute_steps,
                                args.static_size, args.gripper_size, variants=args.variants,
                                scene_variation=args.scene_variation)
    print(success_table(results, seeds))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m openhelix_sim.experiments", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p):
        p.add_argument("--tasks", nargs="+", default=list(DEFAULT_TASKS))
        p.add_argument("--static-size", type=int, default=64, help="static camera image size (px)")
        p.add_argument("--gripper-size", type=int, default=48, help="gripper camera image size (px)")
        p.add_argument("--scene-variation", choices=SCENE_VARIATIONS, default="task",
                       help="'task': fixed scene but the task's joint and the arm; 'full': random scenes")

    def evaluation(p):
        p.add_argument("--eval-seeds", type=int, default=5, help="held-out start states per task")
        p.add_argument("--max-steps", type=int, default=240, help="30 Hz steps per episode")
        p.add_argument("--execute-steps", type=int, default=19,
                       help="waypoints executed per System 1 call (19: the whole trajectory to the next keypose)")

    g = sub.add_parser("generate", help="write expert demos as a CALVIN split")
    g.add_argument("--out", required=True, help="split folder to write (e.g. demos/training)")
    g.add_argument("--episodes", type=int, default=16, help="demos per task")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--workers", type=int, default=2)
    g.add_argument("--paraphrases", action="store_true", help="cycle through CALVIN's training phrasings")
    common(g)
    g.set_defaults(func=_cmd_generate)

    e = sub.add_parser("evaluate", help="evaluate a checkpoint (trained / goal zeroed / untrained)")
    e.add_argument("--checkpoint", required=True, help="a trainer checkpoint directory (e.g. runs/x/stage2/final)")
    e.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    common(e)
    evaluation(e)
    e.set_defaults(func=_cmd_evaluate)

    pl = sub.add_parser("pipeline", help="demos -> stage 1 -> stage 2 -> evaluation table")
    pl.add_argument("--out", default="runs/play_table_demo")
    pl.add_argument("--episodes", type=int, default=16, help="demos per task")
    pl.add_argument("--workers", type=int, default=2)
    pl.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    pl.add_argument("--batch-size", type=int, default=24)
    pl.add_argument("--stage1-steps", type=int, default=150)
    pl.add_argument("--stage2-steps", type=int, default=8000)
    pl.add_argument("--stage1-system2-lr", type=float, default=1e-3,
                    help="stage 1 lr of <ACT>/projection/aux (tiny LLaVA: higher than OpenHelix's 5e-5)")
    pl.add_argument("--system1-lr", type=float, default=3e-4)
    pl.add_argument("--system2-lr", type=float, default=5e-4)
    pl.add_argument("--frame-sampling", default="all", choices=("all", "keypose"))
    pl.add_argument("--keypose-neighbors", type=int, default=0)
    pl.add_argument("--still-motion", type=float, default=0.01,
                    help="frames where the arm holds still (moves < this, m) target the motion after the hold "
                         "(0: every frame targets its next keypose, as 3DDA)")
    pl.add_argument("--position-frame", choices=("relative", "absolute"), default="absolute",
                    help="System 1 positions absolute (the CPU demo) or relative to the current gripper (CALVIN)")
    pl.add_argument("--resume", action="store_true", help="resume interrupted training stages")
    pl.add_argument("--execution", choices=("chunks", "servo"), default="chunks",
                    help="ROS evaluation: the simulator executes chunks, or follows the controller's command stream")
    pl.add_argument("--quiet", action="store_true")
    pl.add_argument("--ros-eval", action=argparse.BooleanOptionalAction, default=True,
                    help="also evaluate every variant through the ROS nodes (needs `source scripts/env.sh`)")
    common(pl)
    evaluation(pl)
    pl.set_defaults(func=run_pipeline)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    result = args.func(args)
    return result if isinstance(result, int) else 0

