"""``openhelix learning-table``: demos -> train stage 1 -> train stage 2 -> every variant evaluated
on the same held-out seeds, in process and then through the ROS nodes (and, with
``--eval-chains N``, on CALVIN's chains of five: its first N evaluation sequences); writes
``results.json`` and ``results.md`` and prints the tables (README: "A policy that learns on this
machine"). With ``--demo-source bags`` the demos are recorded as a robot's bags and converted with
``bag-to-dataset`` first, and ``bag-eval`` scores the variants on a held-out bag (README: "Proof on
this machine: a policy trained only on recorded bags")."""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from openhelix_bringup.ros_evaluation import evaluate_chains_through_ros, evaluate_variants_through_ros, run_openhelix
from openhelix_core.evaluation.sequences import STEPS_PER_SUBTASK
from openhelix_sim.experiments.cli import (
    add_evaluation_arguments,
    add_scene_arguments,
    sampler_command_line,
    sampler_from_arguments,
    selected_tasks,
)
from openhelix_sim.experiments.demos import DEFAULT_DEMO_CHAINS, DEMOS_INFO, generate_chain_demos, generate_demos
from openhelix_sim.experiments.in_process import evaluate_variant_chains, evaluate_variants
from openhelix_sim.experiments.report import chain_table, success_table
from openhelix_sim.experiments.tiny_policy import TINY_SYSTEM2_OVERRIDES, tiny_policy_overrides
from openhelix_sim.experiments.variants import VARIANTS, write_variant_checkpoints
from openhelix_sim.task_set import EVAL_SEED_OFFSET


def add_learning_table_command(commands) -> None:
    """The ``learning-table`` subcommand and its options."""
    pl = commands.add_parser("learning-table", help="demos -> stage 1 -> stage 2 -> evaluation table (CPU demo)",
                             formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    pl.add_argument("--out", default="runs/play_table_demo")
    pl.add_argument("--episodes", type=int, default=16, help="demos per task")
    pl.add_argument("--demo-chains", type=int, default=DEFAULT_DEMO_CHAINS,
                    help="--scene-variation calvin: CALVIN-style sequences the expert performs for the demos")
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
    pl.add_argument("--denoising", choices=("ddpm", "flow_matching"), default="ddpm",
                    help="System 1's training objective: DDPM (3DDA, OpenHelix) or flow matching (velocity target, "
                    "Euler steps at inference, as 3D FlowMatch Actor)")
    pl.add_argument("--position-frame", choices=("relative", "absolute"), default="absolute",
                    help="System 1 positions absolute (the CPU demo) or relative to the current gripper (CALVIN)")
    pl.add_argument("--resume", action="store_true", help="resume interrupted training stages")
    pl.add_argument("--execution", choices=("chunks", "servo"), default="chunks",
                    help="ROS evaluation: the simulator executes chunks, or follows the controller's command stream")
    pl.add_argument("--quiet", action="store_true")
    pl.add_argument("--ros-eval", action=argparse.BooleanOptionalAction, default=True,
                    help="also evaluate every variant through the ROS nodes")
    pl.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS),
                    help="variants evaluated in process on the single-task episodes")
    pl.add_argument("--ros-variants", nargs="+", choices=VARIANTS, default=list(VARIANTS),
                    help="variants evaluated through the ROS nodes on the single-task episodes")
    pl.add_argument("--eval-chains", type=int, default=0,
                    help="also run CALVIN's protocol on its first N evaluation sequences (chains of five)")
    pl.add_argument("--chain-variants", nargs="*", choices=VARIANTS, default=list(VARIANTS),
                    help="--eval-chains: variants evaluated in process")
    pl.add_argument("--ros-chain-variants", nargs="*", choices=VARIANTS, default=list(VARIANTS),
                    help="--eval-chains: variants evaluated through the ROS nodes")
    pl.add_argument("--chain-max-steps", type=int, default=STEPS_PER_SUBTASK, help="steps per subtask of a chain")
    pl.add_argument("--demo-source", choices=("expert", "bags"), default="expert",
                    help="expert: the demos are written directly; bags: the expert's demos are recorded as a "
                         "robot's bags through the demo robot node and the recorder (openhelix record-demos), "
                         "converted with openhelix bag-to-dataset, and the policy is also scored with "
                         "openhelix bag-eval on a held-out recorded bag")
    pl.add_argument("--camera-rate", type=float, default=15.0, help="--demo-source bags: camera rate (Hz)")
    pl.add_argument("--state-rate", type=float, default=100.0, help="--demo-source bags: joint state / pose rate (Hz)")
    pl.add_argument("--bag-eval-variants", nargs="*", choices=VARIANTS, default=["trained", "goal zeroed", "untrained"],
                    help="--demo-source bags: variants scored with bag-eval on the held-out bag")
    add_scene_arguments(pl)
    add_evaluation_arguments(pl)
    pl.set_defaults(run=run_learning_table)


