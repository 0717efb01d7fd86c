#!/usr/bin/env bash
# Run the test suite headless on CPU (both cores).
set -euo pipefail
cd "$(dirname "$0")/.."
export MUJOCO_GL="${MUJOCO_GL:-osmesa}" PYOPENGL_PLATFORM="${PYOPENGL_PLATFORM:-osmesa}" WANDB_MODE=disabled
python -m pytest -q -n 2 -p no:benchmark --durations=15 "$@"
