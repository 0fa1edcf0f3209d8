#!/usr/bin/env bash
# Evaluate a trained adapter on the four development recordings (issue 19): the Prerau
# segment (30-s AASM epochs) and DREAMS excerpts 1-3 (20-s R&K epochs, shown centred in the
# model's 30-s window), per recording and pooled, YASA beside it on the same epochs (YASA
# refuses excerpt 3, sampled at 50 Hz; the report says so).
#
#   scripts/dev_eval.sh out/dev/baseline/train/adapter baseline
#   MODEL=vlm/default_models/eeg_only/base scripts/dev_eval.sh ADAPTER NAME
#   ENSEMBLE="A2 A3" scripts/dev_eval.sh A1 ensemble
#   SMOKE=1 scripts/dev_eval.sh ADAPTER NAME     # toy size (CI): see below
#   RECORDINGS="$DATA/dreams-dev/excerpt3.edf --hypnogram $DATA/dreams-dev/Hypnogram_excerpt3.txt" \
#       scripts/dev_eval.sh ADAPTER NAME         # other inputs (an EEG+EOG+EMG model: the
#                                                # one development PSG with EOG and chin EMG)
#
# Writes the full report under $OUT (default out/dev/eval/NAME) and copies metrics.json and
# metrics.md into $RESULTS (default bench/results/dev/NAME, committed).
#
# SMOKE=1 checks that the script still works: the first 10 epochs of each recording, or,
# when $DATA lacks prerau/ or dreams-dev/, a 10-minute synthetic night instead (said on
# stderr); OUT defaults to out/smoke/dev/eval/NAME and RESULTS to $OUT/results, so
# nothing is written under bench/.
set -euo pipefail
cd "$(dirname "$0")/.."
ADAPTER=${1:?usage: scripts/dev_eval.sh ADAPTER NAME}
NAME=${2:?usage: scripts/dev_eval.sh ADAPTER NAME}
SMOKE=${SMOKE:-0}
MODEL=${MODEL:-tiny:qwen2vl}
DATA=${DATA:-../shared/data}
ENSEMBLE=${ENSEMBLE:-}
export OMP_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false
. scripts/lib/smoke_eval.sh
recordings=("prerau:$DATA/prerau" "dreams:$DATA/dreams-dev")
if [ -n "${RECORDINGS:-}" ]; then  # e.g. the one development PSG with EOG and chin EMG
    read -ra recordings <<< "$RECORDINGS"
fi
extra=()
if [ "$SMOKE" != 0 ] && smoke_eval; then
    recordings=("$SMOKE_NIGHT/synth-0100-PSG.edf"
        --hypnogram "$SMOKE_NIGHT/synth-0100-Hypnogram.edf")
fi
OUT=${OUT:-out/dev/eval/$NAME}
RESULTS=${RESULTS:-bench/results/dev/$NAME}
if [ -n "$ENSEMBLE" ]; then
    # shellcheck disable=SC2206
    extra+=(--ensemble $ENSEMBLE)
fi
psgvlm eval "${recordings[@]}" --model "$MODEL" \
    --adapter "$ADAPTER" "${extra[@]}" --peers yasa --no-progress --out "$OUT"
mkdir -p "$RESULTS"
cp "$OUT/metrics.json" "$OUT/metrics.md" "$RESULTS/"
cat "$OUT/metrics.md"
