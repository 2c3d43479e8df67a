#!/usr/bin/env bash
# The README's performance tables: Keras ratio, XLA's own convs, batch sizes 32..1024, 1/2/4/8 devices, bf16.
# Usage: bash benchmarks/sweep.sh [--config=configs/NAME.py] > sweep.jsonl  (one JSON line per run)
set -euo pipefail
cd "$(dirname "$0")/.."
config=${1:---config=configs/fashion_mnist.py}
bench() { local run=$1; shift; python -m cgan_jax.benchmark "$config" "$@" 2>/dev/null |
  grep '^{' | sed "s/^{/{\"run\": \"$run\", /"; }
bench keras --steps 4 --windows 5 --keras
bench xla_convs --config.model.conv_impl=xla --steps 2 --windows 3
for b in 32 64 128 256 512 1024; do
  if [ "$b" -ge 512 ]; then steps=1 windows=2; else steps=2 windows=3; fi
  bench "batch$b" --config.batch_size=$b --config.g_batch_size=$((2 * b)) --steps $steps --windows $windows
done
for d in 1 2 4 8; do
  XLA_FLAGS="--xla_force_host_platform_device_count=$d" bench "devices$d" --steps 2 --windows 3
done
bench bf16 --config.model.dtype=bfloat16 --steps 2 --windows 3
