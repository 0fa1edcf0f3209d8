# Sourced by the scripts in scripts/: `step NAME COMMAND...` runs COMMAND and appends
# "NAME<TAB>seconds" to the file named by $TIMINGS (and prints it). A failed COMMAND
# stops the script with its exit status, also where `set -e` does not apply (after `||`,
# as in `[ -f DONE ] || step NAME ...`).
step() {
    local name=$1 t0 t1 rc=0
    shift
    t0=$(date +%s)
    "$@" || rc=$?
    t1=$(date +%s)
    if [ "$rc" != 0 ]; then
        echo "step $name failed (exit status $rc): $*" >&2
        exit "$rc"
    fi
    printf '%s\t%d\n' "$name" $((t1 - t0)) | tee -a "$TIMINGS"
}

# `smoke_note TEXT`: say what a smoke run (SMOKE=1) does differently, on stderr.
smoke_note() {
    echo "smoke: $*" >&2
}
