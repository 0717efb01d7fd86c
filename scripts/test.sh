#!/usr/bin/env bash
# Run the test suite headless on CPU (both cores).
set -euo pipefail
cd "$(dirname "$0")/.."
# the other tools (zarr 2, robomimic, lerobot) in small test-only venvs, to prove they read what we write; a no-op
# when they exist
bash scripts/setup_test_readers.sh
export MUJOCO_GL="${MUJOCO_GL:-osmesa}" PYOPENGL_PLATFORM="${PYOPENGL_PLATFORM:-osmesa}" WANDB_MODE=disabled
python -m pytest -q -n 2 -p no:benchmark --durations=15 "$@"
