#!/usr/bin/env bash
# The GPU figures of System 1: the full OpenHelix CALVIN config (random weights), the reference
# path (25 DDPM steps, module by module) against the fast paths in one alternating run, batch
# throughput, and peak memory. Target: a full System 1 call <= 10 ms.
#
# Needs a Python with CUDA torch and diffusers on PATH (not the CPU venv of scripts/setup).
# Extra arguments go to the benchmark (e.g. --samplers ddim-5 ddim-3 ddim-2, --iters 100).
#   benchmarks/gpu_system1.sh
set -eo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PYTHONPATH="$ROOT/openhelix_core${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python -c "import torch, diffusers; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'diffusers', diffusers.__version__)"
exec python "$ROOT/benchmarks/bench_system1.py" --device cuda --iters 50 --samplers ddpm-25 ddim-10 ddim-5 ddim-3 ddim-2 \
  --batch-sizes 1 4 8 16 "$@"