def _record_demos(args, bag: Path, tasks, episodes: int, seed: int) -> None:
    output = run_openhelix(["record-demos", str(bag), "--tasks", *tasks, "--episodes-per-task", str(episodes),
                            "--seed", str(seed), "--storage", "mcap", "--camera-rate", str(args.camera_rate),
                            "--state-rate", str(args.state_rate), "--static-size", str(args.static_size),
                            "--gripper-size", str(args.gripper_size), "--scene-variation", args.scene_variation],
                           f"record-demos {bag}")
    summary = [line for line in output.splitlines() if line.startswith(("demo robot:", "bag:"))]
    print(f"[bags] {bag.name}: " + "; ".join(summary), flush=True)


def demos_from_bags(args, out: Path, tasks) -> tuple[Path, Path, dict]:
    """Records one training bag per task and a held-out bag (one episode per task, evaluation
    seeds), converts the training bags into ``out/demos/training``; returns the split, the
    held-out bag and the conversion summary."""
    from openhelix_ros.bags.to_dataset import ConversionOptions, convert_bags

    bags = out / "bags"
    bags.mkdir(parents=True, exist_ok=True)
    training = []
    for task in tasks:
        bag = bags / f"train_{task}"
        if not bag.exists():
            _record_demos(args, bag, [task], args.episodes, seed=0)
        training.append(bag)
    held_out = bags / "held_out"
    if not held_out.exists():
        _record_demos(args, held_out, tasks, 1, seed=EVAL_SEED_OFFSET)
    demos = out / "demos" / "training"
    report = convert_bags(training, demos, ConversionOptions())
    summary = {"frames": report.frames, "episodes": len(report.episodes), "ticks_without_data": report.ticks_without_data,
               "rates_hz": report.measured_rates_hz, "state": report.state_source, "actions": report.action_source,
               "cameras": report.camera_sources}
    print(f"[bag-to-dataset] {report.frames} frames in {len(report.episodes)} episodes; state {report.state_source}; "
          f"actions {report.action_source}", flush=True)
    return demos, held_out, summary


def bag_eval_variants(checkpoints: dict, bag: Path, out: Path) -> dict:
    """``openhelix bag-eval`` of each variant checkpoint on ``bag``: the overall scores."""
    results = {}
    for variant, checkpoint in checkpoints.items():
        report_dir = out / variant.replace(" ", "_")
        run_openhelix(["bag-eval", str(bag), "--checkpoint", str(checkpoint), "--out", str(report_dir),
                       "--no-progress"], f"bag-eval of {variant!r}")
        overall = json.loads((report_dir / "report.json").read_text())["replay"]["overall"]
        results[variant] = {"chunks": overall["chunks"], "chunks_scored": overall["chunks_scored"],
                            "position_error_m": overall["position_error_m"],
                            "rotation_error_deg": overall["rotation_error_deg"],
                            "gripper_agreement": overall["gripper_agreement"]}
        print(f"[bag-eval] {variant}: position error mean {overall['position_error_m']['mean']:.4f} m over "
              f"{overall['chunks_scored']} chunks", flush=True)
    return results


def bag_eval_table(results: dict) -> str:
    lines = ["| variant | chunks scored | position error mean / p95 (cm) | rotation error mean (deg) | gripper agreement |",
             "|---|---|---|---|---|"]
    for variant, r in results.items():
        gripper = "n/a" if r["gripper_agreement"] is None else f"{100 * r['gripper_agreement']:.0f} %"
        lines.append(f"| {variant} | {r['chunks_scored']}/{r['chunks']} | {100 * r['position_error_m']['mean']:.1f} / "
                     f"{100 * r['position_error_m']['p95']:.1f} | {r['rotation_error_deg']['mean']:.1f} | {gripper} |")
    return "\n".join(lines)


