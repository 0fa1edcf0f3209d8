#!/usr/bin/env bash
# Train, calibrate, package and evaluate a default stager shipped in vlm/default_models/
# (issue 19), from synthetic nights only (engine.synth), on one 2-core CPU:
#
#   NIGHTS=24 VARIABILITY=lightn1 scripts/train_default_stager.sh   # eeg_only, ~25 min on 2 cores
#   NAME=eeg_eog_emg CONFIG=vlm/configs/default_eeg_eog_emg_fast.yaml \
#       CHANNELS="EEG C4-M1,EOG E1-M2,EMG chin" MONTAGE=eeg=C4-M1,fast=C4-M1,eog=E1-M2,emg=chin \
#       NORMALISE=emg=5 RECORDINGS="../shared/data/dreams-dev/excerpt3.edf \
#           --hypnogram ../shared/data/dreams-dev/Hypnogram_excerpt3.txt" \
#       scripts/train_default_stager.sh    # eeg_eog_emg, evaluated on the one development PSG with EOG/EMG
#
# (The defaults, 12 nights with --variability wide, are session 8's recipe, kept so that the
# commands in bench/RESULTS.md run as they ran; the shipped eeg_only names its own.)
#
# Steps (outputs under out/default/$NAME; timings in timings.tsv):
#  1. psgvlm synth: $NIGHTS training nights (seeds $SEED..), sampling rates drawn per night
#     ($FS; 'random' gives 50-512 Hz) and the generator's $VARIABILITY randomisation;
#  2. psgvlm render at the config's image size, context $CONTEXT (default 1: the target
#     epoch and a neighbour on each side), with --normalise $NORMALISE when set (e.g. NORMALISE=eeg=15)
#     and --short-epochs $SHORT_EPOCHS when set (e.g. SHORT_EPOCHS=0.5);
#  3. vlm/train.py (LoRA + trained head and embeddings on the tiny Qwen2-VL);
#  4. $CAL_NIGHTS held-out synthetic nights of $CAL_HOURS h (seeds 900000..) → python -m vlm.calibrate fit:
#     calibration temperature (calibration.json); python -m vlm.calibrate reference on the
#     training nights: the input range of the out-of-distribution caveat;
#  5. packaging: the tiny base model's own weights (safetensors), the adapter, render.json
#     and calibration.json into vlm/default_models/$NAME ($PACKAGE=0 skips it);
#  6. scripts/dev_eval.sh on the four development recordings, YASA beside
#     (bench/results/dev/$NAME), and python -m vlm.calibrate ece (ECE before/after).
# Nothing here reads a real recording before step 6. Steps whose outputs exist are not
# redone; an interrupted training continues from its last checkpoint (--resume auto).
#
#   SMOKE=1 scripts/train_default_stager.sh                  # toy size (CI)
#
# SMOKE=1 runs every step at toy size, to check that the script still works: two
# 10-minute nights, 168x56 images, 3 training steps, one 10-minute calibration night,
# dev_eval.sh's smoke mode; RUN defaults to out/smoke/default/$NAME and everything,
# the package ($DEST, default $RUN/package) and the dev results included, stays under it.
set -euo pipefail
cd "$(dirname "$0")/.."

NAME=${NAME:-eeg_only}
CONFIG=${CONFIG:-vlm/configs/default_eeg_only.yaml}
CHANNELS=${CHANNELS:-EEG C4-M1}
# the EEG and, below it, its fast band (a derived row of the same channel: engine.montage)
MONTAGE=${MONTAGE:-eeg=C4-M1,fast=C4-M1}
NIGHTS=${NIGHTS:-12}
HOURS=${HOURS:-8}
FS=${FS:-random}
CONTEXT=${CONTEXT:-1}
VARIABILITY=${VARIABILITY:-wide}
SEED=${SEED:-0}
CAL_NIGHTS=${CAL_NIGHTS:-2}
CAL_HOURS=${CAL_HOURS:-4}
PACKAGE=${PACKAGE:-1}
SMOKE=${SMOKE:-0}
SIZE=$(python -c "import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))['image_size'])" "$CONFIG")
# the config's base model: tiny:qwen2vl, or a directory built by `psgvlm tiny-model`
BASE_MODEL=$(python -c "import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))['model'])" "$CONFIG")
train_extra=()
render_extra=()
# NORMALISE=eeg=15: recording-level amplitude normalisation (psgvlm render --normalise)
[ -z "${NORMALISE:-}" ] || render_extra=(--normalise "$NORMALISE")
# SHORT_EPOCHS=0.5: that fraction of epochs drawn as a 20-s scorer epoch is shown
# (psgvlm render --short-epochs); the model then reads 20-s grids with blank flanks
[ -z "${SHORT_EPOCHS:-}" ] || render_extra+=(--short-epochs "$SHORT_EPOCHS")
if [ "$SMOKE" != 0 ]; then
    RUN=${RUN:-out/smoke/default/$NAME}
    DEST=${DEST:-$RUN/package}
    NIGHTS=2 HOURS=0.17 CAL_NIGHTS=1 CAL_HOURS=0.17 SIZE=168x56
    train_extra=(--image_size "$SIZE" --max_steps 3 --save_steps 2 --logging_steps 1
        --warmup_steps 0 --per_device_train_batch_size 2 --shuffle_buffer 8)
    DEV_OUT=${DEV_OUT:-$RUN/dev-eval}  # dev_eval.sh's smoke mode, its report kept under $RUN
    RESULTS=${RESULTS:-$RUN/results}
