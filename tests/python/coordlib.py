"""Helpers for the coordinator's black-box tests: start the real binary on a free port (it writes the
bound port to <state>/port), talk HTTP with urllib, and poll with deadlines (never sleep-as-sync)."""
import json
import os
import signal
import sqlite3
import subprocess
import time
import urllib.error
import urllib.request


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