def training_configs(args, demos: Path, out: Path):
    """The two training stages of the learning table: stage 1 (``<ACT>``, projection, auxiliary
    head) and stage 2 (+ System 1) on the demos in ``demos``, writing below ``out``."""
    from openhelix_core.training import TrainingConfig

    # converted bags hold only the recorded tasks, annotated with their instructions
    tasks = None if args.demo_source == "bags" else selected_tasks(args.tasks)
    common = dict(train_data=str(demos), tasks=tasks, cache_dir=str(out / "cache"),
                  frame_sampling=args.frame_sampling, keypose_neighbors=args.keypose_neighbors,
                  still_motion=args.still_motion,
                  system1_preset="tiny", system1_overrides=tiny_policy_overrides(args.position_frame, args.denoising),
                  system2_overrides=dict(TINY_SYSTEM2_OVERRIDES), batch_size=args.batch_size,
                  checkpoint_every=max(args.stage2_steps, args.stage1_steps), log_every=25, seed=0,
                  progress=not args.quiet)
    # The shipped play-table checkpoint was trained with the auxiliary loss in stage 1 too (the
    # default before it became stage 2 only, as OpenHelix): kept so this command reproduces it.
    stage1 = TrainingConfig(stage=1, steps=args.stage1_steps, output_dir=str(out / "stage1"),
                            system2_lr=args.stage1_system2_lr, aux_loss_stages=[1, 2], **common)
    stage2 = TrainingConfig(stage=2, steps=args.stage2_steps, output_dir=str(out / "stage2"),
                            init_from=str(out / "stage1" / "final"), standardize_goals=True, system1_lr=args.system1_lr,
                            system2_lr=args.system2_lr, lr_schedule="cosine", warmup_steps=50, **common)
    return stage1, stage2


