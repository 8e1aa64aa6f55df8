#!/usr/bin/env python3
"""Latency and fidelity of System 2's paths, measured in one run on the same inputs.

Paths (all under ``torch.inference_mode``):

* ``reference``: one forward over the whole prompt (``use_prefix_cache=False``), the path
  faithful to OpenHelix;
* ``prefix-cached``: the prompt tokens before the image come from the cached key/values and
  the language model runs on the rest (``config.prefix_cache``, the default);
* with ``--int8`` (CPU, float32 only): both paths again on a copy of the planner whose
  language-model Linear layers are quantized to int8 (the copy doubles the memory).

For each path it prints mean / p50 / p90 of the planner forward in milliseconds, the speed-up
over the reference, and the goal's deviation from the reference goal (max abs, smallest
cosine over the batch, relative L2). The paths alternate call by call, so load changes on
a shared machine hit them alike; ``--threads 1`` steadies figures on a busy 2-core host.

Presets (random weights everywhere; nothing is downloaded):

* ``tiny`` (default): the test configuration (hidden 32), prompts from the processor for one
  200x200 image (CALVIN's static camera) per row; the processor time is printed too.
* ``mid``: a CPU-sized LLaVA with the real prompt layout: Llama hidden 1024, 4 layers, MLP
  2816, 16 heads; 336 px images with 14 px patches (576 image tokens) through a 2-layer,
  256-wide CLIP tower. Big enough for int8 errors to mean something, small enough for 2 cores.
* ``llava_7b_random``: the LLaVA-1.5-7B architecture (``System2Config.llava_7b``) built on
  the device in ``--dtype`` (default bfloat16). GPU only; prints the device, dtype,
  attention kernel and the peak memory (``torch.cuda.max_memory_allocated``).

``mid`` and ``llava_7b_random`` feed token ids laid out as LLaVA-1.5's tokenizer lays out
the default prompt (``--prefix-tokens`` before the image, counting ``<s>``; 576 image
tokens; ``--suffix-tokens`` after it, counting ``<ACT>``): the in-code tokenizer of random
presets spends one token per byte, which would triple the cached share of the prompt.
Synthetic ids are fine for timing and for comparing paths on the same weights.
``--llava-path`` measures the ``llava_7b`` preset from a local checkpoint with its own
tokenizer instead.

    python benchmarks/bench_system2.py --iters 50                           # tiny, CPU
    nice -n 15 python benchmarks/bench_system2.py --preset mid --int8 --iters 10 --warmup 2
    python benchmarks/bench_system2.py --preset llava_7b_random --device cuda   # GPU figure

``benchmarks/gpu_system2.sh`` runs the GPU figure (LLaVA-7B bf16, ~640 tokens).
"""
from __future__ import annotations

import argparse
import copy
import statistics
import time
from dataclasses import replace
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from openhelix_core.models.system2 import System2Config, System2Planner, build_tiny_system2, load_system2, resolve_attn_implementation
from openhelix_core.models.system2.tiny_tokenizer import SPECIAL_TOKENS

#: id of ``<image>`` in the in-code tokenizer the random presets use.
TINY_IMAGE_ID = SPECIAL_TOKENS.index("<image>")
INSTRUCTION = "push the sliding door to the right side"


def _mid_config(dtype: str) -> System2Config:
    """The ``mid`` preset: see the module docstring."""
    seven_b = System2Config.llava_7b(None).llava_config
    llava_config = {
        **seven_b,
        "image_token_index": TINY_IMAGE_ID,
        "text_config": {**seven_b["text_config"], "hidden_size": 1024, "intermediate_size": 2816,
                        "num_hidden_layers": 4, "num_attention_heads": 16, "num_key_value_heads": 16},
        "vision_config": {**seven_b["vision_config"], "hidden_size": 256, "intermediate_size": 1024,
                          "num_hidden_layers": 2, "num_attention_heads": 4},
    }
    return System2Config(llava_config=llava_config, torch_dtype=dtype, attn_implementation="sdpa", image_size=336)


