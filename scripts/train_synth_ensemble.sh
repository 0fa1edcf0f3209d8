#!/usr/bin/env bash
# Real EEG from synthetic training, as an ensemble: train the committed configuration
# (scripts/train_synth_eval_real.sh, one central EEG) on several sets of synthetic
# subjects, one per seed, PARALLEL at a time (each training uses one thread), then stage
# the real Prerau segment with all of them at once (psgvlm eval --ensemble: the mean of
# their stage probabilities), YASA beside it on the same epochs.
#
#   scripts/train_synth_ensemble.sh                           # 4 seeds, ~20 min on 2 cores
#   SEEDS="0 100" ROOT=out/ens2 scripts/train_synth_ensemble.sh
#   SMOKE=1 scripts/train_synth_ensemble.sh                   # toy size (CI): see below
#
# Outputs: $ROOT/seed<S>/ (each member's run, as train_synth_eval_real.sh EVAL=0 writes
# it, its log in $ROOT/seed<S>.log) and $ROOT/eval/ (metrics.json, metrics.md,
# predictions.csv). A member whose run is finished is kept.
#
# SMOKE=1 checks that the script still works: two members (SEEDS "0 100"), each
# train_synth_eval_real.sh's smoke mode (two 10-minute nights, 3 training steps), then the
# first 10 Prerau epochs (or, when $PRERAU is absent, a 10-minute synthetic night, said on
# stderr); ROOT defaults to out/smoke/synth_ensemble.
set -euo pipefail
cd "$(dirname "$0")/.."

SMOKE=${SMOKE:-0}
eval_extra=()
if [ "$SMOKE" != 0 ]; then
    SEEDS=${SEEDS:-0 100}
    ROOT=${ROOT:-out/smoke/synth_ensemble}
    eval_extra=(--epochs 0:10)
fi
read -r -a seeds <<< "${SEEDS:-0 100 200 300}"
ROOT=${ROOT:-out/synth_ensemble}
PRERAU=${PRERAU:-../shared/data/prerau}
PARALLEL=${PARALLEL:-2}
export SMOKE
if [ "${#seeds[@]}" -lt 2 ]; then
    echo "SEEDS must name at least two seeds, got '${seeds[*]}'" >&2
    exit 2
fi
mkdir -p "$ROOT"

# The members would race to build the tiny model on first use: build it once, here.
if [ "$SMOKE" != 0 ]; then
    size=168x56  # train_synth_eval_real.sh's smoke size
else
    size=$(python -c "import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))['image_size'])" \
        "${CONFIG:-vlm/configs/synth_eeg_only.yaml}")
fi
python -c "import sys; from vlm.model import resolve_model_id; from vlm.tiny import parse_image_size
resolve_model_id('tiny:qwen2vl', parse_image_size(sys.argv[1]))" "$size"

for ((i = 0; i < ${#seeds[@]}; i += PARALLEL)); do
    pids=()
    for seed in "${seeds[@]:i:PARALLEL}"; do
        echo "training seed $seed -> $ROOT/seed$seed (log: $ROOT/seed$seed.log)"
        SEED=$seed RUN="$ROOT/seed$seed" EVAL=0 \
            scripts/train_synth_eval_real.sh > "$ROOT/seed$seed.log" 2>&1 &
        pids+=("$!")
    done
    for pid in "${pids[@]}"; do
        wait "$pid" || { echo "a run failed: see $ROOT/seed*.log" >&2; exit 1; }
    done
done

adapters=()
for seed in "${seeds[@]}"; do
    adapters+=("$ROOT/seed$seed/train/adapter")
done
recording=("prerau:$PRERAU")
if [ "$SMOKE" != 0 ] && [ ! -d "$PRERAU" ]; then
    echo "smoke: no Prerau data at $PRERAU: staging a held-out synthetic night instead" >&2
    [ -f "$ROOT/heldout/synth-1000-PSG.edf" ] ||
        psgvlm synth --nights 1 --hours 0.17 --fs 100 --channels "EEG C4-M1" --seed 1000 \
            --out "$ROOT/heldout"
    recording=("$ROOT/heldout/synth-1000-PSG.edf"
        --hypnogram "$ROOT/heldout/synth-1000-Hypnogram.edf")
fi
psgvlm eval "${recording[@]}" --model tiny:qwen2vl --adapter "${adapters[0]}" \
    --ensemble "${adapters[@]:1}" --peers yasa --smooth hmm --no-progress "${eval_extra[@]}" \
    --out "$ROOT/eval"
cat "$ROOT/eval/metrics.md"