fi
RUN=${RUN:-out/default/$NAME}
DEST=${DEST:-vlm/default_models/$NAME}
DEV_OUT=${DEV_OUT:-out/dev/eval/$NAME}  # dev_eval.sh's full report
RESULTS=${RESULTS:-bench/results/dev/$NAME}  # and the files it copies (committed)
export OMP_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false
mkdir -p "$RUN"
TIMINGS="$RUN/timings.tsv"
printf "run\t%s\n" "$(date -Is)" >> "$TIMINGS"
. scripts/lib/timing.sh

if [ ! -f "$RUN/nights/.complete" ]; then
    step synth psgvlm synth --nights "$NIGHTS" --hours "$HOURS" --fs "$FS" \
        --variability "$VARIABILITY" --channels "$CHANNELS" --seed "$SEED" --out "$RUN/nights"
    touch "$RUN/nights/.complete"
fi
[ -f "$RUN/train/adapter/adapter_config.json" ] ||
    step render psgvlm render "synthetic:$RUN/nights" --out "$RUN/shards" --montage "$MONTAGE" \
    --size "$SIZE" --context "$CONTEXT" --split 1,0,0 --workers 2 --no-progress "${render_extra[@]}"
if [ ! -f "$RUN/train/adapter/adapter_config.json" ]; then  # a finished run is kept
    step train accelerate launch --cpu --num_processes 1 --num_cpu_threads_per_process 1 \
        --mixed_precision no vlm/train.py --config "$CONFIG" --resume auto --seed "$SEED" \
        --train_shards "$RUN/shards/train-*.tar" --output_dir "$RUN/train" "${train_extra[@]}"
fi
if [ ! -f "$RUN/calibration-nights/.complete" ]; then
    step synth-cal psgvlm synth --nights "$CAL_NIGHTS" --hours "$CAL_HOURS" --fs "$FS" \
        --variability "$VARIABILITY" --channels "$CHANNELS" --seed 900000 \
        --out "$RUN/calibration-nights"
    touch "$RUN/calibration-nights/.complete"
fi
[ -f "$RUN/train/adapter/calibration.json" ] ||
    step calibrate python -m vlm.calibrate fit --model "$BASE_MODEL" \
        --adapter "$RUN/train/adapter" --nights "$RUN/calibration-nights"
# the input range of the out-of-distribution caveat: from the training nights themselves
# (every sampling rate drawn), not from the two calibration nights
step reference python -m vlm.calibrate reference --adapter "$RUN/train/adapter" \
    --nights "$RUN/nights"
MODEL=$BASE_MODEL
ADAPTER=$RUN/train/adapter
if [ "$PACKAGE" != 0 ]; then
    BASE=$(python -c "from vlm.model import resolve_model_id; from vlm.tiny import parse_image_size; print(resolve_model_id('$BASE_MODEL', parse_image_size('$SIZE')))")
    rm -rf "$DEST/base" "$DEST/adapter"
    mkdir -p "$DEST/base" "$DEST/adapter"
    cp "$BASE"/*.json "$BASE"/*.jinja "$BASE"/model.safetensors "$DEST/base/"
    cp "$ADAPTER"/adapter_config.json "$ADAPTER"/adapter_model.safetensors \
        "$ADAPTER"/render.json "$ADAPTER"/calibration.json "$DEST/adapter/"
    cp "$CONFIG" "$DEST/adapter/training_config.yaml"
    python - "$DEST" <<'PY'  # the adapter names its shipped base, not this machine's cache
import json, sys
path = f"{sys.argv[1]}/adapter/adapter_config.json"
config = json.load(open(path))
config["base_model_name_or_path"] = f"{sys.argv[1]}/base"
open(path, "w").write(json.dumps(config, indent=2, sort_keys=True) + "\n")
PY
    MODEL=$DEST/base
    ADAPTER=$DEST/adapter
fi
step dev-eval env MODEL="$MODEL" OUT="$DEV_OUT" RESULTS="$RESULTS" SMOKE="$SMOKE" \
    scripts/dev_eval.sh "$ADAPTER" "$NAME"
python -m vlm.calibrate ece --adapter "$ADAPTER" --calibrated-input \
    --out "$RESULTS/calibration.json" "$DEV_OUT/predictions.csv"
cp "$RUN/train/adapter/calibration.json" "$RESULTS/calibration_fit.json"
