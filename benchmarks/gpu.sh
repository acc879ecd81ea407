#!/usr/bin/env bash
# The GPU sampling benchmark (issue 16) in one command: musicgen_jax's `generate_tokens` against transformers'
# `generate` (torch CUDA, sdpa attention) on the same random weights, for the small, medium and large
# architectures at batch 1, 8 and 64 with guidance, in bfloat16 then float32 (`python -m benchmarks.sampling_gpu`,
# see its docstring). It writes the markdown table to ${OUT:-out}/gpu_sampling.md and prints it.
#
# Target: under 8 minutes on one GPU (an H200: 6.3 minutes, benchmarks/RESULTS.md). Per model size the models are
# built once and the JAX decode loops of its six configurations compiled at once, and transformers runs 64 frames
# rather than 250. Work past --budget-seconds (420 s after start-up) is skipped, and the table says so: a model size
# or a configuration runs only while the time used plus that of the last one of its kind fits. The table is
# rewritten after every configuration, so a run stopped from outside keeps what it measured.
#
# Needs jax[cuda], torch (CUDA) and the project's requirements already installed; installs nothing
# and reaches no network. Run from anywhere (it runs in the repository root with PYTHONPATH=.):
#   benchmarks/gpu.sh                                    # the full run
#   OUT=/tmp/bench benchmarks/gpu.sh --models small      # extra arguments go to benchmarks.sampling_gpu
#   benchmarks/gpu.sh --models tiny --batches 1,2 --frames 8   # a quick check, also on a CPU
# PYTHON picks the interpreter (default python3).
set -euo pipefail

out_dir=$(mkdir -p "${OUT:-out}" && cd "${OUT:-out}" && pwd)
cd "$(dirname "$0")/.."
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}"
export XLA_PYTHON_CLIENT_PREALLOCATE=false  # JAX and torch share the GPU: JAX allocates as it goes
export PYTHONUNBUFFERED=1
export BENCHMARK_COMMAND="benchmarks/gpu.sh${*:+ $*}"  # the command the table records

if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
fi
"${PYTHON:-python3}" -m benchmarks.sampling_gpu --models small,medium,large --dtypes bfloat16,float32 \
    --batches 1,8,64 --frames 250 --torch-frames 64 --budget-seconds 420 --out "$out_dir/gpu_sampling.md" "$@"
echo "gpu.sh: done in ${SECONDS} s; the table is in $out_dir/gpu_sampling.md"
