#!/usr/bin/env python3
"""Black-box test of resnext_coordinator over real HTTP on loopback, with real mpirun and a stand-in
worker (fake_worker.sh). Covers submit/list/get, reports + secrets, cancel (process group gone),
SIGKILL + restart on the same state dir (jobs, metrics, reports, re-attach), limits, and the CLI."""
import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile

from coordlib import Coordinator, session_members, wait_for  # tests/python, on PYTHONPATH (CTest)

ALICE = {"Authorization": "Bearer atok"}
BOB = {"Authorization": "Bearer btok"}


def submit(c, epochs, ranks=2, headers=ALICE, extra=None):
    body = {"name": f"fake-e{epochs}", "ranks": ranks, "config": "fashion_mnist_small",
            "overrides": {"training.epochs": epochs, "data.max_train_samples": 512}}
    body.update(extra or {})
    status, j = c.json("POST", "/v1/jobs", body, headers)
    assert status == 201, (status, j)
    return j["id"]


def check(cond, msg):
    if not cond:
        raise AssertionError(msg)


def raw_http(port, payload):
    """Sends raw bytes and returns the status line (for limits urllib cannot express)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(payload)
        data = b""
        try:
            while b"\r\n" not in data:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
        except ConnectionResetError:
            pass
        return data.split(b"\r\n", 1)[0].decode(errors="replace")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--coordinator", required=True)
    ap.add_argument("--fake-worker", required=True)
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args()

    state = tempfile.mkdtemp(prefix="rx_coord_api_")
    with open(os.path.join(state, "tokens"), "w") as f:
        f.write("# name:token[ role]\nalice:atok\nbob:btok\nroot:rtok admin\n")
    args = ["--slots", "4", "--token-file", os.path.join(state, "tokens"), "--worker", a.fake_worker,
            "--cancel-grace-s", "2", "--idle-timeout-s", "5"]
    c = Coordinator(a.coordinator, state, args, read_token="rtok")
    try:
        check(c.request("GET", "/healthz")[0] == 200, "healthz")
        # Reads need a token too (issue 13): nothing but /healthz answers a stranger.
        c.read_token = None
        check(c.request("GET", "/v1/jobs")[0] == 401, "list without a token")
        check(c.request("GET", "/metrics")[0] == 401, "metrics without a token")
        check(c.request("GET", "/v1/jobs", headers={"Authorization": "bearer atok"})[0] == 200, "lower-case scheme")
        c.read_token = "rtok"

        # --- a job that succeeds, with progress + result reports through the real mpirun ---------
        ok = submit(c, 1)
        j = c.wait_state(ok, ["succeeded", "failed"])
        check(j["state"] == "succeeded", f"job {ok} should succeed: {j}")
        check(j["exit_code"] == 0 and j["world_size"] == 2 and j["owner"] == "alice", j)
        check(j["test_accuracy"] == 0.5 and len(j["ranks"]) == 2, j)
        check(j["ranks"][1]["peak_memory_bytes"] == 1001, j)
        check(j["started_at"].endswith("Z") and j["finished_at"].endswith("Z"), j)
        status, res = c.json("GET", f"/v1/jobs/{ok}/result")
        check(status == 200 and res["final_test_accuracy"] == 0.5, (status, res))
        status, m = c.json("GET", f"/v1/jobs/{ok}/metrics")
        check(status == 200 and len(m["points"]) == 1 and m["points"][0]["step"] == 5, m)
        status, _, logs = c.request("GET", f"/v1/jobs/{ok}/logs?tail=50")
        check(status == 200 and "fake worker rank 0" in logs and "fake worker rank 1" in logs, logs)
        check("progress report -> HTTP 202" in logs, logs)
        # The secret went through the environment, never the command line.
        with open(os.path.join(state, "jobs", ok, "config.json")) as f:
            check(json.load(f)["training"]["epochs"] == 1, "config.json written")

        # --- a failing job -------------------------------------------------------------------------
        bad = submit(c, 2)
        j = c.wait_state(bad, ["succeeded", "failed"])
        check(j["state"] == "failed" and j["exit_code"] not in (0, None) and j["error"], j)

        # --- reports need the job's secret ---------------------------------------------------------
        before = c.job(ok)
        prog = {"type": "progress", "epoch": 9, "epochs": 9, "step": 1, "steps_per_epoch": 1, "loss": 9.0,
                "ranks": []}
        check(c.json("POST", f"/v1/jobs/{ok}/reports", prog, {"X-Job-Secret": "nope"})[0] == 401, "wrong secret")
        check(c.json("POST", f"/v1/jobs/{ok}/reports", prog)[0] == 401, "missing secret")
        check(c.json("POST", f"/v1/jobs/{ok}/reports", prog, ALICE)[0] == 401, "user token is not a secret")
        check(c.job(ok) == before, "a refused report changed the job")
        check(len(c.json("GET", f"/v1/jobs/{ok}/metrics")[1]["points"]) == 1, "a refused report was stored")

        # --- cancel a running job: SIGTERM, and its whole process group/session is gone ------------
        run = submit(c, 3)
        j = c.wait_state(run, "running")
        wait_for("first progress report", lambda: c.job(run)["progress"]["step"] == 5)
        pid, pgid, _ = c.db_row(run)
        check(pid == pgid and pgid > 1, (pid, pgid))
        check(len(session_members(pgid)) >= 3, f"mpirun + 2 ranks expected in session {pgid}")
        check(c.json("POST", f"/v1/jobs/{run}/cancel", {}, BOB)[0] == 404, "bob cancels alice's job")
        check(c.json("POST", f"/v1/jobs/{run}/cancel", {})[0] == 401, "cancel without token")
        # A body is optional; one that is sent must be {} (the fuzzer found a NUL-laden one accepted).
        for raw, code, field in ((b"{}\0\0", "malformed_json", None), (b"[]", "invalid_body", None),
                                 (b'{"force":true}', "unknown_field", "force")):
            st, _, text = c.request("POST", f"/v1/jobs/{run}/cancel", headers=ALICE, raw=raw)
            err = json.loads(text)["error"]
            check(st == 400 and err["code"] == code and err["field"] == field, (raw, st, text))
        check(c.job(run)["state"] == "running", "a refused cancel stopped the job")
        st, _, text = c.request("POST", f"/v1/jobs/{run}/cancel", headers=ALICE, raw=b"")
        check(st == 202, f"cancel with no body: {st} {text}")
        j = c.wait_state(run, ["cancelled", "failed", "succeeded"], timeout=30)
        check(j["state"] == "cancelled", j)
        check(session_members(pgid) == [], f"processes left in session {pgid}: {session_members(pgid)}")
        try:
            os.killpg(pgid, 0)
            raise AssertionError(f"process group {pgid} still exists")
        except ProcessLookupError:
            pass

        # --- a job that ignores SIGTERM is SIGKILLed after the grace period ------------------------
        stub = submit(c, 4)
        c.wait_state(stub, "running")
        wait_for("stubborn job's report", lambda: c.job(stub)["progress"]["step"] == 5)
        _, spg, _ = c.db_row(stub)
        check(c.json("POST", f"/v1/jobs/{stub}/cancel", {}, ALICE)[0] == 202, "cancel stubborn")
        j = c.wait_state(stub, ["cancelled", "failed", "succeeded"], timeout=30)
        check(j["state"] == "cancelled" and session_members(spg) == [], (j, session_members(spg)))

        # --- idempotency, capacity, limits, routing over the wire ----------------------------------
        h = dict(ALICE, **{"Idempotency-Key": "abc"})
        s1, j1 = c.json("POST", "/v1/jobs", {"ranks": 1, "config": "fashion_mnist_small",
                                              "overrides": {"training.epochs": 1}}, h)
        s2, j2 = c.json("POST", "/v1/jobs", {"ranks": 1, "config": "fashion_mnist_small",
                                              "overrides": {"training.epochs": 1}}, h)
        check(s1 == 201 and s2 == 200 and j1["id"] == j2["id"], (s1, s2, j1, j2))
        c.wait_state(j1["id"], ["succeeded", "failed"])
        s, e = c.json("POST", "/v1/jobs", {"ranks": 5, "config": "fashion_mnist_small"}, ALICE)
        check(s == 400 and e["error"]["field"] == "ranks", (s, e))
        s, e = c.json("POST", "/v1/jobs", {"ranks": 1, "config": "fashion_mnist_small",
                                            "overrides": {"training.batch_size": -1}}, ALICE)
        check(s == 400 and e["error"]["field"] == "training.batch_size", (s, e))
        s, _, _ = c.request("POST", "/v1/jobs", raw=b"[" * 1000 + b"]" * 1000, headers=ALICE)
        check(s == 400, f"deep JSON -> {s}")
        check(c.request("GET", "/v1/nothing")[0] == 404, "404")
        s, hd, _ = c.request("DELETE", f"/v1/jobs/{ok}")
        check(s == 405 and hd.get("Allow") == "GET", (s, hd))
        big = b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer atok\r\nContent-Length: 2000000\r\n\r\n"
        check(" 413 " in raw_http(c.port, big), "413 for a 2 MB body")
        huge = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n"
        check(" 431 " in raw_http(c.port, huge), "431 for 9 KB of headers")
        status, _, prom = c.request("GET", "/metrics")
        check(status == 200 and 'rx_jobs{state="succeeded"}' in prom and "rx_slots" in prom, prom[:500])
        check('rx_http_requests_total{route="GET /v1/jobs/{id}",code="2xx"}' in prom, prom)
        # An idle connection is closed by the server's read deadline (5 s here).
        with socket.create_connection(("127.0.0.1", c.port), timeout=20) as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # never finishes the headers
            check(s.recv(100) == b"", "idle client should be dropped")

        # --- CLI ----------------------------------------------------------------------------------
        cli = [a.coordinator]
        r = subprocess.run(cli + ["list", "--url", c.url, "--json", "--token", "rtok"], capture_output=True, text=True)
        check(r.returncode == 0 and len(json.loads(r.stdout)["jobs"]) >= 5, r)
        r = subprocess.run(cli + ["list", "--url", c.url, "--token", "rtok"], capture_output=True, text=True)
        check(r.returncode == 0 and "STATE" in r.stdout and ok in r.stdout, r.stdout)
        r = subprocess.run(cli + ["status", ok, "--url", c.url, "--token", "atok"], capture_output=True, text=True)
        check(r.returncode == 0 and "succeeded" in r.stdout, r.stdout)
        r = subprocess.run(cli + ["submit", "fashion_mnist_small", "--url", c.url, "--token", "atok", "--ranks", "1",
                                  "--set", "training.epochs=1", "--json"], capture_output=True, text=True)
        check(r.returncode == 0, r)
        cli_job = json.loads(r.stdout)["id"]
        r = subprocess.run(cli + ["status", cli_job, "--url", c.url, "--watch", "--interval-ms", "100", "--json",
                                  "--token", "atok"],
                           capture_output=True, text=True, timeout=60)
        check(r.returncode == 0 and json.loads(r.stdout.strip().splitlines()[-1])["state"] == "succeeded", r.stdout)
        r = subprocess.run(cli + ["submit", "fashion_mnist_small", "--url", c.url, "--ranks", "1"],
                           capture_output=True, text=True)
        check(r.returncode == 1 and "401" in r.stderr, r)
        r = subprocess.run(cli + ["submit", "--ranks"], capture_output=True, text=True)
        check(r.returncode == 2 and "needs a value" in r.stderr and "terminate" not in r.stderr, r)
        r = subprocess.run(cli + ["frobnicate"], capture_output=True, text=True)
        check(r.returncode == 2, r)
        r = subprocess.run(cli + ["logs", ok, "--url", c.url, "--tail", "3", "--token", "atok"], capture_output=True,
                           text=True)
        check(r.returncode == 0 and len(r.stdout.splitlines()) == 3, r.stdout)

        # --- persistence: SIGKILL the coordinator while a job runs and another waits --------------
        live = submit(c, 3)
        c.wait_state(live, "running")
        wait_for("live job's report", lambda: c.job(live)["progress"]["step"] == 5)
        queued = submit(c, 1, ranks=4)  # 2 of 4 slots busy: waits
        check(c.job(queued)["state"] == "queued", c.job(queued))
        doomed = submit(c, 3, ranks=2, headers=BOB)  # queued behind `queued` (FIFO)
        check(c.job(doomed)["state"] == "queued", "FIFO: doomed waits behind queued")
        _, jobs_before = c.json("GET", "/v1/jobs?limit=1000")
        metrics_before = {j["id"]: c.json("GET", f"/v1/jobs/{j['id']}/metrics")[1] for j in jobs_before["jobs"]}
        _, live_pg, _ = c.db_row(live)
        port = c.port
        c.kill(signal.SIGKILL)
        check(len(session_members(live_pg)) >= 3, "the job must outlive its coordinator")
        c = Coordinator(a.coordinator, state, args, listen=f"127.0.0.1:{port}", read_token="rtok")
        _, jobs_after = c.json("GET", "/v1/jobs?limit=1000")
        check(jobs_after == jobs_before, "jobs changed across the restart")
        for jid, m in metrics_before.items():
            check(c.json("GET", f"/v1/jobs/{jid}/metrics")[1] == m, f"metrics of {jid} changed")
        check(c.job(live)["state"] == "running", "live job re-attached")
        status, res = c.json("GET", f"/v1/jobs/{ok}/result")
        check(status == 200 and res["final_test_accuracy"] == 0.5, "result survived")
        # The re-attached job is cancelled like any other; then the queue moves in FIFO order.
        check(c.json("POST", f"/v1/jobs/{live}/cancel", {}, ALICE)[0] == 202, "cancel re-attached")
        j = c.wait_state(live, ["cancelled", "failed", "succeeded"], timeout=30)
        check(j["state"] == "cancelled" and session_members(live_pg) == [], j)
        j = c.wait_state(queued, ["succeeded", "failed"], timeout=60)
        check(j["state"] == "succeeded", j)
        c.wait_state(doomed, "running")
        wait_for("doomed job's report", lambda: c.job(doomed)["progress"]["step"] == 5)
        _, doomed_pg, _ = c.db_row(doomed)

        # --- a job that dies while the coordinator is down is marked failed on restart ------------
        c.kill(signal.SIGKILL)
        for p in session_members(doomed_pg):
            os.kill(p, signal.SIGKILL)
        wait_for("doomed job's processes to die", lambda: session_members(doomed_pg) == [])
        c = Coordinator(a.coordinator, state, args, read_token="rtok")
        j = c.job(doomed)
        check(j["state"] == "failed" and "coordinator restarted" in (j["error"] or ""), j)

        # --- graceful shutdown -------------------------------------------------------------------
        rc = c.kill(signal.SIGTERM)
        check(rc == 0, f"SIGTERM exit code {rc}")
        print("test_api: all checks passed")
        return 0
    except Exception:
        try:
            with open(os.path.join(state, "coordinator.log"), "rb") as f:
                sys.stderr.write(f.read()[-4000:].decode(errors="replace"))
        except OSError:
            pass
        raise
    finally:
        if c.proc.poll() is None:
            c.kill(signal.SIGKILL)
        # Leave no job processes behind, whatever happened.
        import sqlite3
        try:
            con = sqlite3.connect(os.path.join(state, "jobs.db"))
            for (pg,) in con.execute("SELECT pgid FROM jobs WHERE pgid > 1"):
                for p in session_members(pg):
                    try:
                        os.kill(p, signal.SIGKILL)
                    except OSError:
                        pass
            con.close()
        except Exception:
            pass
        if not a.keep:
            shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