def _llava_7b_random(device: str, dtype: str, attn: str) -> System2Planner:
    """LLaVA-1.5-7B with random weights, initialised directly on ``device`` (a 7B float32
    copy on the host first would take minutes and 28 GB)."""
    from transformers import LlavaConfig, LlavaForConditionalGeneration

    base = System2Config.llava_7b(None)
    config = replace(base, llava_config={**base.llava_config, "image_token_index": TINY_IMAGE_ID},
                     torch_dtype=dtype, attn_implementation=attn)
    torch_dtype = getattr(torch, dtype)
    with torch.device(device):
        llava = LlavaForConditionalGeneration._from_config(
            LlavaConfig(**config.llava_config),
            attn_implementation=resolve_attn_implementation(attn, device, torch_dtype),
            dtype=torch_dtype,
        )
    return System2Planner(config, llava=llava, device=device)


def _synthetic_batch(planner: System2Planner, batch: int, prefix_tokens: int, suffix_tokens: int) -> dict[str, torch.Tensor]:
    """Prompt ids with LLaVA-1.5's layout (see the module docstring) and random images.
    Every row shares the prefix; the text after the image differs per row."""
    generator = torch.Generator().manual_seed(0)
    words = len(SPECIAL_TOKENS), len(SPECIAL_TOKENS) + 256  # byte tokens: never <image>/<ACT>
    bos = planner.tokenizer.bos_token_id
    prefix = torch.cat([torch.tensor([bos]), torch.randint(*words, (prefix_tokens - 1,), generator=generator)])
    rows = [
        torch.cat([
            prefix,
            torch.full((planner.num_image_tokens,), planner.image_token_id),
            torch.randint(*words, (suffix_tokens - 1,), generator=generator),
            torch.tensor([planner.act_token_id]),
        ])
        for _ in range(batch)
    ]
    size = planner.config.image_size
    return {
        "pixel_values": torch.randn(batch, 3, size, size, generator=generator),
        "input_ids": torch.stack(rows),
        "attention_mask": torch.ones(batch, len(rows[0]), dtype=torch.long),
    }


def _summary(samples_ms: list[float]) -> str:
    ordered = sorted(samples_ms)

    def pct(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]

    return f"mean {statistics.fmean(ordered):9.2f}  p50 {pct(50):9.2f}  p90 {pct(90):9.2f}"


def _deviation(goal: torch.Tensor, reference: torch.Tensor) -> str:
    goal, reference = goal.double(), reference.double()
    max_abs = (goal - reference).abs().max().item()
    cosine = F.cosine_similarity(goal, reference, dim=-1).min().item()
    relative = ((goal - reference).norm() / reference.norm()).item()
    return f"max|dg| {max_abs:.2e}  cos {cosine:.6f}  relL2 {relative:.2e}"


