"""Latency of System 1 (3D Diffuser Actor) on the current machine, random weights.

Prints mean / p50 / p95 milliseconds for:

- ``predict_trajectory`` of the tiny config and (unless ``--skip-full``) of the full
  OpenHelix CALVIN config (C=192, 2 cameras at 160x160, 25 DDPM steps);
- the full config's ``encode_inputs`` (backbone + FPN + encoders + FPS) alone;
- farthest point sampling on the full config's scene features (800 tokens x 192 -> 266),
  the straightforward reference loop against the precomputed-distance version, on the
  same inputs, asserting they pick the same indices.

Usage: ``python benchmarks/bench_system1.py [--threads 1] [--iters 20] [--full-iters 3]
[--skip-full] [--device cpu]``
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from openhelix_core.models.system1 import (
    CURRENT_GRIPPER,
    GOAL,
    PCD,
    RGB,
    DiffuserActor,
    System1Config,
    count_parameters,
)
from openhelix_core.models.system1.fps import farthest_point_sample, farthest_point_sample_reference


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timeit(fn, iters: int, warmup: int, device: torch.device) -> list[float]:
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append((time.perf_counter() - start) * 1e3)
    return times


def report(name: str, times: list[float]) -> None:
    arr = np.asarray(times)
    print(f"{name:<48s} n={len(arr):3d}  mean {arr.mean():9.2f} ms  p50 {np.percentile(arr, 50):9.2f} ms  "
          f"p95 {np.percentile(arr, 95):9.2f} ms")


def random_batch(config: System1Config, device: torch.device, batch_size: int = 1) -> dict:
    gen = torch.Generator().manual_seed(0)
    s, ncam = config.image_size, len(config.cameras)
    current = torch.tensor([0.05, -0.1, 0.55, 0.0, 0.0, 0.0, 1.0, 1.0])
    batch = {
        RGB: torch.rand(batch_size, ncam, 3, s, s, generator=gen),
        PCD: current[:3].view(1, 1, 3, 1, 1) + 0.3 * torch.randn(batch_size, ncam, 3, s, s, generator=gen),
        GOAL: torch.randn(batch_size, 1, config.goal_dim, generator=gen),
        CURRENT_GRIPPER: current.expand(batch_size, config.nhist, 8).clone(),
    }
    return {k: v.to(device) for k, v in batch.items()}


def bench_model(name: str, config: System1Config, iters: int, device: torch.device, encode: bool) -> None:
    torch.manual_seed(0)
    model = DiffuserActor(config).to(device).eval()
    batch = random_batch(config, device)
    print(f"[{name}] parameters {count_parameters(model):,} (trainable {count_parameters(model, True):,}), "
          f"{config.num_scene_tokens} scene tokens -> {config.num_sampled_tokens} after FPS, "
          f"{config.diffusion_timesteps} DDPM steps, T={config.trajectory_length}")
    if encode:
        with torch.no_grad():
            report(f"{name}: encode_inputs", timeit(lambda: model.encode_inputs(batch), iters, 1, device))
    gen = torch.Generator().manual_seed(0)
    report(f"{name}: predict_trajectory (B=1)",
           timeit(lambda: model.predict_trajectory(batch, generator=gen), iters, 1, device))


def bench_fps(config: System1Config, iters: int, device: torch.device) -> None:
    feats = torch.randn(1, config.num_scene_tokens, config.embedding_dim,
                        generator=torch.Generator().manual_seed(0)).to(device)
    k = config.num_sampled_tokens
    ref = farthest_point_sample_reference(feats, k)
    fast = farthest_point_sample(feats, k)
    assert torch.equal(ref, fast), "FPS implementations disagree"
    assert int(ref[0, 0]) == 0
    label = f"FPS {config.num_scene_tokens}x{config.embedding_dim} -> {k}"
    report(f"{label} reference", timeit(lambda: farthest_point_sample_reference(feats, k), iters, 2, device))
    report(f"{label} precomputed", timeit(lambda: farthest_point_sample(feats, k), iters, 2, device))
    print(f"{label}: reference and precomputed selected identical indices")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--iters", type=int, default=20, help="iterations for tiny model and FPS")
    parser.add_argument("--full-iters", type=int, default=3, help="iterations for the full model")
    parser.add_argument("--skip-full", action="store_true", help="skip the full OpenHelix CALVIN config")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}")
    bench_model("tiny", System1Config.tiny(), args.iters, device, encode=False)
    bench_fps(System1Config.openhelix_calvin(), args.iters, device)
    if not args.skip_full:
        bench_model("openhelix_calvin", System1Config.openhelix_calvin(), args.full_iters, device, encode=True)


if __name__ == "__main__":
    main()
