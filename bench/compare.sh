#!/usr/bin/env bash
# Benchmarks side by side, in one run: Shoal (`shoal up`), a tmpfs baseline, the FUSE ceiling
# (fuse-mirror of a directory on that tmpfs) and, where the peer scripts work, GlusterFS and
# MooseFS; all measured by `shoal bench` into one table + JSON. Everything it starts it also
# stops (by PID), unmounts and removes on exit, also on failure or Ctrl-C.
#
#   sudo bench/compare.sh
#
# Environment knobs:
#   QUICK=1            short run (shoal bench --quick)
#   PEERS="glusterfs moosefs"   peers to include; PEERS= (empty) or PEERS=0 skips them
#   PEERS_DIR=dir      where NAME-up.sh / NAME-down.sh live (default /work/shared/peers)
#   SHOAL=0            leave Shoal out (measures fuse-ceiling first; to test the harness)
#   OUT=file.json      JSON output (default target/bench-compare/compare-<UTC time>.json;
#                      the table is written next to it as .md)
#   TMPFS_SIZE=4g      size of the tmpfs baseline (holds the 1 GiB test file of one target)
#   SHOAL_UP_TIMEOUT=60  seconds `shoal up` gets to mount
#   NO_BUILD=1         use the binaries already in target/release
#   SHOAL_BIN=path     the `shoal` binary to run (default target/release/shoal)
#   KEEP_LOGS_ON_ERROR=1  on failure keep the temp dir with all logs (else their tails are printed)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
SHOAL_BIN=${SHOAL_BIN:-$TARGET/release/shoal}
MIRROR_BIN=$TARGET/release/fuse-mirror
PEERS_DIR=${PEERS_DIR:-/work/shared/peers}
PEERS=${PEERS-glusterfs moosefs}
[ "$PEERS" = 0 ] && PEERS=
SHOAL=${SHOAL:-1}
TMPFS_SIZE=${TMPFS_SIZE:-4g}
SHOAL_UP_TIMEOUT=${SHOAL_UP_TIMEOUT:-60}
OUT=${OUT:-$TARGET/bench-compare/compare-$(date -u +%Y%m%dT%H%M%SZ).json}

log() { printf '[compare %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
is_mounted() { awk -v m="$1" '$2==m {f=1} END {exit !f}' /proc/self/mounts; }
alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }
# wait_for SECONDS CMD...: poll CMD every 0.2 s, at most SECONDS.
wait_for() {
    local t=$1 i; shift
    for ((i = 0; i < t * 5; i++)); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
    "$@" >/dev/null 2>&1
}
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN {printf "%.1f", b - a}'; }

[ "$(id -u)" -eq 0 ] || die "run as root (it mounts a tmpfs and FUSE file systems, drops caches)"
[ -e /dev/fuse ] || die "/dev/fuse is missing"

WORK=
SHOAL_PID=
MIRROR_PID=
TMPFS_MOUNTED=0
STARTED_PEERS=()

# stop_pid PID NAME: SIGINT, then SIGTERM, then SIGKILL, each after a bounded wait; only PID.
stop_pid() {
    local pid=$1 name=$2 sig
    for sig in INT TERM KILL; do
        alive "$pid" || break
        log "stopping $name (pid $pid) with SIG$sig"
        kill -s "$sig" "$pid" 2>/dev/null || true
        wait_for 30 eval '! alive '"$pid" || true
    done
    wait "$pid" 2>/dev/null || true
}

unmount() {
    local m=$1
    is_mounted "$m" || return 0
    fusermount3 -u "$m" 2>/dev/null || umount "$m" 2>/dev/null || true
    is_mounted "$m" && { log "unmount $m busy, detaching"; umount -l "$m" 2>/dev/null || true; }
    ! is_mounted "$m"
}

