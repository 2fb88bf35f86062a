#!/usr/bin/env python3
"""Issue 14's fault matrix, the cases test_faults_e2e.py does not cover, with the REAL coordinator, real
mpirun and (where training matters) the real resnext_worker on 2 ranks over loopback. One CTest test each:
  coordinator_kills    kill -9 the coordinator three times while a job runs, restarting it on the same state
                       folder and port each time: the job completes and is recorded as succeeded with the
                       accuracy of its run/result.json.
  idempotent_submits   200 concurrent submissions, each with its own Idempotency-Key, clients retrying until
                       acknowledged; the coordinator is killed (-9) and restarted once ~50 are acknowledged.
                       Afterwards every acknowledged job is there and each key maps to exactly one job. The
                       jobs run the stand-in fake_worker.sh (they must not train); all are cancelled at the end.
  corrupt_checkpoint   the newest checkpoint is corrupted while the job is stopped, then its ranks are killed:
                       the restart resumes from the previous verified checkpoint (attempt record and worker log).
  corrupt_data         a truncated train-images file: the job fails with an error naming the file; the
                       coordinator stays up and serves requests.
  fewer_ranks          min_ranks: a 2-rank job (min_ranks 1) relaunched on 1 rank when the coordinator comes back
                       with 1 slot; it resumes the 2-rank checkpoint and succeeds.
(Cancelling in each state: test_faults_cancel.py.)"""
import concurrent.futures
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

# coordlib and rxtest: tests/python, on PYTHONPATH (CTest).
from coordlib import (FAKE, SMALL, TERMINAL, Coordinator, fault_main, gone_within, heartbeat, session_members,
                      submit, wait_for)
from rxtest import read_text as read


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def coordinator_kills(a, state):
    port = free_port()
    args = ["--slots", "2", "--worker", a.worker]
    c = Coordinator(a.coordinator, state, args, listen=f"127.0.0.1:{port}")
    jid = submit(c, dict(SMALL, **{"training.log_every_steps": 2, "data.max_train_samples": 8192}))
    c.wait_state(jid, ["running"] + TERMINAL, timeout=60)
    t0 = time.monotonic()
    for k in range(3):
        # Each kill lands while the job trains: its rank 0 heartbeat advanced since the previous restart,
        # and its ranks are held (SIGSTOP) across the kill and the restart, so the job cannot finish in
        # between however fast the machine is (all ranks stop together: no hang to detect).
        step0 = (heartbeat(state, jid, 0) or {}).get("step", -1)
        wait_for("the job to make progress", lambda: (heartbeat(state, jid, 0) or {}).get("step", -1) > step0,
                 timeout=300, interval=0.05)
        pids = [hb["pid"] for hb in (heartbeat(state, jid, r) for r in (0, 1)) if hb]
        assert len(pids) == 2, pids
        for p in pids:
            os.kill(p, signal.SIGSTOP)
        try:
            assert c.job(jid)["state"] == "running", c.job(jid)
            c.kill(signal.SIGKILL)
            c = Coordinator(a.coordinator, state, args, listen=f"127.0.0.1:{port}")
            j = c.job(jid)
            assert j["state"] == "running", j
        finally:
            for p in pids:
                os.kill(p, signal.SIGCONT)
        print(f"test_faults_matrix coordinator_kills: kill {k + 1} at rank-0 step {step0 + 1}+, "
              f"restarted coordinator says {j['state']}")
    try:
        j = c.wait_state(jid, TERMINAL, timeout=600)
        assert j["state"] == "succeeded", j
        rec = json.loads(read(os.path.join(state, "jobs", jid, "run", "result.json")))
        assert j["test_accuracy"] == rec["final_test_accuracy"], (j["test_accuracy"], rec["final_test_accuracy"])
        status, res = c.json("GET", f"/v1/jobs/{jid}/result")
        assert status == 200 and res["config_sha256"] == rec["config_sha256"], status
        print(f"test_faults_matrix coordinator_kills: ok, 3 kills, job succeeded {time.monotonic() - t0:.1f} s "
              f"after the first, test_accuracy {j['test_accuracy']:.4f}")
    finally:
        c.kill(signal.SIGTERM)


