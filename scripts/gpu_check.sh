#!/usr/bin/env bash
# The GPU check in one command (issue 20): native CUDA tests, `bench render --device
# cuda` and EDF -> shards on the device, Qwen2-VL-2B and LLaVA-1.5-7B built from their
# configs with random weights (LoRA / QLoRA training, label scoring). At most 8 minutes;
# writes bench/results/<machine>/gpu-check.json and gpu-check.md (git commit, device, date).
#
#   scripts/gpu_check.sh                 # on a GPU machine
#   scripts/gpu_check.sh --cpu-smoke     # the same steps at toy size on the CPU (< 1 min)
#   SMOKE=1 scripts/gpu_check.sh         # the same as --cpu-smoke (as in the other scripts)
#   scripts/gpu_check.sh --out DIR --skip llava
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -z "${VIRTUAL_ENV:-}" && -x .venv/bin/python ]]; then
  PYTHON=.venv/bin/python
else
  PYTHON=${PYTHON:-python}
fi
SMOKE=${SMOKE:-0}
if [[ "$SMOKE" != 0 ]]; then
  set -- --cpu-smoke "$@"
fi
limit=480
for arg in "$@"; do
  [[ "$arg" == "--cpu-smoke" ]] && limit=120
done
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
exec timeout --kill-after=15 "$limit" "$PYTHON" scripts/gpu_check.py --budget-s $((limit - 30)) "$@"
