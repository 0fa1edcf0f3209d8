#!/usr/bin/env bash
# Evaluate an adapter on the four development recordings one at a time, each with its own
# --montage, then pool the per-epoch predictions (scripts/pool_predictions.py): for a model
# whose montage draws one recording channel twice (e.g. eeg=C4-M1,emg=EEG C4-M1: the EEG
# and its 10-45 Hz band), which `psgvlm eval --montage` can only name per recording.
#
#   scripts/eval_each.sh ADAPTER NAME "eeg=%s,emg=%s"   # each %s: the recording's EEG label
#   MODEL=DIR scripts/eval_each.sh ADAPTER NAME PATTERN  # another base model
#   SMOKE=1 scripts/eval_each.sh ADAPTER NAME PATTERN    # toy size (CI): see below
#
# Writes out/dev/eval/NAME/<recording>/ (psgvlm eval's reports) and the pooled table to
# $RESULTS/metrics.md (default bench/results/dev/NAME, committed).
#
# SMOKE=1 checks that the script still works: the first 10 epochs of each recording, or,
# when $DATA lacks prerau/ or dreams-dev/, a 10-minute synthetic night instead (said on
# stderr); OUT defaults to out/smoke/dev/eval/NAME and RESULTS to $OUT/results, so
# nothing is written under bench/.
set -euo pipefail
cd "$(dirname "$0")/.."
USAGE="usage: scripts/eval_each.sh ADAPTER NAME MONTAGE_PATTERN"
ADAPTER=${1:?$USAGE}
NAME=${2:?$USAGE}
PATTERN=${3:?$USAGE}
SMOKE=${SMOKE:-0}
MODEL=${MODEL:-tiny:qwen2vl}
DATA=${DATA:-../shared/data}
export OMP_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false
. scripts/lib/smoke_eval.sh
# recording, its EEG channel's label
specs=("prerau:$DATA/prerau EEG" "dreams:$DATA/dreams-dev/excerpt1.txt C3-A1"
    "dreams:$DATA/dreams-dev/excerpt2.txt CZ-A1" "dreams:$DATA/dreams-dev/excerpt3.txt C3-A1")
extra=()
if [ "$SMOKE" != 0 ] && smoke_eval --channels "EEG C4-M1"; then
    specs=("$SMOKE_NIGHT/synth-0100-PSG.edf EEG_C4-M1")
fi
OUT=${OUT:-out/dev/eval/$NAME}
RESULTS=${RESULTS:-bench/results/dev/$NAME}
outs=()
for spec in "${specs[@]}"; do
    read -r recording label <<< "$spec"
    label=${label//_/ }
    inputs=("$recording")
    [[ "$recording" != *.edf ]] || inputs+=(--hypnogram "${recording%PSG.edf}Hypnogram.edf")
    labels=()  # one per %s of the pattern
    for _ in $(seq "$(grep -o '%s' <<< "$PATTERN" | wc -l)"); do labels+=("$label"); done
    # shellcheck disable=SC2059
    montage=$(printf "$PATTERN" "${labels[@]}")
    out=$OUT/$(basename "${recording#*:}" .txt)
    psgvlm eval "${inputs[@]}" --model "$MODEL" --adapter "$ADAPTER" --montage "$montage" \
        "${extra[@]}" --peers yasa --no-progress --out "$out" > /dev/null
    outs+=("$out/predictions.csv")
done
mkdir -p "$RESULTS"
python scripts/pool_predictions.py "${outs[@]}" | tee "$RESULTS/metrics.md"
