# Sourced by dev_eval.sh and eval_each.sh: `smoke_night DIR [PSGVLM SYNTH OPTION...]` writes,
# once, the 10-minute synthetic night (seed 100: DIR/synth-0100-PSG.edf and its hypnogram)
# that a smoke run (SMOKE=1) evaluates where $DATA lacks the development recordings, and
# says so on stderr.
smoke_night() {
    local dir=$1
    shift
    echo "smoke: no development recordings in $DATA: evaluating a synthetic night instead" >&2
    [ -f "$dir/synth-0100-PSG.edf" ] ||
        psgvlm synth --nights 1 --hours 0.17 --seed 100 "$@" --out "$dir"
}