cleanup() {
    local rc=$? p
    trap - EXIT INT TERM
    set +e
    [ -n "$SHOAL_PID" ] && stop_pid "$SHOAL_PID" "shoal up"
    [ -n "$WORK" ] && unmount "$WORK/shoal-mnt"
    if [ -n "$MIRROR_PID" ]; then
        unmount "$WORK/mirror-mnt"      # fuse-mirror exits when its mount goes away
        wait_for 10 eval '! alive '"$MIRROR_PID"
        stop_pid "$MIRROR_PID" "fuse-mirror"
    fi
    [ "$TMPFS_MOUNTED" = 1 ] && { umount "$WORK/tmpfs" || umount -l "$WORK/tmpfs"; }
    for p in "${STARTED_PEERS[@]}"; do
        log "bringing $p down"
        "$PEERS_DIR/$p-down.sh" >"$WORK/$p-down.log" 2>&1 || log "$p-down.sh failed (see $WORK/$p-down.log)"
    done
    if [ -n "$WORK" ]; then
        # never rm -rf through a mount that is still there
        if awk -v w="$WORK/" 'index($2, w) == 1 {f=1} END {exit !f}' /proc/self/mounts; then
            log "something under $WORK is still mounted; leaving it in place"
        elif [ "$rc" -ne 0 ] && [ -n "${KEEP_LOGS_ON_ERROR:-}" ]; then
            log "failed (status $rc); logs kept in $WORK"
        else
            if [ "$rc" -ne 0 ]; then
                for p in "$WORK"/*.log; do
                    [ -s "$p" ] && { log "--- tail of $(basename "$p")"; tail -n 15 "$p" >&2; }
                done
                log "removing $WORK (KEEP_LOGS_ON_ERROR=1 keeps it)"
            fi
            rm -rf "$WORK"
        fi
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# 1. build
if [ -z "${NO_BUILD:-}" ]; then
    log "building shoal and fuse-mirror (release)"
    (cd "$ROOT" && cargo build --release -p tools -p fuse-mirror) \
        || die "cargo build --release -p tools -p fuse-mirror failed"
fi
[ -x "$SHOAL_BIN" ] || die "$SHOAL_BIN is missing (build failed?)"
[ -x "$MIRROR_BIN" ] || die "$MIRROR_BIN is missing (build failed?)"

WORK=$(mktemp -d /tmp/shoal-compare.XXXXXX)
mkdir -p "$WORK"/{shoal-mnt,shoal-state,tmpfs,mirror-mnt}
DIRS=()
LABELS=()

# 2. Shoal
if [ "$SHOAL" != 0 ]; then
    log "starting shoal up on $WORK/shoal-mnt (state $WORK/shoal-state)"
    t0=$(now)
    "$SHOAL_BIN" up "$WORK/shoal-mnt" --state "$WORK/shoal-state" >"$WORK/shoal-up.log" 2>&1 &
    SHOAL_PID=$!
    for ((i = 0; i < SHOAL_UP_TIMEOUT * 5; i++)); do
        mountpoint -q "$WORK/shoal-mnt" && break
        if ! alive "$SHOAL_PID"; then
            rc=0; wait "$SHOAL_PID" || rc=$?; SHOAL_PID=
            die "shoal up exited (status $rc) before mounting; log: $WORK/shoal-up.log"
        fi
        sleep 0.2
    done
    mountpoint -q "$WORK/shoal-mnt" \
        || die "shoal up did not mount $WORK/shoal-mnt within ${SHOAL_UP_TIMEOUT}s"
    timeout 20 stat -f "$WORK/shoal-mnt" >/dev/null || die "the Shoal mount does not answer statfs"
    log "shoal up: mounted in $(since "$t0")s"
    DIRS+=("$WORK/shoal-mnt"); LABELS+=(shoal)
fi

# 3. tmpfs baseline and the FUSE ceiling (fuse-mirror of a directory on that tmpfs)
mount -t tmpfs -o "size=$TMPFS_SIZE" shoal-compare "$WORK/tmpfs"
TMPFS_MOUNTED=1
mkdir -p "$WORK/tmpfs/plain" "$WORK/tmpfs/mirror-backing"
"$MIRROR_BIN" "$WORK/tmpfs/mirror-backing" "$WORK/mirror-mnt" >"$WORK/mirror.log" 2>&1 &
MIRROR_PID=$!
wait_for 10 is_mounted "$WORK/mirror-mnt" \
    || die "fuse-mirror did not mount: $(cat "$WORK/mirror.log")"
log "tmpfs at $WORK/tmpfs/plain, fuse-mirror of $WORK/tmpfs/mirror-backing at $WORK/mirror-mnt"
DIRS+=("$WORK/tmpfs/plain" "$WORK/mirror-mnt"); LABELS+=(tmpfs fuse-ceiling)

# 4. peers, where their scripts exist and come up
for p in $PEERS; do
    up=$PEERS_DIR/$p-up.sh down=$PEERS_DIR/$p-down.sh
    if [ ! -x "$up" ] || [ ! -x "$down" ]; then
        log "skipping $p: no $up / $down"
        continue
    fi
    if is_mounted "${PEERS_MNT:-/mnt/peers}/$p"; then
        already=1   # someone else's cluster: use it, leave it up afterwards
    else
        already=0
        STARTED_PEERS+=("$p")   # before up, so a half-started cluster is torn down too
    fi
    log "bringing $p up (may install packages)"
    t0=$(now)
    if mnt=$(timeout 900 "$up" 2>"$WORK/$p-up.log" | tail -n 1) && [ -d "$mnt" ] && is_mounted "$mnt"; then
        log "$p up at $mnt in $(since "$t0")s$([ $already = 1 ] && echo ' (was already up; left up)')"
        DIRS+=("$mnt"); LABELS+=("$p")
    else
        log "skipping $p: $up failed after $(since "$t0")s (log: $WORK/$p-up.log)"
        tail -n 5 "$WORK/$p-up.log" >&2 || true
    fi
done

# 5. the benchmark
mkdir -p "$(dirname "$OUT")"
args=("${DIRS[0]}")
for d in "${DIRS[@]:1}"; do args+=(--baseline "$d"); done
labels=$(IFS=,; echo "${LABELS[*]}")
[ "${QUICK:-0}" = 1 ] && args+=(--quick)
log "running: shoal bench ${args[*]} --labels $labels --json $OUT"
"$SHOAL_BIN" bench "${args[@]}" --labels "$labels" --json "$OUT" | tee "${OUT%.json}.md"
log "results: $OUT and ${OUT%.json}.md"
