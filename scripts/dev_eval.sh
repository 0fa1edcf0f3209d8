#!/usr/bin/env bash
# Evaluate a trained adapter on the four development recordings (issue 19): the Prerau
# segment (30-s AASM epochs) and DREAMS excerpts 1-3 (20-s R&K epochs, shown centred in the
# model's 30-s window), per recording and pooled, YASA beside it on the same epochs (YASA
# refuses excerpt 3, sampled at 50 Hz; the report says so).
#
#   scripts/dev_eval.sh out/dev/baseline/train/adapter baseline
#   MODEL=vlm/default_models/eeg_only/base scripts/dev_eval.sh ADAPTER NAME
#   ENSEMBLE="A2 A3" scripts/dev_eval.sh A1 ensemble
#
# Writes the full report under out/dev/eval/NAME and copies metrics.json and metrics.md
# into bench/results/dev/NAME (committed).
set -euo pipefail
cd "$(dirname "$0")/.."
ADAPTER=${1:?usage: scripts/dev_eval.sh ADAPTER NAME}
NAME=${2:?usage: scripts/dev_eval.sh ADAPTER NAME}
MODEL=${MODEL:-tiny:qwen2vl}
DATA=${DATA:-../shared/data}
ENSEMBLE=${ENSEMBLE:-}
export OMP_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false
OUT=out/dev/eval/$NAME
extra=()
if [ -n "$ENSEMBLE" ]; then
    # shellcheck disable=SC2206
    extra=(--ensemble $ENSEMBLE)
fi
psgvlm eval "prerau:$DATA/prerau" "dreams:$DATA/dreams-dev" --model "$MODEL" \
    --adapter "$ADAPTER" "${extra[@]}" --peers yasa --no-progress --out "$OUT"
mkdir -p "bench/results/dev/$NAME"
cp "$OUT/metrics.json" "$OUT/metrics.md" "bench/results/dev/$NAME/"
cat "$OUT/metrics.md"
