#!/usr/bin/env bash
# Where the tiny model looks, and how it holds up: synthetic nights -> shards -> tiny
# Qwen2-VL (vlm/configs/explain_tiny.yaml: vision LoRA, class-balanced loss; CPU, one
# thread) -> heatmaps of one epoch per stage -> pointing game (planted
# events; real YASA snippets and Prerau segment with detected events) -> channel importance
# -> robustness curve (model and YASA on the same perturbed signals).
#
#   scripts/explain_report.sh                    # ~30 min on 2 busy cores
#   WORK=/tmp/xr STEPS=700 scripts/explain_report.sh
#   SMOKE=1 scripts/explain_report.sh            # toy size (CI): see below
#
# Steps whose outputs exist in $WORK are not redone (delete them to start over); an
# interrupted training continues from its last checkpoint (--resume auto). The real
# recordings ($DATA/yasa, $DATA/prerau) are used when present; a line says when not.
# Outputs: $WORK/{nights,heldout,shards,run}, and under $OUT: eval/, epoch_*_{occlusion,gradxinput}.png
# and .json, pointing_{synth,yasa,prerau}/, importance/, robustness/, timings.tsv.
#
# SMOKE=1 runs every step at toy size, to check that the script still works: two
# 10-minute training nights and a 10-minute held-out one, 112x56 images, 3 training
# steps, 2 epochs per stage in the pointing game and 4 in channel importance, 10
# robustness epochs under two perturbations; WORK out/smoke/explain_work and OUT
# out/smoke/explain by default.
set -euo pipefail
cd "$(dirname "$0")/.."

SMOKE=${SMOKE:-0}
CONFIG=${CONFIG:-vlm/configs/explain_tiny.yaml}
DATA=${DATA:-../shared/data}
MONTAGE=eeg=C4-M1,eog=E1-M2,emg=chin
NIGHTS=12 HOURS=2 HELDOUT_HOURS=3 PER_STAGE=6 IMPORTANCE_PER_STAGE=20
ROBUST_EPOCHS=100:220
PERTURB='noise:snr=20,10,5,0;gain:0.5,2;line:50,60;wander;pops;drop:eog,emg;size:448x224'
SIZE=$(sed -n 's/^image_size: *//p' "$CONFIG")
train_extra=()
if [ "$SMOKE" != 0 ]; then
    WORK=${WORK:-out/smoke/explain_work}
    OUT=${OUT:-out/smoke/explain}
    STEPS=${STEPS:-3}
    NIGHTS=2 HOURS=0.17 HELDOUT_HOURS=0.17 PER_STAGE=2 IMPORTANCE_PER_STAGE=4
    ROBUST_EPOCHS=0:10 PERTURB='noise:snr=5;drop:eog' SIZE=112x56
    train_extra=(--image_size "$SIZE" --logging_steps 1 --warmup_steps 0
        --per_device_train_batch_size 2 --shuffle_buffer 8)
fi
WORK=${WORK:-out/explain_work}
OUT=${OUT:-bench/out/explain}
STEPS=${STEPS:-700}
export OMP_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false

mkdir -p "$WORK" "$OUT"
: > "$OUT/timings.tsv"
TIMINGS="$OUT/timings.tsv"
. scripts/lib/timing.sh  # step NAME COMMAND...: run and record the wall time

# 1. Twelve 2-h training nights (seeds 0-11: twelve subjects, each with its own random
# gains) and one held-out 3-h night (seed 100).
[ -f "$WORK/nights/.complete" ] || {
    step synth psgvlm synth --nights "$NIGHTS" --hours "$HOURS" --seed 0 --out "$WORK/nights"
    touch "$WORK/nights/.complete"
}
[ -f "$WORK/heldout/synth-0100-PSG.edf" ] ||
    step synth-heldout psgvlm synth --nights 1 --hours "$HELDOUT_HOURS" --seed 100 \
        --out "$WORK/heldout"
