#!/usr/bin/env python3
"""End to end with the REAL resnext_worker: a 2-rank fashion_mnist_small job made tiny by overrides,
submitted over HTTP, polled until it finishes; then test_accuracy and both ranks' images_per_sec and
peak_memory_bytes are read back from GET /v1/jobs/{id}, and each rank's thread count (its slot's share
of the CPUs) from the run record. Label: e2e."""
import argparse
import os
import shutil
import signal
import sys
import tempfile

from coordlib import Coordinator  # tests/python, on PYTHONPATH (CTest)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--coordinator", required=True)
    ap.add_argument("--worker", required=True)
    ap.add_argument("--timeout", type=float, default=800)
    a = ap.parse_args()
    if not os.access(a.worker, os.X_OK):
        print(f"test_e2e: worker {a.worker} is not built", file=sys.stderr)
        return 1
    os.environ.pop("OMP_NUM_THREADS", None)  # the coordinator would pass it on instead of its slot share
    state = tempfile.mkdtemp(prefix="rx_coord_e2e_")
    c = Coordinator(a.coordinator, state, ["--slots", "2", "--worker", a.worker])
    ok = False
    try:
        body = {"name": "e2e", "ranks": 2, "config": "fashion_mnist_small",
                "overrides": {"training.epochs": 1, "data.max_train_samples": 512, "data.max_test_samples": 256}}
        status, j = c.json("POST", "/v1/jobs", body)
        assert status == 201, (status, j)
        jid = j["id"]
        j = c.wait_state(jid, ["succeeded", "failed", "cancelled"], timeout=a.timeout)
        if j["state"] != "succeeded":
            _, _, logs = c.request("GET", f"/v1/jobs/{jid}/logs?tail=40")
            raise AssertionError(f"job ended {j['state']}: {j['error']}\n--- worker.log tail ---\n{logs}")
        acc = j["test_accuracy"]
        assert isinstance(acc, (int, float)) and 0.0 <= acc <= 1.0, j
        ranks = sorted(j["ranks"], key=lambda r: r["rank"])
        assert [r["rank"] for r in ranks] == [0, 1], j
        for r in ranks:
            assert isinstance(r["images_per_sec"], (int, float)) and r["images_per_sec"] > 0, r
            assert isinstance(r["peak_memory_bytes"], int) and r["peak_memory_bytes"] > 0, r
        status, res = c.json("GET", f"/v1/jobs/{jid}/result")
        assert status == 200 and res.get("world_size") == 2, (status, res)
        # [Slot threads]: 2 slots share this test's CPUs; the launcher says so through OMP_NUM_THREADS.
        share = max(1, len(os.sched_getaffinity(0)) // 2)
        assert [r["threads"] for r in res["ranks"]] == [share, share], res["ranks"]
        _, _, logs = c.request("GET", f"/v1/jobs/{jid}/logs?tail=200")
        assert f"threads/rank {share} (OMP_NUM_THREADS)" in logs, logs[-2000:]
        status, m = c.json("GET", f"/v1/jobs/{jid}/metrics")
        assert status == 200 and len(m["points"]) >= 1, m
        print(f"test_e2e: ok: test_accuracy={acc:.4f}, images/s={[r['images_per_sec'] for r in ranks]}, "
              f"peak bytes={[r['peak_memory_bytes'] for r in ranks]}")

        # The same job with data.source "coordinator": each rank trains and evaluates on the static
        # block the coordinator ships it (checksummed), as on a node without a copy of the dataset.
        body["name"] = "e2e-shipped"
        body["overrides"] = dict(body["overrides"], **{"data.source": "coordinator", "data.shard_mode": "static",
                                                       "data.max_train_samples": 500, "data.max_test_samples": 255})
        status, j = c.json("POST", "/v1/jobs", body)
        assert status == 201, (status, j)
        j = c.wait_state(j["id"], ["succeeded", "failed", "cancelled"], timeout=a.timeout)
        if j["state"] != "succeeded":
            _, _, logs = c.request("GET", f"/v1/jobs/{j['id']}/logs?tail=40")
            raise AssertionError(f"shipped-shard job ended {j['state']}: {j['error']}\n{logs}")
        status, res = c.json("GET", f"/v1/jobs/{j['id']}/result")
        assert status == 200, (status, res)
        assert res["dataset"] == {"train_samples": 500, "test_samples": 255, "steps_per_epoch": 4}, res["dataset"]
        print(f"test_e2e: ok: shipped shards, test_accuracy={j['test_accuracy']:.4f}")
        ok = True
        return 0
    finally:
        c.kill(signal.SIGTERM)
        if ok:
            shutil.rmtree(state, ignore_errors=True)
        else:
            print(f"test_e2e: state kept in {state}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
