#!/usr/bin/env bash
# Where the tiny model looks, and how it holds up: synthetic nights -> shards -> tiny
# Qwen2-VL (vlm/configs/explain_tiny.yaml: vision LoRA, class-balanced loss; CPU, one
# thread) -> heatmaps of one epoch per stage -> pointing game (planted
# events; real YASA snippets and Prerau segment with detected events) -> channel importance
# -> robustness curve (model and YASA on the same perturbed signals).
#
#   scripts/explain_report.sh                    # ~30 min on 2 busy cores
#   WORK=/tmp/xr STEPS=700 scripts/explain_report.sh
#
# Steps whose outputs exist in $WORK are not redone (delete them to start over).
# Outputs: $WORK/{nights,heldout,shards,run}, and under $OUT: eval/, epoch_*_{occlusion,gradxinput}.png
# and .json, pointing_{synth,yasa,prerau}/, importance/, robustness/, timings.tsv.
set -euo pipefail
cd "$(dirname "$0")/.."

WORK=${WORK:-out/explain_work}
OUT=${OUT:-bench/out/explain}
CONFIG=${CONFIG:-vlm/configs/explain_tiny.yaml}
STEPS=${STEPS:-700}
DATA=${DATA:-../shared/data}
MONTAGE=eeg=C4-M1,eog=E1-M2,emg=chin
SIZE=$(sed -n 's/^image_size: *//p' "$CONFIG")
export OMP_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false

mkdir -p "$WORK" "$OUT"
: > "$OUT/timings.tsv"
TIMINGS="$OUT/timings.tsv"
. scripts/lib/timing.sh  # step NAME COMMAND...: run and record the wall time

# 1. Twelve 2-h training nights (seeds 0-11: twelve subjects, each with its own random
# gains) and one held-out 3-h night (seed 100).
[ -f "$WORK/nights/synth-0011-PSG.edf" ] ||
    step synth psgvlm synth --nights 12 --hours 2 --seed 0 --out "$WORK/nights"
[ -f "$WORK/heldout/synth-0100-PSG.edf" ] ||
    step synth-heldout psgvlm synth --nights 1 --hours 3 --seed 100 --out "$WORK/heldout"
[ -f "$WORK/shards/manifest.json" ] ||
    step render psgvlm render "synthetic:$WORK/nights" --out "$WORK/shards" --montage "$MONTAGE" \
        --size "$SIZE" --split 1,0,0 --no-progress

# 2. Train the tiny model (vision LoRA, class-balanced loss: $CONFIG).
[ -f "$WORK/run/adapter/adapter_config.json" ] ||
    step train psgvlm train --config "$CONFIG" --train_shards "$WORK/shards/train-*.tar" \
        --eval_shards null --output_dir "$WORK/run" --tiny_cache_dir "$WORK/tiny" \
        --max_steps "$STEPS" --class_weights auto --save_steps "$STEPS"

BASE="$WORK/tiny/tiny-qwen2vl-$SIZE"
MODEL=(--model "$BASE" --adapter "$WORK/run/adapter")
NIGHT="$WORK/heldout/synth-0100-PSG.edf"
HYP="$WORK/heldout/synth-0100-Hypnogram.edf"

# Clean accuracy on the whole held-out night, beside YASA.
step eval psgvlm eval "$NIGHT" --hypnogram "$HYP" "${MODEL[@]}" --device cpu --out "$OUT/eval"

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
    --per-stage 6 --window 5 --out "$OUT/pointing_synth"
if [ -d "$DATA/yasa" ]; then
    step pointing-yasa psgvlm explain "yasa:$DATA/yasa" --pointing-game "${MODEL[@]}" \
        --per-stage 6 --window 5 --out "$OUT/pointing_yasa"
fi
if [ -d "$DATA/prerau" ]; then
    step pointing-prerau psgvlm explain "prerau:$DATA/prerau" --pointing-game "${MODEL[@]}" \
        --per-stage 6 --window 5 --out "$OUT/pointing_prerau"
fi

# 5. Channel importance over the held-out night (up to 20 epochs per scored stage).
step importance psgvlm explain "$NIGHT" --channel-importance "${MODEL[@]}" --hypnogram "$HYP" \
    --per-stage 20 --out "$OUT/importance"

# 6. Robustness: 120 epochs (W, N1, N2, N3 and R) re-rendered under each perturbation.
step robustness psgvlm eval "$NIGHT" --hypnogram "$HYP" "${MODEL[@]}" --epochs 100:220 \
    --perturb 'noise:snr=20,10,5,0;gain:0.5,2;line:50,60;wander;pops;drop:eog,emg;size:448x224' \
    --out "$OUT/robustness"