[ -f "$WORK/shards/manifest.json" ] ||
    step render psgvlm render "synthetic:$WORK/nights" --out "$WORK/shards" --montage "$MONTAGE" \
        --size "$SIZE" --split 1,0,0 --no-progress

# 2. Train the tiny model (vision LoRA, class-balanced loss: $CONFIG), built at the image
# size in $PSGVLM_CACHE_DIR/tiny (the same seeded weights wherever it is built).
[ -f "$WORK/run/adapter/adapter_config.json" ] ||
    step train psgvlm train --config "$CONFIG" --train_shards "$WORK/shards/train-*.tar" \
        --eval_shards null --output_dir "$WORK/run" --resume auto \
        --max_steps "$STEPS" --class_weights auto --save_steps "$STEPS" "${train_extra[@]}"

MODEL=(--model tiny:qwen2vl --adapter "$WORK/run/adapter")
NIGHT="$WORK/heldout/synth-0100-PSG.edf"
HYP="$WORK/heldout/synth-0100-Hypnogram.edf"

# Clean accuracy on the whole held-out night, beside YASA.
step eval psgvlm eval "$NIGHT" --hypnogram "$HYP" "${MODEL[@]}" --device cpu --no-progress \
    --out "$OUT/eval"

# 3. One epoch of each stage: the middle of the first long run of that stage.
EPOCHS=$(python - "$HYP" <<'EOF'
import sys
import numpy as np
from engine.io.hypnogram import read_hypnogram
stages = np.asarray(read_hypnogram(sys.argv[1]).to_epochs().stages)
picked = []
for k in range(5):
    runs, start = [], None
    for i, s in enumerate(list(stages) + [-9]):
        if s == k and start is None:
            start = i
        elif s != k and start is not None:
            runs.append((i - start, start))
            start = None
    if runs:
        length, first = max(runs)
        picked.append(first + length // 2)
print(",".join(map(str, picked)))
EOF
)
step explain psgvlm explain "$NIGHT" --epoch "$EPOCHS" "${MODEL[@]}" --hypnogram "$HYP" \
    --out "$OUT" --method occlusion,gradxinput --window 3

# 4. Pointing game: planted events (synthetic), detected events (real snippets, Prerau).
step pointing-synth psgvlm explain "$NIGHT" --pointing-game "${MODEL[@]}" --hypnogram "$HYP" \
    --per-stage "$PER_STAGE" --window 5 --out "$OUT/pointing_synth"
if [ -d "$DATA/yasa" ]; then
    step pointing-yasa psgvlm explain "yasa:$DATA/yasa" --pointing-game "${MODEL[@]}" \
        --per-stage "$PER_STAGE" --window 5 --out "$OUT/pointing_yasa"
else
    echo "skipping pointing-yasa: no YASA snippets at $DATA/yasa" >&2
fi
if [ -d "$DATA/prerau" ]; then
    step pointing-prerau psgvlm explain "prerau:$DATA/prerau" --pointing-game "${MODEL[@]}" \
        --per-stage "$PER_STAGE" --window 5 --out "$OUT/pointing_prerau"
else
    echo "skipping pointing-prerau: no Prerau segment at $DATA/prerau" >&2
fi

# 5. Channel importance over the held-out night (up to 20 epochs per scored stage).
step importance psgvlm explain "$NIGHT" --channel-importance "${MODEL[@]}" --hypnogram "$HYP" \
    --per-stage "$IMPORTANCE_PER_STAGE" --out "$OUT/importance"

# 6. Robustness: 120 epochs (W, N1, N2, N3 and R) re-rendered under each perturbation.
step robustness psgvlm eval "$NIGHT" --hypnogram "$HYP" "${MODEL[@]}" --epochs "$ROBUST_EPOCHS" \
    --perturb "$PERTURB" --no-progress --out "$OUT/robustness"
