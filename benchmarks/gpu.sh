#!/usr/bin/env bash
# The whole GPU run (issues 16 and 31) in one command, three stages, each writing its markdown section to ${OUT:-out}/
# as it goes and printing it:
#   1. gpu_train.md     the train step of musicgen-small and -medium: JAX (bfloat16 over float32, scanned, each remat
#                       policy, the largest batch of 30 s crops that fits) against transformers' bf16 autocast step,
#                       tokens/s and MFU (`python -m benchmarks.train_gpu`);
#   2. gpu_decode.md    the decode levers of musicgen-medium at batch 1 (`lax.top_k`, scanned layers, command buffers
#                       over the loop) and a profile of its steps (`python -m benchmarks.decode_gpu`);
#   3. gpu_sampling.md  JAX's `generate_tokens` against transformers' stock `generate` and its static-cache
#                       `torch.compile` (reduce-overhead) peer, small / medium / large in bfloat16 at batch 1
#                       (`python -m benchmarks.sampling_gpu`), in the time left of the first 420 s.
# Target: under 8 minutes on one H100 or H200 (stages 1 and 3 skip what their budgets do not hold, and say so).
#
# Needs jax[cuda], torch (CUDA) and the project's requirements already installed; installs nothing and reaches no
# network. Run from anywhere (it runs in the repository root with PYTHONPATH=.):
#   benchmarks/gpu.sh            # the whole run
#   benchmarks/gpu.sh --quick    # every stage with the tiny model and a few frames: a check, also on a CPU
#   STAGES="decode sampling" benchmarks/gpu.sh    # some stages
# PYTHON picks the interpreter (default python3). The batch-64 and float32 sampling rows of issue 16's matrix:
#   python -m benchmarks.sampling_gpu --dtypes bfloat16,float32 --batches 1,8,64 --peers generate --torch-frames 64
set -euo pipefail

quick=false
case "${1:-}" in
    --quick) quick=true ;;
    "") ;;
    *) echo "usage: benchmarks/gpu.sh [--quick]" >&2; exit 2 ;;
esac
out_dir=$(mkdir -p "${OUT:-out}" && cd "${OUT:-out}" && pwd)
cd "$(dirname "$0")/.."
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}"
export XLA_PYTHON_CLIENT_PREALLOCATE=false  # JAX and torch share the GPU: JAX allocates as it goes
export PYTHONUNBUFFERED=1
export BENCHMARK_COMMAND="benchmarks/gpu.sh${*:+ $*}"  # the command the sections record
python=${PYTHON:-python3}

if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
fi
if $quick; then
    train=(--models tiny --remat full --frames 8 --text-tokens 4 --steps 1 --max-batch 2 --peak-tflops 1)
    decode=(--models tiny --frames 8 --runs 1 --profile-frames 4)
    sampling=(--models tiny --batches 1 --dtypes float32,bfloat16 --frames 8 --torch-frames 4 --peers generate)
    sampling_budget=420
else
    train=(--models small,medium --budget-seconds 130)
    decode=(--models medium --runs 2)
    sampling=(--models small,medium,large --dtypes bfloat16 --batches 1 --torch-frames 64 --peers generate,compiled)
    sampling_budget=420  # from the start of the run, less what the earlier stages took
fi
for stage in ${STAGES:-train decode sampling}; do
    case $stage in
        train) "$python" -m benchmarks.train_gpu "${train[@]}" --out "$out_dir/gpu_train.md" ;;
        decode) "$python" -m benchmarks.decode_gpu "${decode[@]}" --out "$out_dir/gpu_decode.md" ;;
        sampling)
            left=$((sampling_budget - SECONDS))
            "$python" -m benchmarks.sampling_gpu "${sampling[@]}" --runs 1 --budget-seconds $((left > 30 ? left : 30)) \
                --out "$out_dir/gpu_sampling.md"
            ;;
        *) echo "gpu.sh: unknown stage $stage (train, decode, sampling)" >&2; exit 2 ;;
    esac
    echo "gpu.sh: $stage done at ${SECONDS} s"
done
echo "gpu.sh: done in ${SECONDS} s; the sections are in $out_dir"
