#!/usr/bin/env bash
# Install everything the package, its simulators and its tests need, on a fresh Debian machine (run as root).
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
if command -v apt-get >/dev/null; then
  apt-get update -qq
  # libosmesa6: headless MuJoCo rendering on CPU; dataset-fashion-mnist: real images for drifting_policy.image
  apt-get install -y -qq libosmesa6 dataset-fashion-mnist >/dev/null
fi
# torch + torchvision first, as a matched pair (PyPI's torchvision does not import beside every torch build)
python -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
python -m pip install -q -e ".[sim,image,wandb,dev]"
