#!/usr/bin/env bash
# The GPU figure of System 2: LLaVA-1.5-7B architecture with random weights, bfloat16, one
# ~640-token prompt (38 before the image, 576 image tokens, 25 after), reference forward vs
# prefix-cached, with device, dtype, attention kernel and peak memory. Target: <= 20 ms.
#
# Needs a Python with CUDA torch and transformers (>= 5) on PATH; it does not use the CPU venv
# of scripts/setup. Extra arguments go to the benchmark (e.g. --batch 4, --attn sdpa).
#   benchmarks/gpu_system2.sh
set -eo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PYTHONPATH="$ROOT/openhelix_core${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python -c "import torch, transformers; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'transformers', transformers.__version__)"
exec python "$ROOT/benchmarks/bench_system2.py" --preset llava_7b_random --device cuda --dtype bfloat16 \
  --iters 50 --warmup 10 "$@"
