# Sourced by dev_eval.sh and eval_each.sh, the smoke mode (SMOKE=1) of an evaluation script:
#
#   extra=()
#   if [ "$SMOKE" != 0 ] && smoke_eval [PSGVLM SYNTH OPTION...]; then
#       ...evaluate $SMOKE_NIGHT/synth-0100-PSG.edf instead of the development recordings
#   fi
#
# `smoke_eval` sets the smoke defaults of OUT (out/smoke/dev/eval/$NAME) and RESULTS
# ($OUT/results, so that nothing is written under bench/) and adds `--epochs 0:10` to the
# array `extra`. Where $DATA lacks the development recordings it writes, once, a 10-minute
# synthetic night (seed 100) into SMOKE_NIGHT=$OUT/synthetic, says so on stderr and
# succeeds; otherwise it fails (the recordings are there: their first 10 epochs are used).
smoke_eval() {
    OUT=${OUT:-out/smoke/dev/eval/$NAME}
    RESULTS=${RESULTS:-$OUT/results}
    extra+=(--epochs 0:10)
    [ ! -d "$DATA/prerau" ] || [ ! -d "$DATA/dreams-dev" ] || return 1
    SMOKE_NIGHT=$OUT/synthetic
    echo "smoke: no development recordings in $DATA: evaluating a synthetic night instead" >&2
    [ -f "$SMOKE_NIGHT/synth-0100-PSG.edf" ] ||
        psgvlm synth --nights 1 --hours 0.17 --seed 100 "$@" --out "$SMOKE_NIGHT"
}