def _measure(paths: dict[str, Callable[[], torch.Tensor]], warmup: int, iters: int, sync: Callable[[], None]):
    """Alternate the paths each iteration; returns per path (latencies in ms, last goal)."""
    times: dict[str, list[float]] = {name: [] for name in paths}
    goals: dict[str, torch.Tensor] = {}
    for step in range(warmup + iters):
        for name, call in paths.items():
            sync()
            start = time.perf_counter()
            goals[name] = call()
            sync()
            if step >= warmup:
                times[name].append((time.perf_counter() - start) * 1e3)
    return {name: (times[name], goals[name].float().cpu()) for name in paths}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=("tiny", "mid", "llava_7b_random"), default="tiny")
    parser.add_argument("--llava-path", default=None, help="local LLaVA-1.5-7B directory (replaces --preset)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default=None,
                        help="LLaVA dtype (default: bfloat16 for llava_7b_random, else float32)")
    parser.add_argument("--attn", choices=("auto", "sdpa", "eager", "flash_attention_2"), default="auto",
                        help="attention kernel of llava_7b_random (auto: flash_attention_2 when importable on GPU)")
    parser.add_argument("--int8", action="store_true", help="also measure int8 dynamic quantization (CPU, float32)")
    parser.add_argument("--iters", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: leave default)")
    parser.add_argument("--image-size", type=int, default=200, help="side of the camera image (processor presets)")
    parser.add_argument("--prefix-tokens", type=int, default=38, help="synthetic prompts: tokens before the image")
    parser.add_argument("--suffix-tokens", type=int, default=25, help="synthetic prompts: tokens after the image")
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = args.dtype or ("bfloat16" if args.preset == "llava_7b_random" else "float32")
    if args.int8 and (device.type != "cpu" or dtype != "float32"):
        parser.error("--int8 measures the CPU float32 planner: use --device cpu and --dtype float32")
    if args.preset == "llava_7b_random" and device.type != "cuda" and args.llava_path is None:
        parser.error("llava_7b_random builds a 7B model: run it on a GPU (--device cuda)")

    build_start = time.perf_counter()
    processor = None
    if args.llava_path is not None:
        planner, processor = load_system2(None, preset="llava_7b", llava_path=args.llava_path, device=device)
        label = "llava_7b"
    elif args.preset == "tiny":
        planner, processor = build_tiny_system2(seed=0)
        planner = planner.to(device)
        label = "tiny"
    elif args.preset == "mid":
        planner = System2Planner(_mid_config(dtype), device=device).eval()
        label = "mid"
    else:
        planner = _llava_7b_random(str(device), dtype, args.attn).eval()
        label = "llava_7b_random"
    build_s = time.perf_counter() - build_start
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)

    proc_ms: list[float] = []
    if processor is not None:
        rng = np.random.default_rng(0)
        images = [rng.integers(0, 256, (args.image_size, args.image_size, 3), dtype=np.uint8) for _ in range(args.batch)]
        for _ in range(args.iters):
            start = time.perf_counter()
            batch = processor(images, [INSTRUCTION] * args.batch)
            proc_ms.append((time.perf_counter() - start) * 1e3)
    else:
        batch = _synthetic_batch(planner, args.batch, args.prefix_tokens, args.suffix_tokens)
    batch = {key: value.to(device) for key, value in batch.items()}

    def path(model: System2Planner, use_prefix_cache: bool) -> Callable[[], torch.Tensor]:
        return lambda: model(**batch, use_prefix_cache=use_prefix_cache).goal

    paths = {"reference": path(planner, False), "prefix-cached": path(planner, True)}
    if args.int8:
        quantized = copy.deepcopy(planner).quantize_int8()
        paths.update({"int8 reference": path(quantized, False), "int8 prefix-cached": path(quantized, True)})
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with torch.inference_mode():
        results = _measure(paths, args.warmup, args.iters, sync)
    assert results["reference"][1].shape == (args.batch, planner.config.goal_dim)

    prefix = len(planner._prefix_cache[0][0]) if planner._prefix_cache is not None else 0
    attn = planner.llava.model.language_model.config._attn_implementation
    print(f"System 2 [{label}] device={device} dtype={dtype} attn={attn} batch={args.batch} "
          f"threads={torch.get_num_threads()} hidden={planner.hidden_size} "
          f"layers={planner.llava.config.text_config.num_hidden_layers} seq_len={batch['input_ids'].shape[1]} "
          f"(prefix {prefix}, image {planner.num_image_tokens}) iters={args.iters} build={build_s:.1f}s")
    if device.type == "cuda":
        print(f"  {torch.cuda.get_device_name(device)}; weights {torch.cuda.memory_allocated(device) / 2**30:.2f} GiB, "
              f"peak during calls {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB")
    if proc_ms:
        print(f"  {'processor':<20} {_summary(proc_ms)}")
    reference_ms, reference_goal = results["reference"]
    reference_p50 = statistics.median(reference_ms)
    for name, (samples, goal) in results.items():
        speedup = reference_p50 / statistics.median(samples)
        print(f"  {name:<20} {_summary(samples)}  x{speedup:5.2f}  {_deviation(goal, reference_goal)}")


if __name__ == "__main__":
    main()
