#!/usr/bin/env python3
"""Per-step wall time of the PyBullet play table (openhelix_sim.envs.PlayTableEnv).

One step = one 30 Hz control action: IK + 8 physics substeps at 240 Hz + observation
(rendering with the CPU TinyRenderer where enabled). Prints mean / p50 / p95 in ms for
rendering both cameras, the static camera only, and no camera.

    python benchmarks/bench_sim.py [--steps 150] [--warmup 10] [--seed 0]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

try:
    from openhelix_sim.envs import PlayTableEnv
except ImportError:  # running from a checkout without the workspace sourced
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "openhelix_sim"))
    from openhelix_sim.envs import PlayTableEnv

CONFIGS = (
    ("static+gripper", True, True),
    ("static only", True, False),
    ("no rendering", False, False),
)


def bench(render_static: bool, render_gripper: bool, steps: int, warmup: int, seed: int) -> np.ndarray:
    env = PlayTableEnv(seed=seed, render_static=render_static, render_gripper=render_gripper)
    rng = np.random.default_rng(seed)
    try:
        env.reset(seed=seed)
        times = []
        for i in range(warmup + steps):
            # smooth wandering relative motion, gripper toggling every 30 steps
            a = np.clip(np.r_[0.5 * np.sin(0.1 * i + np.arange(3)), 0.2 * rng.uniform(-1, 1, 3),
                              1.0 if (i // 30) % 2 == 0 else -1.0], -1.0, 1.0)
            t0 = time.perf_counter()
            env.step(a, "relative")
            dt = time.perf_counter() - t0
            if i >= warmup:
                times.append(dt)
        return np.array(times) * 1e3
    finally:
        env.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    print(f"PlayTableEnv step wall time over {args.steps} steps (static 200x200, gripper 84x84, TinyRenderer)")
    print(f"{'config':<16} {'mean ms':>9} {'p50 ms':>9} {'p95 ms':>9} {'steps/s':>9}")
    for name, rs, rg in CONFIGS:
        t = bench(rs, rg, args.steps, args.warmup, args.seed)
        print(f"{name:<16} {t.mean():9.2f} {np.percentile(t, 50):9.2f} {np.percentile(t, 95):9.2f} {1e3 / t.mean():9.1f}")


if __name__ == "__main__":
    main()
