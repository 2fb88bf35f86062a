#!/bin/bash
# Coordinator GET-path benchmark: start resnext_coordinator (Release build), submit one long-running job
# (the stand-in worker from tests/coordinator), then hammer GET /v1/jobs/{id} with wrk.
#   bench/coordinator/run_wrk.sh [BUILD_DIR]        (default: build-coord next to this repo's root)
# env: WRK_THREADS (2), WRK_CONNECTIONS (64), WRK_DURATION (10s), SERVER_THREADS (2)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=${1:-$ROOT/build-coord}
BIN=$BUILD/coordinator/resnext_coordinator
[ -x "$BIN" ] || { echo "no $BIN; build it: ninja -C $BUILD resnext_coordinator" >&2; exit 2; }
command -v wrk >/dev/null || { echo "wrk not installed" >&2; exit 2; }
STATE=$(mktemp -d /tmp/rx_coord_bench_XXXXXX)
"$BIN" serve --listen 127.0.0.1:0 --state-dir "$STATE" --slots 2 --threads "${SERVER_THREADS:-2}" \
  --worker "$ROOT/tests/coordinator/fake_worker.sh" --cancel-grace-s 2 --log-level warn 2>"$STATE/coordinator.log" &
CPID=$!
ID=""
cleanup() {
  if [ -n "$ID" ] && [ -n "${PORT:-}" ]; then
    curl -s -o /dev/null -X POST "http://127.0.0.1:$PORT/v1/jobs/$ID/cancel" || true
    for _ in $(seq 100); do
      curl -s "http://127.0.0.1:$PORT/v1/jobs/$ID" | grep -q '"state":"cancelled"' && break
      sleep 0.1
    done
  fi
  kill "$CPID" 2>/dev/null || true
  wait "$CPID" 2>/dev/null || true
  rm -rf "$STATE"
}
trap cleanup EXIT

for _ in $(seq 200); do [ -s "$STATE/port" ] && break; sleep 0.05; done  # poll with a 10 s deadline
PORT=$(cat "$STATE/port")
ID=$(curl -sf -X POST -H 'Content-Type: application/json' "http://127.0.0.1:$PORT/v1/jobs" \
  -d '{"name":"bench","ranks":2,"config":"fashion_mnist_small","overrides":{"training.epochs":3}}' |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
for _ in $(seq 200); do
  curl -s "http://127.0.0.1:$PORT/v1/jobs/$ID" | grep -q '"step":5' && break  # running and reported
  sleep 0.05
done
echo "job $ID: $(curl -s "http://127.0.0.1:$PORT/v1/jobs/$ID" | head -c 200)..."
CMD="wrk -t${WRK_THREADS:-2} -c${WRK_CONNECTIONS:-64} -d${WRK_DURATION:-10s} --latency http://127.0.0.1:$PORT/v1/jobs/$ID"
echo "+ $CMD"
OUT=$($CMD)
echo "$OUT"
RPS=$(echo "$OUT" | awk '/Requests\/sec/ {print $2}')
P99=$(echo "$OUT" | awk '$1 == "99%" {print $2}')
echo "RESULT req/s=$RPS p99=$P99"
