#!/bin/bash
# Stand-in for resnext_worker in the coordinator's API tests and bench: started by the coordinator
# under real mpirun (`fake_worker.sh train --config F --out D --job-id ID --coordinator URL`), it
# reports like rank 0 of the real worker, using RX_JOB_SECRET. What it does depends on
# training.epochs in the resolved config:
#   1: progress + result reports, exit 0       2: progress report, exit 3 (a failing job)
#   3: progress report, then run until SIGTERM  4: as 3 but ignores SIGTERM (needs SIGKILL)
set -u
while [ $# -gt 0 ]; do
  case "$1" in
    --config) CONFIG=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --job-id) JOB=$2; shift 2 ;;
    --coordinator) URL=$2; shift 2 ;;
    *) shift ;;
  esac
done
RANK=${OMPI_COMM_WORLD_RANK:-0}
EPOCHS=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["training"]["epochs"])' "$CONFIG")
echo "fake worker rank $RANK pid $$ job $JOB epochs $EPOCHS out $OUT"

post() {
  curl -sS -o /dev/null -w '%{http_code}' -X POST -H "X-Job-Secret: ${RX_JOB_SECRET:-}" \
    -H 'Content-Type: application/json' --data "$1" "$URL/v1/jobs/$JOB/reports"
}

SPID=""
if [ "$EPOCHS" = 4 ]; then
  trap 'echo "rank $RANK ignores SIGTERM"' TERM
else
  trap 'echo "rank $RANK got SIGTERM"; [ -n "$SPID" ] && kill $SPID 2>/dev/null; exit 143' TERM
fi

if [ "$RANK" = 0 ]; then
  code=$(post '{"type":"progress","epoch":1,"epochs":'"$EPOCHS"',"step":5,"steps_per_epoch":10,"loss":0.5,"test_accuracy":null,"ranks":[{"rank":0,"images_per_sec":100.5,"peak_memory_bytes":1000},{"rank":1,"images_per_sec":99.5,"peak_memory_bytes":1001}]}')
  echo "progress report -> HTTP $code"
fi
case "$EPOCHS" in
  1)
    if [ "$RANK" = 0 ]; then
      code=$(post '{"type":"result","record":{"final_test_accuracy":0.5,"best_test_accuracy":0.5,"world_size":2,"epochs":[],"ranks":[{"rank":0,"images_per_sec":100.5,"peak_memory_bytes":1000},{"rank":1,"images_per_sec":99.5,"peak_memory_bytes":1001}]}}')
      echo "result report -> HTTP $code"
    fi
    exit 0 ;;
  2) exit 3 ;;
esac
while true; do
  sleep 0.2 &
  SPID=$!
  wait $SPID
done
