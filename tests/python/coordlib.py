"""Helpers for the coordinator's black-box tests: start the real binary on a free port (it writes the
bound port to <state>/port), talk HTTP with urllib, and poll with deadlines (never sleep-as-sync).
Also the pieces the fault tests share (test_faults_matrix.py, test_faults_cancel.py): job submission,
heartbeats, the stand-in worker and their scenario runner, so that no test imports another.

In tests/python, which CTest puts on PYTHONPATH; by hand: PYTHONPATH=tests/python."""
import argparse
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

from rxtest import process_alive, read_text


def wait_for(what, fn, timeout=30.0, interval=0.05):
    """Polls fn() until it returns a truthy value; raises AssertionError naming `what` at the deadline."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


class Coordinator:
    def __init__(self, binary, state_dir, args, listen="127.0.0.1:0", env=None, preexec_fn=None, read_token=None):
        self.binary, self.state_dir, self.args, self.env = binary, state_dir, list(args), env
        self.read_token = read_token  # sent with GETs that name no Authorization (reads need a token)
        port_file = os.path.join(state_dir, "port")
        if os.path.exists(port_file):
            os.unlink(port_file)
        self.log = open(os.path.join(state_dir, "coordinator.log"), "ab")
        self.proc = subprocess.Popen([binary, "serve", "--listen", listen, "--state-dir", state_dir] + self.args,
                                     stdout=self.log, stderr=subprocess.STDOUT, env=env, preexec_fn=preexec_fn)

        def port():
            if self.proc.poll() is not None:
                raise AssertionError(f"coordinator exited with {self.proc.returncode}; see {state_dir}/coordinator.log")
            try:
                with open(port_file) as f:
                    return int(f.read().strip())
            except (FileNotFoundError, ValueError):
                return None
        self.port = wait_for("the coordinator's port file", port, timeout=20)
        self.url = f"http://127.0.0.1:{self.port}"

    def kill(self, sig=signal.SIGKILL):
        self.proc.send_signal(sig)
        rc = self.proc.wait(timeout=20)
        self.log.close()
        return rc

    def request(self, method, path, body=None, headers=None, raw=None):
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        headers = dict(headers or {})
        if self.read_token and method in ("GET", "HEAD") and "Authorization" not in headers:
            headers["Authorization"] = "Bearer " + self.read_token
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, dict(r.headers), r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read().decode()

    def json(self, method, path, body=None, headers=None):
        status, hdrs, text = self.request(method, path, body, headers)
        try:
            return status, json.loads(text) if text else None
        except ValueError:
            return status, text

    def job(self, job_id):
        status, j = self.json("GET", f"/v1/jobs/{job_id}")
        assert status == 200, (status, j)
        return j

    def wait_state(self, job_id, states, timeout=60):
        states = [states] if isinstance(states, str) else states
        return wait_for(f"job {job_id} in {states}",
                        lambda: (lambda j: j if j["state"] in states else None)(self.job(job_id)), timeout=timeout)

    def db_row(self, job_id):
        con = sqlite3.connect(os.path.join(self.state_dir, "jobs.db"), timeout=10)
        try:
            cur = con.execute("SELECT pid, pgid, state FROM jobs WHERE id=?", (job_id,))
            return cur.fetchone()
        finally:
            con.close()


def session_members(sid):
    """pids of live (non-zombie) processes in session `sid`."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        if fields[0] in ("Z", "X"):
            continue
        if int(fields[3]) == sid:
            out.append(int(d))
    return out


# The fault tests' shared pieces.
TERMINAL = ["succeeded", "failed", "cancelled"]
# The stand-in worker for jobs that must not train, found from this file's place (tests/python) so that
# running a test by hand needs no RX_SOURCE_DIR for it.
FAKE = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "coordinator",
                                     "fake_worker.sh"))
SMALL = {"training.epochs": 1, "data.max_train_samples": 2048, "data.max_test_samples": 256}


def submit(c, overrides, **extra):
    body = {"name": "matrix", "ranks": 2, "config": "fashion_mnist_small", "overrides": overrides}
    body.update(extra)
    status, j = c.json("POST", "/v1/jobs", body)
    assert status == 201, (status, j)
    return j["id"]


def heartbeat(state, jid, rank):
    try:
        return json.loads(read_text(os.path.join(state, "jobs", jid, "run", "heartbeat", f"rank-{rank}.json")))
    except (OSError, ValueError):
        return None


def gone_within(pgid, pids, seconds, what):
    """Waits until no process of session `pgid` and none of `pids` lives; returns the seconds it took."""
    t0 = time.monotonic()
    wait_for(what, lambda: not session_members(pgid) and not any(process_alive(p) for p in pids),
             timeout=seconds, interval=0.05)
    return time.monotonic() - t0


def fault_main(scenarios, where, name="test_faults_matrix"):
    """Runs the scenario named on the command line, where[name](args, state), in a fresh state folder
    (kept after a failure); returns the exit code for sys.exit. Lines start with `name`: the cancel
    tests keep "test_faults_matrix", being part of that matrix (bench/README.md greps for it)."""
    ap = argparse.ArgumentParser()
    ap.add_argument("scenario", choices=scenarios)
    ap.add_argument("--coordinator", required=True)
    ap.add_argument("--worker", required=True)
    a = ap.parse_args()
    if not os.access(a.worker, os.X_OK):
        print(f"{name}: worker {a.worker} is not built", file=sys.stderr)
        return 1
    state = tempfile.mkdtemp(prefix=f"rx_{name}_{a.scenario}_")
    ok = False
    t0 = time.monotonic()
    try:
        where[a.scenario](a, state)
        ok = True
        print(f"{name} {a.scenario}: {time.monotonic() - t0:.1f} s wall")
        return 0
    finally:
        if ok:
            shutil.rmtree(state, ignore_errors=True)
        else:
            print(f"{name}: state kept in {state}", file=sys.stderr)
