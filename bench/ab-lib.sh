# Shared by the alternated A/B scripts (`seqwrite-ab.sh`, `create-unlink-ab.sh`): one fresh
# `shoal up` per run in a temp dir under $WORK, stopped by its PID, unmounted and removed on
# exit, also on failure or Ctrl-C. Source it after setting WORK_PREFIX; it sets WORK.
#
#   up BIN LABEL     starts `BIN up` on a fresh mount: sets MNT (the mount) and RUN_DIR
#   down             stops it and removes its dir
[ "$(id -u)" -eq 0 ] || { echo "run as root (FUSE mounts)" >&2; exit 1; }
UP_TIMEOUT=${UP_TIMEOUT:-60}
WORK=$(mktemp -d "/tmp/${WORK_PREFIX:?}.XXXXXX")
PID=
MNT=
RUN_DIR=
is_mounted() { awk -v m="$1" '$2==m {f=1} END {exit !f}' /proc/self/mounts; }
stop() {
    if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then
        kill -INT "$PID" 2>/dev/null || true
        for _ in $(seq 1 50); do kill -0 "$PID" 2>/dev/null || break; sleep 0.2; done
        kill -KILL "$PID" 2>/dev/null || true
    fi
    PID=
    if [ -n "$MNT" ] && is_mounted "$MNT"; then umount -l "$MNT" || true; fi
}
cleanup() { stop; rm -rf "$WORK"; }
trap cleanup EXIT INT TERM
up() {
    local bin=$1 label=$2
    RUN_DIR=$(mktemp -d "$WORK/run.XXXX"); MNT=$RUN_DIR/mnt; mkdir -p "$MNT"
    "$bin" up "$MNT" --state "$RUN_DIR/state" > "$RUN_DIR/up.log" 2>&1 &
    PID=$!
    for _ in $(seq 1 $((UP_TIMEOUT * 5))); do is_mounted "$MNT" && break; sleep 0.2; done
    is_mounted "$MNT" || { echo "$label: not mounted within ${UP_TIMEOUT}s" >&2; tail -20 "$RUN_DIR/up.log" >&2; exit 1; }
}
down() { stop; rm -rf "$RUN_DIR"; }
