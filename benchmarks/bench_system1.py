"""Latency of System 1 (3D Diffuser Actor): the reference path against the fast paths, in one run.

For one model -- the full OpenHelix CALVIN config with random weights (default), the tiny
config, or a trained checkpoint (``--checkpoint``) -- and the same inputs, prints:

- each sampler's p50 / p90 milliseconds per ``predict_trajectory`` call, calls alternating
  between samplers so that machine load hits all alike, and the ratio to the reference p50;
- each sampler's waypoint deviation from the reference on the same inputs (mean and max
  position distance in mm, mean and max rotation angle in degrees, mean openness
  difference), next to the reference's own spread between two noise seeds (DDPM is
  stochastic: a fast path cannot be expected to come closer than that);
- ``encode_inputs`` reference against fast (BatchNorm folded, single-goal shortcut);
- throughput at larger batches (``--batch-sizes``): trajectories per second;
- farthest point sampling, the textbook loop against the precomputed one (same indices);
- optionally ONNX Runtime (``--onnx``): the model exported to a temporary directory
  (:mod:`openhelix_core.models.system1.export_system1`) and each fast sampler run by
  ``OnnxSystem1`` ("onnx ddim-3" rows) in the same alternation, with its largest difference
  from the torch fast path on the same inputs and noise;
- optionally the original code's timing (``--original-factory module:function``): a callable
  the caller provides, given ``(config, state_dict)``, returning ``run(batch) -> anything``
  on this project's batch dict (e.g. a wrapper building nickgkan/3d_diffuser_actor's
  ``DiffuserActor`` with these weights); it is timed in the same alternation.

Samplers are written ``METHOD-STEPS[-ref]`` (``ddpm-25``, ``ddim-3``; ``-ref`` runs them
module by module). The reference is ``ddpm-<diffusion_timesteps>-ref`` (3DDA's path) for DDPM
weights and ``euler-<diffusion_timesteps>-ref`` for flow-matching ones. Deviations of
random weights say little; pass ``--checkpoint`` (e.g. ``sim_bridge/checkpoints/play_table_demo``)
for trained ones. Never a test assertion: figures only.

Usage::

    python benchmarks/bench_system1.py --threads 2
    python benchmarks/bench_system1.py --checkpoint sim_bridge/checkpoints/play_table_demo/system1 \\
        --samplers ddpm-10 ddim-10 ddim-5 ddim-3 ddim-2
    python benchmarks/bench_system1.py --device cuda --iters 50      # GPU figures
    python benchmarks/bench_system1.py --samplers ddim-3 --onnx      # ONNX Runtime beside torch
"""
from __future__ import annotations

import argparse
import importlib
import tempfile
import time

import numpy as np
import torch

