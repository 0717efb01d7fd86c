#!/usr/bin/env bash
# GPU smoke test: does everything run on CUDA, and how fast?
#   1. predict_action latency at batch 1 (cpu-scale and paper-scale networks, PushT state and visual, drifting vs
#      DDPM-100 vs DDIM-10), synchronised timing;
#   2. short paper-scale trainings of both policies on PushT state (3 epochs, 10-seed evaluation on the GPU policy)
#      and one epoch of each on PushT visual: optimiser steps per second;
#   3. drifting_policy.image on CUDA with bf16: the fmnist_cpu encoder and generator and the flow-matching
#      baseline for a few hundred steps each.
# Writes latency JSON, training metrics and image logs under $OUT (default outputs/gpu_smoke).
#   bash scripts/gpu_smoke.sh            (FMNIST=<folder with the IDX files> to point at Fashion-MNIST)
set -uo pipefail
OUT=${OUT:-outputs/gpu_smoke}
WORK=${WORK:-/tmp/gpu_smoke}
FMNIST=${FMNIST:-/usr/share/datasets/fashion-mnist}
mkdir -p "$OUT" "$WORK"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD:${PYTHONPATH:-}
if [ -d .whl ]; then   # a machine without internet: dependencies carried as wheels
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=$PYTHONPATH:/tmp/site || exit 1
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())" || exit 1
step() { echo "=== $1 ($(date +%T))"; }

for task in pusht_state pusht_visual; do   # ~80 s each on an H100 (DDPM-100 rows dominate)
  step "latency $task"
  timeout 240 python3 scripts/benchmark_latency.py tasks=$task calls=20 device=cuda out="$OUT/latency_gpu_$task.json"
done

: > "$OUT/train_metrics.txt"
train() {  # task policy epochs extra-args...
  local task=$1 pol=$2 ep=$3; shift 3
  step "train $task $pol ($ep epochs, paper scale)"
  timeout 170 python3 scripts/train_policy.py task=$task policy=$pol scale=paper device=cuda training.num_epochs=$ep \
    run_dir="$WORK/${task}_$pol" "$@" 2>&1 | tr '\r' '\n' | grep -E "it/s|s/it|score|Error|error" | tail -4
  { echo "## $task $pol"; cat "$WORK/${task}_$pol/metrics.jsonl" 2>/dev/null; } >> "$OUT/train_metrics.txt"
}
for pol in drifting diffusion; do
  train pusht_state $pol 3 task.eval.n_test=10 task.eval.n_train=0 task.eval.every_epochs=3 task.eval.n_videos=0
done
for pol in drifting diffusion; do
  train pusht_visual $pol 1 task.eval.n_test=0
done

step "image: fmnist_cpu on CUDA (bf16)"
cfg="--config-name fmnist_cpu"
common="data.root=$FMNIST encoder.checkpoint=$WORK/img/encoder eval.every=0 train.log_every=50"
timeout 90 python3 scripts/train_image_encoder.py $cfg $common encoder.steps=300 encoder.finetune_steps=50 \
  | tail -2
timeout 120 python3 scripts/train_image.py $cfg $common out_dir=$WORK/img/gen train.steps=300 \
  train.ckpt_every=300 | tail -2
timeout 90 python3 scripts/train_image.py $cfg $common method=flow_matching out_dir=$WORK/img/fm \
  train.steps=300 train.ckpt_every=300 | tail -2
for f in "$WORK"/img/encoder_log.jsonl "$WORK"/img/gen/log.jsonl "$WORK"/img/fm/log.jsonl; do
  echo "## $f"; tail -3 "$f" 2>/dev/null
done > "$OUT/image_logs.txt"
nvidia-smi --query-gpu=memory.used --format=csv,noheader
step "done"
