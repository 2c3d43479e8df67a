#!/usr/bin/env bash
# The GPU check (see benchmarks/gpu_check.py): bash benchmarks/gpu_check.sh [--quick] [--budget S]
# Carry gpu_bundle/ along (python benchmarks/gpu_check.py --prepare builds it); writes to $OUT.
set -euo pipefail
cd "$(dirname "$0")/.."
python=$(command -v python || command -v python3)
PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH} exec "$python" benchmarks/gpu_check.py "$@"
