#!/usr/bin/env python3
"""Worker fault scenarios with real processes (one CTest test each; issue 14, worker side).

usage: fault_e2e.py SCENARIO   with RX_SOURCE_DIR / RX_BINARY_DIR set by CTest.
  hang          kill -STOP one rank of a real 2-rank run (hang_timeout_s 5): the hang report names
                exactly that rank within 5 s + margin, the job fails, no rank is left behind; bare
                mpirun, then again under a coordinator (HTTP server on 127.0.0.1) that must receive it.
  hang_default  the same with default settings (60 s); run by hand for bench/README.md, not in CTest.
  report_retry  the coordinator URL is down when the run finishes and comes up later (a real HTTP
                server on 127.0.0.1): the retried result report arrives, the worker exits 0; and with
                a coordinator that never comes up, a finished run still exits 0 with result.json.
Every wait on a process has a deadline; failures print what was seen.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

from rxtest import MPIEXEC, check, source_dir, worker_path  # tests/python, on PYTHONPATH (CTest)
from rxtest import process_alive as alive
from rxtest import read_text as read
from rxtest import run_record as record

WORKER = worker_path()
CONFIG = os.path.join(source_dir(), "configs", "fashion_mnist_small.json")


def start_worker(np, out, sets, log_path, extra=(), env=None):
    cmd = ([] if np == 0 else MPIEXEC + ["-np", str(np)]) + [WORKER, "train", "--config", CONFIG, "--out", out]
    for s in sets:
        cmd += ["--set", s]
    cmd += list(extra)
    log = open(log_path, "w")
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, **(env or {})))



def poll(cond, seconds, what, proc=None, log_path=None):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        if proc is not None and proc.poll() is not None:
            check(False, f"the worker exited ({proc.returncode}) while waiting for {what}", read(log_path))
        time.sleep(0.05)
    check(False, f"timed out after {seconds} s waiting for {what}", read(log_path) if log_path else "")


def culprit(h):
    """The ranks a hang report blames. Usually the stopped rank never entered the stuck collective
    (missing); when the stop lands just after it posted its part, every rank entered and the report
    names it as stalled ([Stalled] in common/comm/hang/hang_report.cpp)."""
    if h["missing"]:
        return h["missing"] if h["entered"] == [r for r in range(len(h["ranks"])) if r not in h["missing"]] else None
    return h["stalled"]


def hang(tmp):
    # A hang timeout that cannot fire before the collective's own timeout is a config error naming the key.
    p = subprocess.run([WORKER, "train", "--config", CONFIG, "--out", os.path.join(tmp, "bad"), "--set",
                        "distributed.hang_timeout_s=300"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True, timeout=120)
    check(p.returncode == 2 and "distributed.hang_timeout_s: must be less than distributed.timeout_s" in p.stdout,
          f"hang_timeout_s >= timeout_s: rc={p.returncode}", p.stdout)
    short = ["distributed.hang_timeout_s=5", "distributed.timeout_s=120"]
    _stop_one_rank(os.path.join(tmp, "bare"), 5, short)  # bare mpirun, no coordinator
    # Under a coordinator (a real HTTP server on 127.0.0.1), the report also arrives as {"type": "hang"}.
    got, port = os.path.join(tmp, "received.jsonl"), free_port()
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(port), "s3cret", got])
    try:
        _stop_one_rank(os.path.join(tmp, "coord"), 5, short,
                       ["--coordinator", f"http://127.0.0.1:{port}", "--job-id", "j1"], {"RX_JOB_SECRET": "s3cret"})
    finally:
        server.kill()
        server.wait(timeout=30)
    hangs = [b for b in map(json.loads, read(got).splitlines()) if b["type"] == "hang"]
    check(len(hangs) == 1 and culprit(hangs[0]["report"]) == [1], f"coordinator got hang reports: {hangs}")


def hang_default(tmp):
    """Not a CTest test: the bench/README.md figure with default settings (hang_timeout_s 60)."""
    _stop_one_rank(tmp, 60, [])


def _stop_one_rank(tmp, timeout_s, extra_sets, extra_args=(), env=None):
    os.makedirs(tmp, exist_ok=True)
    out, log_path = os.path.join(tmp, "run"), os.path.join(tmp, "worker.log")
    sets = ["data.max_train_samples=4096", "data.max_test_samples=256", "training.epochs=4",
            "training.log_every_steps=4"] + extra_sets
    p = start_worker(2, out, sets, log_path, extra_args, env)
    stopped = None
    try:
        hb = os.path.join(out, "heartbeat", "rank-1.json")

        def training_step():
            try:
                s = json.loads(read(hb))
            except ValueError:
                return None
            return s if s.get("step", -1) >= 3 else None

        state = poll(training_step, 300, "rank 1 to reach step 3", p, log_path)
        stopped = state["pid"]
        os.kill(stopped, signal.SIGSTOP)
        t0 = time.monotonic()
        result = os.path.join(out, "result.json")
        poll(lambda: "hang" in read(result), timeout_s + 60, "the hang report in result.json", None, log_path)
        detect_s = time.monotonic() - t0
        rc = p.wait(timeout=120)
        end_s = time.monotonic() - t0
        gone = poll(lambda: not alive(stopped), 20, "the stopped rank to be gone", None, log_path)
        log = read(log_path)
        print(f"SIGSTOP -> hang report {detect_s:.1f} s, -> job exit {end_s:.1f} s (rc {rc})")
        check(rc != 0, "a hung job must fail", log)
        h = record(out)["hang"]
        check(culprit(h) == [1], f"report must name exactly rank 1: {h['message']}", log)
        check(h["ranks"][1]["pid"] == stopped, "the report names another process", log)
        check(h["ranks"][1]["process"] == "stopped", f"rank 1 not seen as stopped: {h['ranks'][1]}", log)
        check(record(out)["status"] == "failed", "result.json of a hung job must say failed")
        check("rank 1 (" in log and "hang: collective" in log, "the report is not in the job log", log)
        # The timeout + up to 2 heartbeat periods + an oversubscribed 2-core machine.
        check(detect_s < timeout_s + 10, f"hang report took {detect_s:.1f} s (hang_timeout_s {timeout_s})", log)
        check(end_s < timeout_s + 30, f"job took {end_s:.1f} s to end after the stop", log)
        check(gone, "stopped rank left behind")
    finally:
        if stopped and alive(stopped):
            os.kill(stopped, signal.SIGKILL)
        if p.poll() is None:
            p.kill()
            p.wait(timeout=30)


SERVER = r"""
import http.server, json, sys
port, secret, path = int(sys.argv[1]), sys.argv[2], sys.argv[3]
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        ok = self.path == "/v1/jobs/j1/reports" and self.headers.get("X-Job-Secret") == secret
        if ok:
            with open(path, "a") as f:
                f.write(body.decode() + "\n")
        self.send_response(200 if ok else 401)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")
    def log_message(self, *a):
        pass