def run_learning_table(args) -> int:
    """Every step with ``args`` (see :func:`add_learning_table_command`), the results written to
    ``results.json`` / ``results.md`` under ``--out``; exit code 0 (a failed step raises)."""
    import torch

    from openhelix_core.training import train

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    tasks = selected_tasks(args.tasks)
    timings = {}
    demos = out / "demos" / "training"
    t0 = time.perf_counter()
    if (demos / DEMOS_INFO).is_file():
        existing = json.loads((demos / DEMOS_INFO).read_text())
        for key, asked in (("scene_variation", args.scene_variation), ("backend", args.backend)):
            if existing.get(key, "embedded" if key == "backend" else "full") != asked:
                raise ValueError(f"{demos} holds demos with {key} {existing.get(key)!r}, this run asks for "
                                 f"{asked!r}: choose another --out")
    held_out_bag, conversion = None, None
    if args.demo_source == "bags":
        if args.scene_variation == "calvin" or args.backend != "embedded":
            raise ValueError("--demo-source bags records the embedded play-table's demo robot: use --backend "
                             "embedded and --scene-variation task or full")
        if (demos / "lang_annotations" / "auto_lang_ann.npy").is_file():
            held_out_bag = out / "bags" / "held_out"
        else:
            demos, held_out_bag, conversion = demos_from_bags(args, out, tasks)
    elif not (demos / "lang_annotations" / "auto_lang_ann.npy").is_file():
        if args.scene_variation == "calvin":
            info = generate_chain_demos(demos, args.demo_chains, tasks, static_size=args.static_size,
                                        gripper_size=args.gripper_size, workers=args.workers, backend=args.backend)
        else:
            info = generate_demos(demos, tasks, args.episodes, seed=0, static_size=args.static_size,
                                  gripper_size=args.gripper_size, workers=args.workers,
                                  scene_variation=args.scene_variation, backend=args.backend,
                                sampler=sampler_from_arguments(args), environments=args.environments)
        print(f"[demos] kept {len(info['kept'])}, failed {len(info['failed'])}, {info['frames']} frames, "
              f"{info['seconds']:.0f} s", flush=True)
    timings["demos_s"] = time.perf_counter() - t0
    stage1, stage2 = training_configs(args, demos, out)
    t0 = time.perf_counter()
    train(stage1, resume="auto" if args.resume else None)
    timings["stage1_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    train(stage2, resume="auto" if args.resume else None)
    timings["stage2_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    seeds = [EVAL_SEED_OFFSET + k for k in range(args.eval_seeds)]
    final = out / "stage2" / "final"
    results = evaluate_variants(final, tasks, seeds, args.max_steps, args.execute_steps,
                                args.static_size, args.gripper_size, progress=not args.quiet, variants=args.variants,
                                scene_variation=args.scene_variation, backend=args.backend)
    timings["evaluation_s"] = time.perf_counter() - t0
    report = {"results": results, "seeds": seeds, "timings": timings,
              "args": {k: v for k, v in vars(args).items() if k != "run"}}
    if conversion is not None:
        report["conversion"] = conversion
    simulator = "calvin_env's scene D" if args.backend == "calvin" else "the embedded play-table"
    tables = [f"In process (DualSystemPolicy in {simulator}):\n\n" + success_table(results, seeds)]

    def save() -> None:  # after every evaluation: a long run stopped part-way keeps what it measured
        (out / "results.json").write_text(json.dumps(report, indent=2) + "\n")
        (out / "results.md").write_text("\n\n".join(tables) + "\n\n" + json.dumps(timings, indent=2) + "\n")

    save()
    if args.eval_chains and args.chain_variants:
        t0 = time.perf_counter()
        chains = evaluate_variant_chains(final, args.eval_chains, args.chain_max_steps, args.execute_steps,
                                         args.static_size, args.gripper_size, progress=not args.quiet,
                                         variants=args.chain_variants, backend=args.backend,
                                         sampler=sampler_from_arguments(args), environments=args.environments)
        report["chain_results"] = {variant: summary.to_dict() for variant, summary in chains.items()}
        timings["chain_evaluation_s"] = time.perf_counter() - t0
        tables.append(f"CALVIN's chains in process (first {args.eval_chains} evaluation sequences):\n\n"
                      + chain_table(chains))
        save()
    if args.ros_eval:
        checkpoints = write_variant_checkpoints(final, out / "variants")
        t0 = time.perf_counter()
        report["ros_results"] = evaluate_variants_through_ros(
            {variant: checkpoints[variant] for variant in args.ros_variants if variant in checkpoints},
            tasks, seeds, args.max_steps, args.execute_steps, args.static_size, args.gripper_size,
            out / "ros_evaluation", workers=args.workers, scene_variation=args.scene_variation,
            execution=args.execution, backend=args.backend, sampler_arguments=sampler_command_line(args))
        timings["ros_evaluation_s"] = time.perf_counter() - t0
        tables.append("Through ROS (sim bridge, planner and controller nodes; `openhelix eval-calvin --protocol "
                      "tasks`):\n\n" + success_table(report["ros_results"], seeds))
        save()
        if args.eval_chains and args.ros_chain_variants:
            t0 = time.perf_counter()
            chains = evaluate_chains_through_ros(
                {variant: checkpoints[variant] for variant in args.ros_chain_variants if variant in checkpoints},
                args.eval_chains, args.chain_max_steps, args.execute_steps, args.static_size, args.gripper_size,
                out / "ros_evaluation", workers=args.workers, execution=args.execution, backend=args.backend,
                sampler_arguments=sampler_command_line(args))
            report["ros_chain_results"] = {variant: summary.to_dict() for variant, summary in chains.items()}
            timings["ros_chain_evaluation_s"] = time.perf_counter() - t0
            tables.append(f"CALVIN's chains through ROS (`openhelix eval-calvin`, first {args.eval_chains} "
                          "evaluation sequences):\n\n" + chain_table(chains))
            save()
    if held_out_bag is not None and args.bag_eval_variants:
        checkpoints = write_variant_checkpoints(final, out / "variants", args.bag_eval_variants)
        t0 = time.perf_counter()
        report["bag_eval_results"] = bag_eval_variants(checkpoints, held_out_bag, out / "bag_eval")
        timings["bag_eval_s"] = time.perf_counter() - t0
        tables.append(f"`openhelix bag-eval` on the held-out recorded bag ({held_out_bag.name}; chunks scored "
                      "against the poses the expert reached):\n\n" + bag_eval_table(report["bag_eval_results"]))
        save()
    print("\n\n".join(tables))
    print("timings (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()))
    return 0
