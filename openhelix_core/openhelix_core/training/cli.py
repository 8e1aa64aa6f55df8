"""Command line of OpenHelix training.

Every :class:`TrainingConfig` field is an option (``--batch-size 8``, ``--tasks open_drawer
close_drawer``, ``--system1-overrides '{"embedding_dim": 48}'``); ``--config run.json`` reads a
saved configuration first, options override it. The same command line runs on one process or,
under ``torchrun --nproc_per_node N -m openhelix_core.training ...``, on N processes with
DistributedDataParallel (NCCL on GPUs, gloo on CPU).

Examples::

    python -m openhelix_core.training --train-data demos/training --stage 1 --steps 300 --output-dir runs/s1
    python -m openhelix_core.training --train-data demos/training --stage 2 --init-from runs/s1/final \\
        --steps 3000 --output-dir runs/s2
    python -m openhelix_core.training --config runs/s2/training_config.json --resume auto
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import typing
from typing import Any, Optional, Sequence

from .configuration_training import TrainingConfig


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean, got {text!r}")


def _json_dict(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"expected a JSON object: {error}") from error
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object")
    return value


def _optional(convert):
    def parse(text: str):
        return None if text.strip().lower() in ("none", "null", "") else convert(text)
    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m openhelix_core.training",
                                     description="Train the OpenHelix dual-system policy (stage 1 or 2).",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--config", help="a training_config.json to start from")
    parser.add_argument("--resume", nargs="?", const="auto", default=None,
                        help="resume: 'auto' (latest checkpoint in --output-dir) or a checkpoint directory")
    hints = typing.get_type_hints(TrainingConfig)
    defaults = TrainingConfig()
    for field in dataclasses.fields(TrainingConfig):
        flag = "--" + field.name.replace("_", "-")
        hint = hints[field.name]
        default = getattr(defaults, field.name)
        origin = typing.get_origin(hint)
        args = typing.get_args(hint)
        optional = origin is typing.Union and type(None) in args
        base = next((a for a in args if a is not type(None)), hint) if optional else hint
        kwargs: dict[str, Any] = {"dest": field.name, "default": argparse.SUPPRESS, "help": f"(default: {default})"}
        if base is bool:
            kwargs.update(type=_bool, metavar="BOOL")
        elif base in (int, float, str):
            kwargs.update(type=_optional(base) if optional else base)
        elif base is dict:
            kwargs.update(type=_json_dict, metavar="JSON")
        elif base is tuple:
            kwargs.update(type=float, nargs=2)
        elif base is list or typing.get_origin(base) is list:
            kwargs.update(nargs="*")
        else:  # pragma: no cover - every field has one of the types above
            raise TypeError(f"no command-line type for {field.name}: {hint}")
        parser.add_argument(flag, **kwargs)
    return parser


def config_from_args(args: argparse.Namespace) -> TrainingConfig:
    values: dict[str, Any] = TrainingConfig.load(args.config).to_dict() if args.config else {}
    for field in dataclasses.fields(TrainingConfig):
        if hasattr(args, field.name):
            values[field.name] = getattr(args, field.name)
    if values.get("tasks") == []:
        values["tasks"] = None
    return TrainingConfig.from_dict(values)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args)
    except ValueError as error:
        parser.error(str(error))
    from .trainer import train

    result = train(config, resume=args.resume)
    if result.metrics_csv is not None:
        print(f"done: {result.steps} steps, last loss {result.final_loss:.4f}; models in {result.final_dir}; "
              f"metrics {result.metrics_csv}; curve {result.loss_curve}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
