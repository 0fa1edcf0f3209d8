# Sourced by the scripts in scripts/: `step NAME COMMAND...` runs COMMAND and appends
# "NAME<TAB>seconds" to the file named by $TIMINGS (and prints it).
step() {
    local name=$1 t0 t1
    shift
    t0=$(date +%s)
    "$@"
    t1=$(date +%s)
    printf '%s\t%d\n' "$name" $((t1 - t0)) | tee -a "$TIMINGS"
}
