#!/usr/bin/env bash
# Starts training. With no flags: the embedded default (digits) into ./runs/digits.
#   ./launch.sh --config=configs/mnist.py --workdir=runs/mnist --config.num_train_steps=2000
# Every flag is passed to `python -m cgan_jax.main`.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON="${PYTHON:-python}"
if [ -x .venv/bin/python ] && [ -z "${VIRTUAL_ENV:-}" ]; then PYTHON=.venv/bin/python; fi
exec "$PYTHON" -m cgan_jax.main "$@"
