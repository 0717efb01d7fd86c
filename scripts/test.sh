#!/usr/bin/env bash
# Run the test suite headless on CPU (both cores).
set -euo pipefail
cd "$(dirname "$0")/.."
# MuJoCo's GL backend (osmesa here, egl with a GPU) is chosen by envs/rendering.py when envs is imported
export WANDB_MODE=disabled
python -m pytest -q -n 2 -p no:benchmark --durations=15 "$@"
