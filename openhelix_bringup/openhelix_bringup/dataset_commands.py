"""``openhelix dataset-export`` and ``openhelix dataset-import``: CALVIN-layout splits to and from
LeRobotDataset v3.0 (:mod:`openhelix_core.data.lerobot_format`).

    openhelix dataset-export SPLIT --out DIR [--fps 30] [--robot-type franka_panda] [--repo-id USER/NAME]
    openhelix dataset-import DIR --out SPLIT [--camera NAME=FEATURE ...] [--state-key FEATURE]
                             [--action-key FEATURE] [--fps-check]

Camera names are ``static``, ``gripper``, ``static_depth`` and ``gripper_depth``; unnamed ones, the
state and the action default to the features ``dataset-export`` writes. A refusal prints one line
(``openhelix: <reason>``) and exits with 2.
"""
from __future__ import annotations

import argparse

from openhelix_bringup.bag_commands import _guarded, parse_camera_mapping
from openhelix_core.data.calvin_format import CALVIN_CONTROL_RATE_HZ
from openhelix_core.data.lerobot_format import CAMERA_NAMES, export_lerobot, import_lerobot


def run_dataset_export(options: argparse.Namespace) -> int:
    summary = export_lerobot(options.split, options.out, fps=options.fps, robot_type=options.robot_type,
                             repo_id=options.repo_id or None)
    print(f"openhelix dataset-export: {summary.episodes} episodes, {summary.frames} frames, {summary.tasks} tasks "
          f"-> {summary.out_dir} (LeRobotDataset v3.0, {summary.data_files} data file(s))")
    for calvin_key, feature in summary.features.items():
        print(f"  {calvin_key:<14} -> {feature}")
    if summary.unannotated_frames:
        print(f"  {summary.unannotated_frames} frames no annotation covers have the empty task")
    if summary.ignored_keys:
        print(f"  not exported (not CALVIN frame keys): {', '.join(summary.ignored_keys)}")
    print(f"  camera calibration: {'meta/camera_info.json' if summary.camera_info else 'none in the split'}")
    return 0


def run_dataset_import(options: argparse.Namespace) -> int:
    summary = import_lerobot(options.dataset, options.out, cameras=parse_camera_mapping(options.camera, "NAME=FEATURE"),
                             state_key=options.state_key, action_key=options.action_key, fps_check=options.fps_check)
    print(f"openhelix dataset-import: {summary.episodes} episodes, {summary.frames} frames, {summary.annotations} "
          f"annotations -> {summary.out_dir} (CALVIN layout; dataset at {summary.fps:g} fps)")
    for calvin_key, feature in summary.mapping.items():
        print(f"  {calvin_key:<14} <- {feature}")
    if summary.restored_layout:
        print("  frame ids and annotations restored from meta/calvin_layout.json")
    for warning in summary.warnings:
        print(f"  warning: {warning}")
    return 0


def add_dataset_commands(subparsers) -> None:
    export = subparsers.add_parser("dataset-export", help="write a CALVIN-layout split as a LeRobotDataset v3.0")
    export.add_argument("split", help="CALVIN split folder (episode_*.npz, ep_start_end_ids.npy, lang_annotations/)")
    export.add_argument("--out", required=True, help="new or empty directory for the LeRobot dataset")
    export.add_argument("--fps", type=float, default=CALVIN_CONTROL_RATE_HZ,
                        help=f"frame rate to record (a whole number; default {CALVIN_CONTROL_RATE_HZ:g}, CALVIN's)")
    export.add_argument("--robot-type", default="franka_panda", help="info.json robot_type (default franka_panda)")
    export.add_argument("--repo-id", default="", help="Hub id named in the dataset card (default local/<out name>)")
    export.set_defaults(run=_guarded(run_dataset_export))
    imports = subparsers.add_parser("dataset-import", help="write a LeRobotDataset v3.0 as a CALVIN-layout split")
    imports.add_argument("dataset", help="LeRobot dataset directory (meta/, data/)")
    imports.add_argument("--out", required=True, help="split folder to write (new, or without episode_*.npz)")
    imports.add_argument("--camera", action="append", default=[], metavar="NAME=FEATURE",
                         help=f"take camera NAME ({', '.join(CAMERA_NAMES)}) from FEATURE, e.g. "
                         "static=observation.images.front; repeatable")
    imports.add_argument("--state-key", default=None, help="feature read as robot_obs (15 values; default observation.state)")
    imports.add_argument("--action-key", default=None, help="feature read as the absolute action (7 values; default action)")
    imports.add_argument("--fps-check", action="store_true",
                         help=f"refuse a dataset not at {CALVIN_CONTROL_RATE_HZ:g} fps or whose timestamps are not "
                         "frame_index / fps (default: a different fps is a warning)")
    imports.set_defaults(run=_guarded(run_dataset_import))