from openhelix_core.models.system1 import (
    CURRENT_GRIPPER,
    GOAL,
    PCD,
    RGB,
    SYSTEM1_PRESETS,
    DiffuserActor,
    SamplerConfig,
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


def percentiles(times: list[float]) -> tuple[float, float]:
    return float(np.percentile(times, 50)), float(np.percentile(times, 90))


def random_batch(config: System1Config, device: torch.device, batch_size: int = 1, seed: int = 0) -> dict:
    """Inputs of the model's shapes: a point cloud around the gripper, random image and goal."""
    gen = torch.Generator().manual_seed(seed)
    s, ncam = config.image_size, len(config.cameras)
    current = torch.tensor([0.05, -0.1, 0.55, 0.0, 0.0, 0.0, 1.0, 1.0])
    batch = {
        RGB: torch.rand(batch_size, ncam, 3, s, s, generator=gen),
        PCD: current[:3].view(1, 1, 3, 1, 1) + 0.3 * torch.randn(batch_size, ncam, 3, s, s, generator=gen),
        GOAL: torch.randn(batch_size, 1, config.goal_dim, generator=gen),
        CURRENT_GRIPPER: current.expand(batch_size, config.nhist, 8).clone(),
    }
    return {k: v.to(device) for k, v in batch.items()}


def parse_sampler(text: str) -> SamplerConfig:
    """``ddim-5`` / ``ddpm-25-ref`` -> :class:`SamplerConfig`."""
    parts = text.split("-")
    if len(parts) not in (2, 3) or not parts[1].isdigit() or (len(parts) == 3 and parts[2] != "ref"):
        raise argparse.ArgumentTypeError(f"sampler {text!r} is not METHOD-STEPS[-ref], e.g. ddim-5")
    return SamplerConfig(method=parts[0], steps=int(parts[1]), fast=len(parts) == 2)


def label(sampler: SamplerConfig) -> str:
    return f"{sampler.method}-{sampler.steps}" + ("" if sampler.fast else "-ref")


def deviation(out: torch.Tensor, reference: torch.Tensor) -> dict:
    """Waypoint differences of two ``(B, T, 8)`` trajectories."""
    out, reference = out.double(), reference.double()
    position = (out[..., :3] - reference[..., :3]).norm(dim=-1) * 1e3
    quat, quat_ref = out[..., 3:7], reference[..., 3:7]
    quat = torch.where((quat * quat_ref).sum(-1, keepdim=True) < 0, -quat, quat)
    # atan2 of the half-chord and half-sum: exact for small angles, where acos of a dot is not
    angle = torch.rad2deg(4 * torch.atan2((quat - quat_ref).norm(dim=-1), (quat + quat_ref).norm(dim=-1)))
    return {"pos_mean_mm": float(position.mean()), "pos_max_mm": float(position.max()),
            "rot_mean_deg": float(angle.mean()), "rot_max_deg": float(angle.max()),
            "open_mean": float((out[..., 7] - reference[..., 7]).abs().mean())}


def load_model(args, device: torch.device) -> DiffuserActor:
    if args.checkpoint:
        return DiffuserActor.from_pretrained(args.checkpoint, device=device)
    torch.manual_seed(0)
    model = DiffuserActor(SYSTEM1_PRESETS[args.config]()).to(device).eval()
    # AdaLN starts at zero, which would make random weights ignore the timestep entirely
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "adaln" in name:
                parameter.normal_(0.0, 0.02)
    return model


def original_runner(spec: str, model: DiffuserActor):
    module_name, _, function = spec.partition(":")
    factory = getattr(importlib.import_module(module_name), function)
    return factory(model.config, {k: v.detach().clone() for k, v in model.state_dict().items()})


def bench_samplers(args, model: DiffuserActor, device: torch.device) -> None:
    config = model.config
    reference = SamplerConfig(steps=config.diffusion_timesteps).resolved(config)
    reference = SamplerConfig(reference.method, reference.steps, fast=False)
    samplers = [reference] + [s for s in args.samplers if s != reference]
    for sampler in samplers:
        sampler.resolved(config)  # refuse what does not suit the model before timing anything
    batches = [random_batch(config, device, seed=k) for k in range(args.inputs)]

    def call(sampler, batch, seed=0, predictor=model):
        return predictor.predict_trajectory(batch, generator=torch.Generator(device=device).manual_seed(seed),
                                            sampler=sampler)

    runners = {label(s): (lambda s=s: call(s, batches[0])) for s in samplers}
    onnx_samplers = {}
    if args.onnx:
        onnx = onnx_runner(model, device)
        onnx_samplers = {f"onnx {label(s)}": s for s in samplers if s.fast}
        for name, s in onnx_samplers.items():
            runners[name] = lambda s=s: call(s, batches[0], predictor=onnx)
    if args.original_factory:
        original = original_runner(args.original_factory, model)
        runners["original code"] = lambda: original(batches[0])
    for run in runners.values():  # warm-up: allocator, kernel choice, folded backbone
        run()
        run()
    _sync(device)
    times = {name: [] for name in runners}
    for _ in range(args.iters):
        for name, run in runners.items():
            start = time.perf_counter()
            run()
            _sync(device)
            times[name].append((time.perf_counter() - start) * 1e3)

    outputs = {label(s): [call(s, b, seed=1) for b in batches] for s in samplers}
    for name, s in onnx_samplers.items():
        outputs[name] = [call(s, b, seed=1, predictor=onnx) for b in batches]
    spread = [deviation(call(reference, b, seed=2), ref) for b, ref in zip(batches, outputs[label(reference)])]
    ref_p50 = percentiles(times[label(reference)])[0]
    print(f"\nB=1, {args.iters} calls each, alternating; deviation from {label(reference)} on {args.inputs} inputs "
          f"(same starting noise)")
    print(f"{'sampler':<16s} {'p50 ms':>9s} {'p90 ms':>9s} {'speed-up':>9s}   {'pos mean/max mm':>17s} "
          f"{'rot mean/max deg':>17s} {'open':>6s}")
    for name in runners:
        p50, p90 = percentiles(times[name])
        row = f"{name:<16s} {p50:9.1f} {p90:9.1f} {ref_p50 / p50:8.2f}x"
        if name in outputs:
            devs = [deviation(o, r) for o, r in zip(outputs[name], outputs[label(reference)])]
            row += _deviation_columns(devs)
        print(row)
    print(f"{'(ref, 2nd seed)':<16s} {'':>9s} {'':>9s} {'':>9s}" + _deviation_columns(spread))
    for name, s in onnx_samplers.items():
        gap = max(float((o - t).abs().max()) for o, t in zip(outputs[name], outputs[label(s)]))
        print(f"{name}: largest difference from torch {label(s)} {gap:.2e} (same inputs and noise)")


def onnx_runner(model: DiffuserActor, device: torch.device):
    """``model`` exported to a temporary directory and loaded in ONNX Runtime (threads: torch's)."""
    from openhelix_core.models.system1.export_system1 import OnnxSystem1, export_system1

    if device.type != "cpu":
        raise SystemExit("--onnx runs the model's sampling loop on the CPU (ONNX Runtime picks its own "
                         "providers); use --device cpu")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as directory:  # the sessions hold the graphs once loaded
        export_system1(model, directory, random_batch(model.config, device, batch_size=2))
        runner = OnnxSystem1(model, directory)
    print(f"exported in {time.perf_counter() - start:.0f} s; ONNX Runtime providers {runner.providers}")
    return runner


def _deviation_columns(devs: list[dict]) -> str:
    mean = {k: float(np.mean([d[k] for d in devs])) for k in devs[0]}
    peak = {k: float(np.max([d[k] for d in devs])) for k in devs[0]}
    return (f"   {mean['pos_mean_mm']:8.2f}/{peak['pos_max_mm']:8.2f} {mean['rot_mean_deg']:8.2f}/"
            f"{peak['rot_max_deg']:8.2f} {mean['open_mean']:6.3f}")


def bench_encoder(model: DiffuserActor, iters: int, device: torch.device) -> None:
    batch = random_batch(model.config, device)
    with torch.inference_mode():
        for fast in (False, True):
            p50, p90 = percentiles(timeit(lambda: model.encode_inputs(batch, fast=fast), iters, 2, device))
            print(f"encode_inputs {'fast' if fast else 'reference':<10s} p50 {p50:8.1f} ms  p90 {p90:8.1f} ms")


def bench_throughput(model: DiffuserActor, samplers: list[SamplerConfig], batch_sizes: list[int], iters: int,
                     device: torch.device) -> None:
    print("\nthroughput (trajectories per second; one call serves B environments)")
    for sampler in samplers:
        cells = []
        for size in batch_sizes:
            batch = random_batch(model.config, device, batch_size=size)
            gen = torch.Generator(device=device).manual_seed(0)
            p50, _ = percentiles(timeit(lambda: model.predict_trajectory(batch, generator=gen, sampler=sampler),
                                        iters, 1, device))
            cells.append(f"B={size}: {p50:7.1f} ms, {1e3 * size / p50:6.1f}/s")
        print(f"{label(sampler):<12s} " + "   ".join(cells))


def bench_fps(config: System1Config, iters: int, device: torch.device) -> None:
    feats = torch.randn(1, config.num_scene_tokens, config.embedding_dim,
                        generator=torch.Generator().manual_seed(0)).to(device)
    k = config.num_sampled_tokens
    same = torch.equal(farthest_point_sample_reference(feats, k), farthest_point_sample(feats, k))
    label_ = f"FPS {config.num_scene_tokens}x{config.embedding_dim} -> {k}"
    for name, fn in (("textbook loop", farthest_point_sample_reference), ("precomputed", farthest_point_sample)):
        p50, p90 = percentiles(timeit(lambda: fn(feats, k), iters, 2, device))
        print(f"{label_} {name:<14s} p50 {p50:8.2f} ms  p90 {p90:8.2f} ms")
    print(f"{label_}: both select {'identical' if same else 'DIFFERENT'} indices")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--config", choices=sorted(SYSTEM1_PRESETS), default="openhelix_calvin",
                        help="architecture with random weights (ignored with --checkpoint)")
    parser.add_argument("--checkpoint", default="", help="a System 1 checkpoint directory (trained weights)")
    parser.add_argument("--samplers", nargs="+", type=parse_sampler,
                        default=[parse_sampler(s) for s in ("ddpm-25", "ddim-10", "ddim-5", "ddim-3")],
                        help="fast paths to compare with the reference (METHOD-STEPS[-ref])")
    parser.add_argument("--iters", type=int, default=10, help="timed calls per sampler")
    parser.add_argument("--inputs", type=int, default=4, help="inputs the deviations are averaged over")
    parser.add_argument("--batch-sizes", nargs="*", type=int, default=[1, 4, 8])
    parser.add_argument("--original-factory", default="", help="module:function building the original code's "
                        "model (see above)")
    parser.add_argument("--onnx", action="store_true", help="also time each fast sampler in ONNX Runtime")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model = load_model(args, device)
    config = model.config
    args.samplers = [s for s in args.samplers if _suits(s, config)]
    print(f"torch {torch.__version__}, device {device}"
          + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")
          + f", threads {torch.get_num_threads()}")
    print(f"model: {args.checkpoint or args.config + ' (random weights)'}; {count_parameters(model):,} parameters, "
          f"{config.num_scene_tokens} scene tokens -> {config.num_sampled_tokens} after FPS, {config.denoising} "
          f"({config.prediction_type}), {config.diffusion_timesteps} training steps, T={config.trajectory_length}")
    bench_samplers(args, model, device)
    print()
    bench_encoder(model, args.iters, device)
    if args.batch_sizes:
        fastest = [s for s in args.samplers if s.fast][-1:]
        bench_throughput(model, fastest, args.batch_sizes, max(3, args.iters // 2), device)
    print()
    bench_fps(config, args.iters, device)
    if device.type == "cuda":
        print(f"peak GPU memory {torch.cuda.max_memory_allocated(device) / 2**20:.0f} MiB")


def _suits(sampler: SamplerConfig, config: System1Config) -> bool:
    try:
        sampler.resolved(config)
        return True
    except ValueError as error:
        print(f"skipping {label(sampler)}: {error}")
        return False


if __name__ == "__main__":
    main()
