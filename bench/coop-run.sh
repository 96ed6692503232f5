#!/bin/bash
# One cooperative-caching measurement (issue 12): starts `shoal up MNT --clients 4` on a
# fresh state directory, runs `shoal bench coop` on its four mounts, stops the cluster.
# usage: bench/coop-run.sh SHOAL_BINARY TAG PATTERN   (PATTERN: round-robin | zipf)
# Writes /tmp/coopb-TAG-PATTERN.json (the bench's JSON) and .txt (its table). Root (FUSE,
# and the page-cache drop of the latency phase). Mounts under /tmp/cb-mnt-TAG*.
set -u
[ $# -eq 3 ] || { echo "usage: $0 SHOAL_BINARY TAG round-robin|zipf" >&2; exit 2; }
BIN=$1; TAG=$2; PAT=$3
M=/tmp/cb-mnt-$TAG; S=/tmp/cb-state-$TAG
rm -rf "$S"; mkdir -p "$M" "$S"
"$BIN" up --state "$S" --clients 4 "$M" > "/tmp/cb-$TAG-up.log" 2>&1 &
PID=$!
for _ in $(seq 240); do grep -q " $M-4 " /proc/self/mounts && break; sleep 0.5; done
grep -q " $M-4 " /proc/self/mounts || { echo "shoal up did not mount (see /tmp/cb-$TAG-up.log)" >&2; kill -INT $PID; exit 1; }
timeout 1500 "$BIN" bench coop "$M" "$M-2" "$M-3" "$M-4" --pattern "$PAT" \
    --json "/tmp/coopb-$TAG-$PAT.json" > "/tmp/coopb-$TAG-$PAT.txt" 2>&1
RC=$?
echo "$TAG $PAT: bench exited $RC; table in /tmp/coopb-$TAG-$PAT.txt"
kill -INT $PID
for _ in $(seq 60); do kill -0 $PID 2>/dev/null || break; sleep 0.5; done
kill -0 $PID 2>/dev/null && { kill -TERM $PID; sleep 2; }
for m in "$M" "$M-2" "$M-3" "$M-4"; do grep -q " $m " /proc/self/mounts && umount -l "$m"; done
rm -rf "$S"
rmdir "$M" "$M-2" "$M-3" "$M-4" 2>/dev/null
exit $RC
