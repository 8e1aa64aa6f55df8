#!/usr/bin/env python3
"""Latency of one System 2 call (processor + forward) under torch.inference_mode.

Default: the tiny random-weight configuration on CPU, one 200x200 RGB image (the size of
CALVIN's static camera) and one instruction per call. ``--llava-path`` measures the
LLaVA-1.5-7B preset from a local checkpoint instead (no download ever happens).

Prints mean / p50 / p95 in milliseconds for the processor alone, the forward alone and
the whole call. Only the straightforward path exists (no prefix caching).

    python benchmarks/bench_system2.py --iters 50
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from openhelix_core.models.system2 import build_tiny_system2, load_system2


def _summary(samples_ms: list[float]) -> str:
    ordered = sorted(samples_ms)

    def pct(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]

    return f"mean {statistics.fmean(ordered):8.2f}  p50 {pct(50):8.2f}  p95 {pct(95):8.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iters", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: leave default)")
    parser.add_argument("--image-size", type=int, default=200, help="side of the input camera image")
    parser.add_argument("--llava-path", default=None, help="local LLaVA-1.5-7B directory (llava_7b preset)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    if args.llava_path is None:
        planner, processor = build_tiny_system2(seed=0)
        planner = planner.to(args.device)
        label = "tiny"
    else:
        planner, processor = load_system2(None, preset="llava_7b", llava_path=args.llava_path, device=args.device)
        label = "llava_7b"
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (args.image_size, args.image_size, 3), dtype=np.uint8) for _ in range(args.batch)]
    instructions = ["push the sliding door to the right side"] * args.batch
    sync = torch.cuda.synchronize if torch.device(args.device).type == "cuda" else (lambda: None)

    proc_ms, fwd_ms, total_ms = [], [], []
    with torch.inference_mode():
        for step in range(args.warmup + args.iters):
            t0 = time.perf_counter()
            batch = processor(images, instructions)
            batch = {k: v.to(args.device) for k, v in batch.items()}
            sync()
            t1 = time.perf_counter()
            output = planner(**batch)
            sync()
            t2 = time.perf_counter()
            if step >= args.warmup:
                proc_ms.append((t1 - t0) * 1e3)
                fwd_ms.append((t2 - t1) * 1e3)
                total_ms.append((t2 - t0) * 1e3)
    assert output.goal.shape == (args.batch, planner.config.goal_dim)

    print(
        f"System 2 [{label}] device={args.device} batch={args.batch} threads={torch.get_num_threads()} "
        f"seq_len={batch['input_ids'].shape[1]} image_tokens={planner.num_image_tokens} "
        f"hidden={planner.hidden_size} iters={args.iters} (ms)"
    )
    print(f"  processor          {_summary(proc_ms)}")
    print(f"  forward            {_summary(fwd_ms)}")
    print(f"  processor+forward  {_summary(total_ms)}")


if __name__ == "__main__":
    main()
