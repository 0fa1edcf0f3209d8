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
#
# The image size comes from the config's image_size (the tiny model is built for it).
# Outputs under $RUN: nights/ (EDF), shards/, train/ (adapter, log.jsonl), eval/
# (metrics.json, metrics.md, predictions.csv, confusion*.png), timings.tsv.
set -euo pipefail
cd "$(dirname "$0")/.."

CONFIG=${CONFIG:-vlm/configs/synth_eeg_only.yaml}
RUN=${RUN:-out/synth_eeg_only}
NIGHTS=${NIGHTS:-12}
HOURS=${HOURS:-8}
PRERAU=${PRERAU:-../shared/data/prerau}
CONTEXT=${CONTEXT:-1}
SEED=${SEED:-0}  # first synthetic subject's seed, and the training seed
SMOOTH=${SMOOTH:-hmm}
EVAL=${EVAL:-1}  # 0: stop after training
SIZE=$(python -c "import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))['image_size'])" "$CONFIG")
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
step render psgvlm render "synthetic:$RUN/nights" --out "$RUN/shards" --montage eeg=C4-M1 \
    --size "$SIZE" --context "$CONTEXT" --split 1,0,0 --workers 2 --no-progress
step train accelerate launch --cpu --num_processes 1 --num_cpu_threads_per_process 1 \
    --mixed_precision no vlm/train.py --config "$CONFIG" --resume auto --seed "$SEED" \
    --train_shards "$RUN/shards/train-*.tar" --output_dir "$RUN/train"
if [ "$EVAL" != 0 ]; then
    step eval psgvlm eval "prerau:$PRERAU" --model tiny:qwen2vl --adapter "$RUN/train/adapter" \
        --peers yasa --smooth "$SMOOTH" --out "$RUN/eval"
    cat "$RUN/eval/metrics.md"
fi
