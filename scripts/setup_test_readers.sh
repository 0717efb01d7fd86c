#!/usr/bin/env bash
# Build the small test-only environments in which other tools read the files we write (tests/test_*_readers.py):
#   .venvs/zarr2      zarr 2.18.3 + numcodecs<0.16, isolated (Diffusion Policy's zarr world)
#   .venvs/robomimic  robomimic 0.3.0 (--no-deps) over this environment's torch, h5py and numpy
#   .venvs/lerobot    lerobot 0.4.4 (--no-deps) + its dataset stack, over this environment's torch
# The last two see this environment's site-packages through a .pth file, so they add tens of MB, not a second torch.
# Idempotent: a venv that exists and imports its tool is left alone. Run from anywhere; as root for apt-get.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python}"
MAIN_SITE="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
mkdir -p .venvs

ready() {  # ready <venv> <python code>: the venv exists and the code runs in it
  [ -x ".venvs/$1/bin/python" ] && ".venvs/$1/bin/python" -c "$2" >/dev/null 2>&1
}

new_venv() {  # new_venv <name> [over-main]: a fresh venv, optionally seeing this environment's packages
  rm -rf ".venvs/$1"
  "$PY" -m venv ".venvs/$1"
  if [ "${2:-}" = over-main ]; then
    site="$(".venvs/$1/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    echo "$MAIN_SITE" >"$site/main_environment.pth"  # appended after the venv's own site-packages: the venv's win
  fi
}

pipv() { ".venvs/$1/bin/python" -m pip install -q --disable-pip-version-check "${@:2}"; }

build_zarr2() {
  new_venv zarr2
  pipv zarr2 "zarr==2.18.3" "numcodecs<0.16" "numpy<2"
}

build_robomimic() {
  new_venv robomimic over-main
  # its env wrapper needs mujoco_py, which does not build here; FileUtils and SequenceDataset need only these
  pipv robomimic --no-deps "robomimic==0.3.0"
  pipv robomimic h5py "numpy<2" tqdm termcolor psutil tensorboardX imageio
}

build_lerobot() {
  if command -v apt-get >/dev/null && ! ldconfig -p | grep -q libavformat; then
    # torchcodec (lerobot's default video decoder) loads the system's FFmpeg libraries
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends ffmpeg >/dev/null
  fi
  new_venv lerobot over-main
  # lerobot 0.4.4 pins torch<2.11, which would pull a second (CUDA) torch of several GB; it runs on ours. torchcodec
  # 0.14 is the release built against torch 2.14 (torchcodec 0.N pairs with torch 2.N).
  pipv lerobot --no-deps "lerobot==0.4.4" "torchcodec==0.14.0"
  pipv lerobot "datasets>=4.0,<5" "huggingface-hub>=0.34.2,<0.36" "av>=15,<16" "jsonlines>=4,<5" "draccus==0.10.0" \
    "pandas<3" "accelerate>=1.10,<2"
}

ensure() {  # ensure <venv> <import check>: build the venv unless it already passes the check, then insist it does
  ready "$1" "$2" && return
  echo "building .venvs/$1"
  "build_$1" 2>&1 | grep -v "dependency resolver\|which is incompatible\|which is not installed" || true
  ready "$1" "$2" || { echo "setup_test_readers: .venvs/$1 was built but fails: $2" >&2; exit 1; }
}

ensure zarr2 'import zarr, numcodecs; assert zarr.__version__ == "2.18.3"'
ensure robomimic 'import robomimic, robomimic.utils.file_utils, robomimic.utils.dataset; assert robomimic.__version__ == "0.3.0"'
ensure lerobot 'import lerobot, torchcodec.decoders; from lerobot.datasets.lerobot_dataset import LeRobotDataset'
echo "test reader venvs ready: $(du -sh .venvs | cut -f1) in .venvs/"
