#!/usr/bin/env bash
# Evaluate an adapter on the four development recordings one at a time, each with its own
# --montage, then pool the per-epoch predictions (scripts/pool_predictions.py): for a model
# whose montage draws one recording channel twice (e.g. eeg=C4-M1,emg=EEG C4-M1: the EEG
# and its 10-45 Hz band), which `psgvlm eval --montage` can only name per recording.
#
#   scripts/eval_each.sh ADAPTER NAME "ROLE=%s,ROLE=%s"   # %s: each recording's EEG label
#
# Writes out/dev/eval/NAME/<recording>/ and bench/results/dev/NAME/metrics.md (pooled).
set -euo pipefail
cd "$(dirname "$0")/.."
ADAPTER=${1:?usage: scripts/eval_each.sh ADAPTER NAME MONTAGE_PATTERN}
NAME=${2:?}
PATTERN=${3:?}
MODEL=${MODEL:-tiny:qwen2vl}
DATA=${DATA:-../shared/data}
export OMP_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false
outs=()
for spec in "prerau:$DATA/prerau EEG" "dreams:$DATA/dreams-dev/excerpt1.txt C3-A1" \
    "dreams:$DATA/dreams-dev/excerpt2.txt CZ-A1" "dreams:$DATA/dreams-dev/excerpt3.txt C3-A1"; do
    read -r recording label <<< "$spec"
    # shellcheck disable=SC2059
    montage=$(printf "$PATTERN" "$label" "$label")
    out=out/dev/eval/$NAME/$(basename "${recording#*:}" .txt)
    psgvlm eval "$recording" --model "$MODEL" --adapter "$ADAPTER" --montage "$montage" \
        --peers yasa --no-progress --out "$out" > /dev/null
    outs+=("$out/predictions.csv")
done
mkdir -p "bench/results/dev/$NAME"
python scripts/pool_predictions.py "${outs[@]}" | tee "bench/results/dev/$NAME/metrics.md"
