#!/usr/bin/env bash
# PushT visual on one GPU: does the visual pipeline learn when it gets steps? Both policies at paper scale (ResNet-18
# + DP's visual U-Net), the same epochs, one after the other (two at once on the one GPU ran at 1.5 it/s each
# instead of 8.6 alone), each evaluated on the 50 test seeds at the end (drifting 1 NFE, Diffusion Policy DDPM-100).
# No videos: the carried wheels have no imageio-ffmpeg. Writes metrics and logs under $OUT.
#   EPOCHS=12 bash scripts/gpu_pusht_visual.sh
set -uo pipefail
OUT=${OUT:-outputs/gpu_pusht_visual}
WORK=${WORK:-/tmp/gpu_pusht_visual}
EPOCHS=${EPOCHS:-12}
mkdir -p "$OUT" "$WORK"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD:${PYTHONPATH:-}
if [ -d .whl ]; then   # a machine without internet: dependencies carried as wheels
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=$PYTHONPATH:/tmp/site || exit 1
fi
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
for pol in drifting diffusion; do
  timeout ${LIMIT:-420} python3 scripts/train_policy.py task=pusht_visual policy=$pol scale=paper device=cuda \
    training.num_epochs=$EPOCHS task.eval.every_epochs=$EPOCHS task.eval.n_test=50 task.eval.n_train=0 \
    task.eval.n_videos=0 run_dir="$WORK/$pol" 2>&1 | tr "\r" "\n" | grep -vE "it/s]|s/it]" > "$OUT/train_$pol.log"
done
for pol in drifting diffusion; do
  cp "$WORK/$pol/metrics.jsonl" "$OUT/metrics_$pol.jsonl" 2>/dev/null
  echo "== $pol"; tail -c 1500 "$OUT/train_$pol.log" | tr '\r' '\n' | grep -v "^$" | tail -4
  python3 -c "import json,sys; [print({k: v for k, v in json.loads(l).items() if 'score' in k or k in ('epoch', 'epoch_time_s', 'train_loss')}) for l in open(sys.argv[1])]" "$OUT/metrics_$pol.jsonl"
done
nvidia-smi --query-gpu=memory.used --format=csv,noheader
