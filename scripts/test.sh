#!/usr/bin/env bash
# Run the test suite headless on CPU (both cores).
set -euo pipefail
cd "$(dirname "$0")/.."
# the other tools (zarr 2, robomimic, lerobot) in small test-only venvs, to prove they read what we write; a no-op
# when they exist
bash scripts/setup_test_readers.sh
# MuJoCo's GL backend (osmesa here, egl with a GPU) is chosen by envs/rendering.py when envs is imported
export WANDB_MODE=disabled
python -m pytest -q -n 2 -p no:benchmark --durations=15 "$@"
