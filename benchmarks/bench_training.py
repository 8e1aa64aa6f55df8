#!/usr/bin/env python3
"""Wall time of one OpenHelix training step (openhelix_core.training) on synthetic CALVIN data.

Writes a small synthetic CALVIN split (random images, a moving arm) to a temporary folder,
pre-processes it into the sample cache, then times ``Trainer.train_step`` for stage 1
(``<ACT>`` + projection + aux head) and stage 2 (+ System 1) with the tiny System 2 and the
System 1 settings of the CPU demo (``openhelix_sim.experiments.tiny_policy.tiny_policy_overrides``).
Prints mean / p50 / p95 in ms and steps/s per stage.

    python benchmarks/bench_training.py [--batch-size 24] [--steps 10] [--warmup 2] [--threads 2]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from openhelix_core.data import CalvinEpisodeWriter
from openhelix_core.training import TrainingConfig, collate
from openhelix_core.training.trainer import Trainer
from openhelix_sim.experiments.tiny_policy import TINY_SYSTEM2_OVERRIDES, tiny_policy_overrides

S1_OVERRIDES = tiny_policy_overrides()
S2_OVERRIDES = dict(TINY_SYSTEM2_OVERRIDES)


def write_split(directory: Path, episodes: int = 6, frames: int = 40, size: int = 64, gsize: int = 48) -> Path:
    rng = np.random.default_rng(0)
    sentences = ("pull the handle to open the drawer", "press the button to turn on the led light")
    writer = CalvinEpisodeWriter(directory)
    for e in range(episodes):
        start = writer.start_episode()
        for k in range(frames):
            pos = np.array([0.01 * e, -0.2 + 0.004 * k, 0.55 - 0.002 * k])
            robot_obs = np.zeros(15)
            robot_obs[:3], robot_obs[3:6], robot_obs[14] = pos, (3.1, 0.0, 1.5), -1.0
            obs = {"robot_obs": robot_obs, "scene_obs": np.zeros(24),
                   "rgb_static": rng.integers(0, 256, (size, size, 3), dtype=np.uint8),
                   "rgb_gripper": rng.integers(0, 256, (gsize, gsize, 3), dtype=np.uint8),
                   "depth_static": rng.uniform(3.5, 4.5, (size, size)).astype(np.float32),
                   "depth_gripper": rng.uniform(0.1, 0.5, (gsize, gsize)).astype(np.float32)}
            writer.add_frame(obs, np.r_[pos, 3.1, 0.0, 1.5, -1.0])
        writer.annotate(start, writer.last_index, "task", sentences[e % 2])
        writer.end_episode()
    writer.close()
    return directory


def bench(stage: int, split: Path, out: Path, batch_size: int, steps: int, warmup: int) -> np.ndarray:
    cfg = TrainingConfig(train_data=str(split), output_dir=str(out / f"stage{stage}"), stage=stage,
                         batch_size=batch_size, cache_dir=str(out / "cache"), system1_overrides=S1_OVERRIDES,
                         system2_overrides=S2_OVERRIDES, standardize_goals=stage == 2, progress=False, device="cpu")
    trainer = Trainer(cfg)
    order = trainer.order.epoch(0)
    times = []
    for i in range(warmup + steps):
        batch = collate([trainer.dataset[j] for j in order[i % len(order)]])
        start = time.perf_counter()
        trainer.train_step(batch)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return np.array(times) * 1000.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch-size", type=int, default=24)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        split = write_split(out / "training")
        start = time.perf_counter()
        Trainer(TrainingConfig(train_data=str(split), output_dir=str(out / "warm"), cache_dir=str(out / "cache"),
                               system1_overrides=S1_OVERRIDES, system2_overrides=S2_OVERRIDES, progress=False))
        print(f"dataset pre-processing + model build: {time.perf_counter() - start:.1f} s")
        print(f"batch {args.batch_size}, {args.threads} threads, {args.steps} timed steps after {args.warmup} warm-up")
        for stage in (1, 2):
            t = bench(stage, split, out, args.batch_size, args.steps, args.warmup)
            print(f"stage {stage}: mean {t.mean():7.1f} ms  p50 {np.percentile(t, 50):7.1f} ms  "
                  f"p95 {np.percentile(t, 95):7.1f} ms  ({1000.0 / t.mean():.2f} steps/s)")


if __name__ == "__main__":
    main()