def idempotent_submits(a, state, n=200):
    port = free_port()
    args = ["--slots", "2", "--worker", FAKE, "--max-queued-per-owner", "1000", "--threads", "4"]
    c = Coordinator(a.coordinator, state, args, listen=f"127.0.0.1:{port}")
    url = f"http://127.0.0.1:{port}/v1/jobs"
    acked, tries, lock = {}, [0], threading.Lock()
    deadline = time.monotonic() + 120

    def client(i):
        key = f"matrix-{i:03d}"
        # training.epochs 3: the stand-in worker runs until cancelled (only the first job gets slots).
        body = json.dumps({"name": key, "ranks": 2, "config": "fashion_mnist_small",
                           "overrides": {"training.epochs": 3}}).encode()
        while time.monotonic() < deadline:
            with lock:
                tries[0] += 1
            req = urllib.request.Request(url, data=body, method="POST",
                                         headers={"Content-Type": "application/json", "Idempotency-Key": key})
            try:
                with urllib.request.urlopen(req, timeout=10) as r:
                    if r.status in (200, 201):
                        with lock:
                            acked[key] = json.loads(r.read())["id"]
                        return
            except urllib.error.HTTPError as e:
                if e.code < 500:
                    raise AssertionError(f"{key}: HTTP {e.code}: {e.read()[:300]!r}")
            except (OSError, ValueError):
                pass  # refused / reset while the coordinator is down: retry
            time.sleep(0.05)  # a client's retry pause, not a synchronisation
        raise AssertionError(f"{key}: not acknowledged within the deadline")

    with concurrent.futures.ThreadPoolExecutor(max_workers=50) as pool:
        futures = [pool.submit(client, i) for i in range(n)]
        wait_for("50 acknowledged submissions", lambda: len(acked) >= 50, timeout=60, interval=0.01)
        c.kill(signal.SIGKILL)
        killed_at = len(acked)
        c = Coordinator(a.coordinator, state, args, listen=f"127.0.0.1:{port}")
        for f in futures:
            f.result(timeout=150)
    try:
        status, lst = c.json("GET", "/v1/jobs?limit=1000")
        assert status == 200, (status, lst)
        by_name = {}
        for j in lst["jobs"]:
            by_name.setdefault(j["name"], []).append(j["id"])
        dups = {k: v for k, v in by_name.items() if len(v) != 1}
        assert not dups, f"keys with more than one job: {dups}"
        lost = {k: v for k, v in acked.items() if by_name.get(k) != [v]}
        assert not lost, f"acknowledged jobs missing or answered with another id: {lost}"
        assert len(acked) == n and lst["total"] == n, (len(acked), lst["total"])
        print(f"test_faults_matrix idempotent_submits: {n} keys, coordinator killed after {killed_at} acks; "
              f"{tries[0]} requests in all; {n} jobs, none lost, none duplicated")
        running = [j for j in lst["jobs"] if j["state"] == "running"]
        pgids = [c.db_row(j["id"])[1] for j in running]
        for j in lst["jobs"]:
            st, _ = c.json("POST", f"/v1/jobs/{j['id']}/cancel", {})
            assert st in (200, 202), (j["id"], st)
        for j in lst["jobs"]:
            c.wait_state(j["id"], "cancelled", timeout=30)
        for pg in pgids:
            gone_within(pg, [], 10, f"the running stand-in job (pgid {pg}) to end")
    finally:
        c.kill(signal.SIGTERM)


def checkpoints(run):
    try:
        return sorted(int(f[5:-5]) for f in os.listdir(os.path.join(run, "checkpoints"))
                      if f.startswith("ckpt-") and f.endswith(".json"))
    except OSError:
        return []


