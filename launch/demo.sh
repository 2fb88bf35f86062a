#!/usr/bin/env bash
# The README's main job, end to end on a fresh machine: install, build, start the coordinator, submit
# configs/fashion_mnist_small.json as a 2-rank job (real Fashion-MNIST from Debian's package), follow
# it to the end, and print accuracy, throughput and memory from the run record. The job is traced
# (output.trace): its merged timeline is at GET /v1/jobs/{id}/trace and linked from the job page.
set -euo pipefail
cd "$(dirname "$0")/.."
launch/setup.sh
launch/build.sh
RANKS=${RANKS:-2}
state=$(mktemp -d /tmp/resnext_demo.XXXXXX)
coord=build/coordinator/resnext_coordinator
$coord serve --listen 127.0.0.1:0 --state-dir "$state" --slots "$RANKS" > "$state/coordinator.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do [ -s "$state/port" ] && break; kill -0 $pid || { cat "$state/coordinator.log"; exit 1; }; sleep 0.1; done
url="http://127.0.0.1:$(cat "$state/port")"
echo "coordinator on $url (state in $state); dashboard: $url/"
id=$($coord submit fashion_mnist_small --ranks "$RANKS" --url "$url" --set output.trace=true --json "$@" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
echo "submitted job $id; following it (Ctrl-C stops following, not the job)"
$coord status "$id" --watch --url "$url"
$coord status "$id" --url "$url" --json > "$state/job.json"
$coord logs "$id" --tail 5 --url "$url"
curl -sf -o "$state/trace.json" "$url/v1/jobs/$id/trace" && echo "timeline: $state/trace.json (open in https://ui.perfetto.dev or chrome://tracing)"
python3 - "$state/job.json" <<'PY'
import json, sys
job = json.load(open(sys.argv[1]))
print(f"\njob {job['id']}: {job['state']}, test accuracy {job.get('test_accuracy')}")
for r in job.get("ranks") or []:
    print(f"  rank {r['rank']}: {r['images_per_sec']:.1f} images/s, peak memory {r['peak_memory_bytes'] / 2**20:.0f} MiB")
sys.exit(0 if job["state"] == "succeeded" else 1)
PY
