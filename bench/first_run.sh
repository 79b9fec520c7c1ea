#!/usr/bin/env bash
# First `make run` on a fresh clone: seconds from `make run` to the first 200 on http://127.0.0.1:8787/.
#   bash bench/first_run.sh            # clones this checkout's HEAD into a temporary directory, empty edgefn cache
# pip's own download cache is the machine's (a truly fresh machine also downloads the wheels).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/edgefn-first-run-XXXXXX)
git clone -q "$repo" "$work/clone"
export XDG_CACHE_HOME="$work/cache" EDGEFN_CACHE_DIR=
unset EDGEFN_CACHE_DIR
cd "$work/clone"
start=$(date +%s.%N)
setsid make run > "$work/make-run.log" 2>&1 &
pid=$!
trap 'kill -INT -- -$pid 2>/dev/null || true; sleep 3; kill -KILL -- -$pid 2>/dev/null || true' EXIT
for _ in $(seq 1 2400); do
  if [ "$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8787/ || true)" = 200 ]; then
    echo "first 200 after $(echo "$(date +%s.%N) - $start" | bc) s (log: $work/make-run.log)"
    exit 0
  fi
  sleep 0.25
done
echo "no 200 within 600 s (log: $work/make-run.log)" >&2
exit 1