def corrupt_checkpoint(a, state):
    c = Coordinator(a.coordinator, state, ["--slots", "2", "--worker", a.worker])
    try:
        jid = submit(c, dict(SMALL, **{"data.max_train_samples": 1024, "checkpoint.every_steps": 2,
                                       "checkpoint.every_epochs": 0, "checkpoint.keep": 3}), max_restarts=1)
        c.wait_state(jid, ["running"] + TERMINAL, timeout=60)
        pgid = c.db_row(jid)[1]
        run = os.path.join(state, "jobs", jid, "run")
        wait_for("two checkpoints", lambda: len(checkpoints(run)) >= 2, timeout=300, interval=0.05)
        ranks = [heartbeat(state, jid, r)["pid"] for r in (0, 1)]
        for p in ranks:  # frozen: rank 0 (the writer) cannot replace the checkpoint we corrupt
            os.kill(p, signal.SIGSTOP)
        steps = checkpoints(run)
        newest, previous = steps[-1], steps[-2]
        pt = os.path.join(run, "checkpoints", f"ckpt-{newest}.pt")
        with open(pt, "r+b") as f:  # same size, different bytes: only the checksum can tell
            f.seek(os.path.getsize(pt) // 2)
            f.write(b"\xde\xad\xbe\xef" * 16)
        for p in ranks:
            os.kill(p, signal.SIGKILL)
        wait_for("a new attempt", lambda: len(c.job(jid)["attempts"]) == 2, timeout=60, interval=0.05)
        assert not session_members(pgid), "processes of the killed attempt left behind"
        j = c.wait_state(jid, TERMINAL, timeout=600)
        assert j["state"] == "succeeded", j
        got = j["attempts"][1]["resumed_from"]
        assert got == f"checkpoints/ckpt-{previous}.pt", (got, newest, previous)
        log = read(os.path.join(state, "jobs", jid, "worker.log"))
        assert f"checkpoint at step {newest} is not usable" in log, log[-3000:]
        assert f"resuming from checkpoint {run}/checkpoints/ckpt-{previous}.json" in log, log[-3000:]
        print(f"test_faults_matrix corrupt_checkpoint: ckpt-{newest}.pt corrupted; attempt 1 resumed_from {got}, "
              f"worker skipped step {newest}; succeeded")
    finally:
        c.kill(signal.SIGTERM)


def corrupt_data(a, state):
    data = os.path.join(state, "data")
    shutil.copytree("/usr/share/datasets/fashion-mnist", data)
    bad = os.path.join(data, "train-images-idx3-ubyte.gz")
    with open(bad, "r+b") as f:
        f.truncate(os.path.getsize(bad) // 2)
    c = Coordinator(a.coordinator, state, ["--slots", "2", "--worker", a.worker, "--data-root", data,
                                           "--data-root", "/usr/share/datasets"])
    try:
        jid = submit(c, dict(SMALL, **{"data.path": data}))
        t0 = time.monotonic()
        j = c.wait_state(jid, TERMINAL, timeout=120)
        assert j["state"] == "failed", j
        assert bad in (j["error"] or ""), j["error"]
        assert bad in j["attempts"][0]["cause"], j["attempts"]
        assert c.proc.poll() is None, "the coordinator exited"
        for path in ["/healthz", "/v1/jobs", f"/v1/jobs/{jid}"]:
            st, _, _ = c.request("GET", path)
            assert st == 200, (path, st)
        st, j2 = c.json("POST", "/v1/jobs", {"ranks": 1, "config": "fashion_mnist_small",
                                             "overrides": {"training.epochs": 1}})
        assert st == 201, (st, j2)
        c.json("POST", f"/v1/jobs/{j2['id']}/cancel", {})
        c.wait_state(j2["id"], TERMINAL, timeout=30)
        print(f"test_faults_matrix corrupt_data: failed {time.monotonic() - t0:.1f} s after submission: "
              f"{j['error']}; coordinator still serves")
    finally:
        c.kill(signal.SIGTERM)


def fewer_ranks(a, state):
    """min_ranks: a 2-rank job (min_ranks 1, max_restarts 1) loses a rank while the coordinator is down, and
    the coordinator comes back with one slot (capacity lost): the relaunch runs on 1 rank, resuming the
    2-rank checkpoint (the worker's global shard plan resumes across world sizes), and succeeds."""
    c = Coordinator(a.coordinator, state, ["--slots", "2", "--worker", a.worker])
    # 16 steps and a heartbeat every 0.5 s (hang_timeout_s / 10): the job is seen past a checkpoint
    # long before it ends.
    overrides = dict(SMALL, **{"checkpoint.every_steps": 2, "checkpoint.every_epochs": 0,
                               "data.max_train_samples": 2048, "data.max_test_samples": 128,
                               "distributed.hang_timeout_s": 5})
    for bad in [0, 3, "1"]:
        st, err = c.json("POST", "/v1/jobs", {"ranks": 2, "config": "fashion_mnist_small", "min_ranks": bad})
        assert st == 400 and err["error"]["field"] == "min_ranks", (bad, st, err)
    # Submitted with the CLI, so its --min-ranks flag is exercised too.
    cli = [a.coordinator, "submit", "fashion_mnist_small", "--ranks", "2", "--min-ranks", "1", "--max-restarts",
           "1", "--json", "--url", c.url] + [x for k, v in overrides.items() for x in ("--set", f"{k}={v}")]
    out = subprocess.run(cli, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    jid = json.loads(out.stdout)["id"]
    assert c.job(jid)["min_ranks"] == 1, c.job(jid)
    c.wait_state(jid, ["running"] + TERMINAL, timeout=60)
    pgid = c.db_row(jid)[1]
    run = os.path.join(state, "jobs", jid, "run")

    def past_a_checkpoint():
        s = heartbeat(state, jid, 1)
        ck = checkpoints(run)
        return s if s and ck and s.get("step", -1) > ck[-1] and s.get("phase") != "checkpoint" else None
    t_start = time.monotonic()
    rank1 = wait_for("rank 1 past a checkpoint", past_a_checkpoint, timeout=300, interval=0.05)
    print(f"fewer_ranks: rank 1 at step {rank1['step']} after {time.monotonic() - t_start:.1f} s")
    c.kill(signal.SIGKILL)
    os.kill(rank1["pid"], signal.SIGKILL)
    wait_for("the job's processes to end", lambda: not session_members(pgid), timeout=30, interval=0.05)
    t0 = time.monotonic()
    c = Coordinator(a.coordinator, state, ["--slots", "1", "--worker", a.worker])
    try:
        wait_for("a new attempt", lambda: len(c.job(jid)["attempts"]) == 2, timeout=60, interval=0.05)
        relaunch_s = time.monotonic() - t0
        j = c.wait_state(jid, TERMINAL, timeout=600)
        print(f"fewer_ranks: the 1-rank attempt took {time.monotonic() - t0 - relaunch_s:.1f} s")
        assert j["state"] == "succeeded", j
        att = j["attempts"]
        assert [x["world_size"] for x in att] == [2, 1] and j["world_size"] == 1, att
        assert att[1]["resumed_from"].startswith("checkpoints/ckpt-"), att
        log = read(os.path.join(state, "jobs", jid, "worker.log"))
        assert "resuming from checkpoint" in log and "world 1 " in log, log[-3000:]
        _, res = c.json("GET", f"/v1/jobs/{jid}/result")
        assert res["world_size"] == 1, res.get("world_size")
        print(f"test_faults_matrix fewer_ranks: relaunched on 1 of 2 ranks {relaunch_s:.1f} s after the "
              f"coordinator came back with 1 slot, from {att[1]['resumed_from']}; succeeded, test_accuracy "
              f"{j['test_accuracy']:.4f}")
    finally:
        c.kill(signal.SIGTERM)


SCENARIOS = ["coordinator_kills", "idempotent_submits", "corrupt_checkpoint", "corrupt_data", "fewer_ranks"]


if __name__ == "__main__":
    sys.exit(fault_main(SCENARIOS, globals()))
