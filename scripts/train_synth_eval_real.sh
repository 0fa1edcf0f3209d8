#!/usr/bin/env bash
# Real EEG from synthetic training: render synthetic nights (engine.synth) as one central
# EEG strip (the target epoch with one neighbour on each side), train the tiny Qwen2-VL on them (CPU, one process, one thread), then stage
# the real, AASM-scored Prerau segment with it, YASA beside it on the same epochs. The
# model's raw per-epoch stages are reported, and beside them the same probabilities decoded
# by a stage HMM counted on synthetic hypnograms only (psgvlm eval --smooth hmm).
#
#   scripts/train_synth_eval_real.sh                 # defaults below; ~8 min on 2 cores
#   SEED=100 RUN=out/seed100 scripts/train_synth_eval_real.sh   # other subjects and seed
#   PRERAU=/path/to/prerau NIGHTS=12 CONTEXT=0 RUN=out/ctx0 \
#       CONFIG=my_448x112.yaml scripts/train_synth_eval_real.sh   # a variant
#   EVAL=0 scripts/train_synth_eval_real.sh          # train only (an ensemble member)
#   SMOKE=1 scripts/train_synth_eval_real.sh         # toy size (CI): see below
#
# The image size comes from the config's image_size (the tiny model is built for it).
# Outputs under $RUN: nights/ (EDF), shards/, train/ (adapter, log.jsonl), eval/
# (metrics.json, metrics.md, predictions.csv, confusion*.png), timings.tsv.
# Steps whose outputs exist are not redone: a finished training (train/adapter) is kept
# (delete train/ to train again); an interrupted one continues from its last checkpoint
# (--resume auto).
#
# SMOKE=1 runs every step at toy size, to check that the script still works: two
# 10-minute nights, 168x56 images, 3 training steps, the first 10 Prerau epochs (or, when
# $PRERAU is absent, a 10-minute held-out synthetic night, said on stderr), RUN
# out/smoke/synth_eeg_only by default.
set -euo pipefail
cd "$(dirname "$0")/.."

SMOKE=${SMOKE:-0}
CONFIG=${CONFIG:-vlm/configs/synth_eeg_only.yaml}
NIGHTS=${NIGHTS:-12}
HOURS=${HOURS:-8}
PRERAU=${PRERAU:-../shared/data/prerau}
CONTEXT=${CONTEXT:-1}
SEED=${SEED:-0}  # first synthetic subject's seed, and the training seed
SMOOTH=${SMOOTH:-hmm}
EVAL=${EVAL:-1}  # 0: stop after training
SIZE=$(python -c "import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))['image_size'])" "$CONFIG")
train_extra=()
eval_extra=()
if [ "$SMOKE" != 0 ]; then
    RUN=${RUN:-out/smoke/synth_eeg_only}
    NIGHTS=2 HOURS=0.17 SIZE=168x56
    train_extra=(--image_size "$SIZE" --max_steps 3 --save_steps 2 --logging_steps 1
        --warmup_steps 0 --per_device_train_batch_size 2 --shuffle_buffer 8)
    eval_extra=(--epochs 0:10)
fi
RUN=${RUN:-out/synth_eeg_only}
export OMP_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false

mkdir -p "$RUN"
printf "run\t%s\n" "$(date -Is)" >> "$RUN/timings.tsv"
TIMINGS="$RUN/timings.tsv"
. scripts/lib/timing.sh  # step NAME COMMAND...: run and record the wall time

if [ ! -f "$RUN/nights/.complete" ]; then
    step synth psgvlm synth --nights "$NIGHTS" --hours "$HOURS" --fs 100 \
        --channels "EEG C4-M1" --seed "$SEED" --out "$RUN/nights"
    touch "$RUN/nights/.complete"
fi
if [ ! -f "$RUN/train/adapter/adapter_config.json" ]; then  # a finished run is kept
    step render psgvlm render "synthetic:$RUN/nights" --out "$RUN/shards" --montage eeg=C4-M1 \
        --size "$SIZE" --context "$CONTEXT" --split 1,0,0 --workers 2 --no-progress
    step train accelerate launch --cpu --num_processes 1 --num_cpu_threads_per_process 1 \
        --mixed_precision no vlm/train.py --config "$CONFIG" --resume auto --seed "$SEED" \
        --train_shards "$RUN/shards/train-*.tar" --output_dir "$RUN/train" "${train_extra[@]}"
fi
if [ "$EVAL" != 0 ]; then
    recording=("prerau:$PRERAU")
    if [ "$SMOKE" != 0 ] && [ ! -d "$PRERAU" ]; then
        smoke_note "no Prerau data at $PRERAU: staging a held-out synthetic night instead"
        [ -f "$RUN/heldout/synth-1000-PSG.edf" ] ||
            step synth-heldout psgvlm synth --nights 1 --hours "$HOURS" --fs 100 \
                --channels "EEG C4-M1" --seed 1000 --out "$RUN/heldout"
        recording=("$RUN/heldout/synth-1000-PSG.edf"
            --hypnogram "$RUN/heldout/synth-1000-Hypnogram.edf")
    fi
    step eval psgvlm eval "${recording[@]}" --model tiny:qwen2vl --adapter "$RUN/train/adapter" \
        --peers yasa --smooth "$SMOOTH" --no-progress "${eval_extra[@]}" --out "$RUN/eval"
    cat "$RUN/eval/metrics.md"
fi