http.server.HTTPServer(("127.0.0.1", port), H).serve_forever()
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def report_retry(tmp):
    sets = ["data.max_train_samples=512", "data.max_test_samples=256", "training.epochs=1",
            "training.log_every_steps=2"]
    env = {"RX_JOB_SECRET": "s3cret"}
    # 1. The coordinator never comes up: the finished run still succeeds, its result on disk.
    port = free_port()
    out, log_path = os.path.join(tmp, "giveup"), os.path.join(tmp, "giveup.log")
    p = start_worker(0, out, sets + ["report.retry_s=3"], log_path,
                     ["--coordinator", f"http://127.0.0.1:{port}", "--job-id", "j1"], env)
    rc = p.wait(timeout=300)
    log = read(log_path)
    check(rc == 0, f"an undeliverable report turned a finished run into exit {rc}", log)
    check("result report not delivered" in log, "the lost report is not logged", log)
    check(record(out)["status"] == "succeeded", "result.json missing or not succeeded", log)
    check(json.loads(read(os.path.join(out, "progress.json")))["type"] == "progress", "no progress.json", log)

    # 2. The coordinator comes up while the worker retries: the result arrives.
    port = free_port()
    out, log_path = os.path.join(tmp, "retry"), os.path.join(tmp, "retry.log")
    got = os.path.join(tmp, "received.jsonl")
    p = start_worker(0, out, sets + ["report.retry_s=120"], log_path,
                     ["--coordinator", f"http://127.0.0.1:{port}", "--job-id", "j1"], env)
    server = None
    try:
        poll(lambda: "result report attempt 1 failed" in read(log_path), 300, "a failed result report", p, log_path)
        server = subprocess.Popen([sys.executable, "-c", SERVER, str(port), "s3cret", got])
        rc = p.wait(timeout=120)
        log = read(log_path)
        check(rc == 0, f"worker exited {rc}", log)
        check("result report delivered on attempt" in log, "no retried delivery logged", log)
        bodies = [json.loads(line) for line in read(got).splitlines()]
        results = [b for b in bodies if b["type"] == "result"]
        check(len(results) == 1, f"coordinator got {len(results)} results", log)
        check(results[0]["record"]["final_test_accuracy"] == record(out)["final_test_accuracy"],
              "the delivered result differs from result.json", log)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(timeout=30)
        if server:
            server.kill()
            server.wait(timeout=30)


if __name__ == "__main__":
    scenario = sys.argv[1]
    with tempfile.TemporaryDirectory(prefix=f"rx_{scenario}_") as tmp:
        globals()[scenario](tmp)
    print(f"PASS: {scenario}")
