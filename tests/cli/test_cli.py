#!/usr/bin/env python3
"""The command line as a user meets it, against the real coordinator (real HTTP, real mpirun, the
stand-in worker of tests/coordinator):
  - every command and subcommand of resnext_coordinator and resnext_worker answers --help with its
    usage on stdout and exit 0;
  - `status ID --watch` into a pipe prints one plain line per change (no escape codes), then a summary;
  - `status --watch` on a terminal (a pty) redraws one line per active job in place (cursor-up), with
    a bar, epoch/step, loss, accuracy, images/s, and ends with a summary once both are cancelled;
  - `status ID --json` is still the server's JSON."""
import argparse
import json
import os
import pty
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from coordlib import Coordinator, wait_for  # tests/python, on PYTHONPATH (CTest)

COORD_COMMANDS = ["serve", "submit", "list", "status", "logs", "cancel"]
WORKER_COMMANDS = [[], ["train"], ["describe"], ["devices"]]


def check_help(coordinator, worker):
    cases = [[coordinator, "--help"], [coordinator, "-h"]] + [[coordinator, c, "--help"] for c in COORD_COMMANDS]
    cases += [[coordinator, "status", "abc", "--watch", "-h"]]
    cases += [[worker] + c + ["--help"] for c in WORKER_COMMANDS]
    for argv in cases:
        p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=30)
        assert p.returncode == 0, f"{argv}: exit {p.returncode}\n{p.stderr}"
        assert p.stdout.startswith("usage:"), f"{argv}: no usage on stdout: {p.stdout!r}"
        name = argv[1] if len(argv) > 2 and not argv[1].startswith("-") else None
        if name:
            assert name in p.stdout.split("\n")[0], f"{argv}: usage is not {name}'s: {p.stdout!r}"
    p = subprocess.run([coordinator, "nosuch", "--help"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
    assert p.returncode == 2, "an unknown command with --help must still be a usage error"
    return len(cases)


def submit(c, name, epochs):
    body = {"name": name, "ranks": 1, "config": "fashion_mnist_small",
            "overrides": {"training.epochs": epochs, "data.max_train_samples": 512}}
    status, j = c.json("POST", "/v1/jobs", body)
    assert status == 201, (status, j)
    return j["id"]


def reported(c, jid):
    """The stand-in worker's progress report has arrived."""
    return c.job(jid)["progress"]["step"] == 5


def check_pipe(coordinator, c):
    jid = submit(c, "cli-pipe", 3)  # reports epoch 1/3 step 5/10, then runs until cancelled
    wait_for("the progress report", lambda: reported(c, jid), timeout=60)
    p = subprocess.Popen([coordinator, "status", jid, "--watch", "--interval-ms", "100", "--url", c.url],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = p.stdout.readline()  # blocks until the first poll; bounded by the communicate timeout below
    status, _ = c.json("POST", f"/v1/jobs/{jid}/cancel", {})
    assert status == 202, status
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, (p.returncode, err)
    lines = [first.rstrip("\n")] + out.splitlines()
    assert not any("\x1b" in l for l in lines), f"escape codes in pipe output: {lines!r}"
    assert re.match(rf"{jid} running +\[###\.{{17}}\]  17% epoch 1/3 step 5/10 loss 0\.5000 200 img/s ETA \S+$",
                    lines[0]), lines[0]
    body = lines[:lines.index("summary:")]
    assert len(body) == len(set(l.split(" ETA ")[0] for l in body)), f"a line repeated without a change: {body!r}"
    assert body[-1].startswith(f"{jid} cancelled"), body
    assert lines[lines.index("summary:") + 1].startswith(f"  {jid} cli-pipe: cancelled"), lines
    return lines


def check_tty(coordinator, c):
    ids = [submit(c, f"cli-tty-{i}", 3) for i in range(2)]
    for jid in ids:
        wait_for("the progress report", lambda: reported(c, jid), timeout=60)
    master, slave = pty.openpty()
    p = subprocess.Popen([coordinator, "status", "--watch", "--interval-ms", "100", "--url", c.url],
                         stdout=slave, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    os.close(slave)
    buf = b""

    def read_until(pattern, timeout=60):
        nonlocal buf
        deadline = time.monotonic() + timeout
        while not re.search(pattern, buf):
            left = deadline - time.monotonic()
            assert left > 0, f"timed out waiting for {pattern!r} in {buf[-2000:]!r}"
            r, _, _ = select.select([master], [], [], left)
            if r:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the child closed the terminal
                    chunk = b""
                assert chunk, f"terminal closed before {pattern!r}: {buf[-2000:]!r}"
                buf += chunk
    try:
        read_until(rb"\x1b\[2A")  # the second frame moves back over both lines
        for jid in ids:
            status, _ = c.json("POST", f"/v1/jobs/{jid}/cancel", {})
            assert status == 202, status
        read_until(rb"summary:.*\n.*\n.*\n", timeout=60)
        assert p.wait(timeout=30) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(timeout=10)
        os.close(master)
    text = buf.decode()
    frames = text.split("\x1b[2A")
    assert len(frames) >= 2, text
    for jid in ids:
        assert re.search(rf"\r\x1b\[2K{jid} running +\[###\.+\]  17% epoch 1/3 step 5/10 loss 0\.5000 200 img/s", text), text
        assert re.search(rf"\r\x1b\[2K{jid} cancelled", frames[-1]), frames[-1]
        assert re.search(rf"  {jid} cli-tty-\d: cancelled", text), text
    return len(frames)


def check_json(coordinator, c, jid):
    p = subprocess.run([coordinator, "status", jid, "--json", "--url", c.url], stdout=subprocess.PIPE, text=True,
                       timeout=30)
    assert p.returncode == 0
    assert json.loads(p.stdout) == c.job(jid), "status --json is not the server's JSON"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--coordinator", required=True)
    ap.add_argument("--worker", required=True)
    ap.add_argument("--fake-worker", required=True)
    a = ap.parse_args()
    if not os.access(a.worker, os.X_OK):
        print(f"test_cli: worker {a.worker} is not built", file=sys.stderr)
        return 1
    n = check_help(a.coordinator, a.worker)
    print(f"test_cli: --help ok for {n} invocations")
    state = tempfile.mkdtemp(prefix="rx_cli_")
    c = Coordinator(a.coordinator, state, ["--slots", "2", "--worker", a.fake_worker, "--cancel-grace-s", "2"])
    ok = False
    try:
        lines = check_pipe(a.coordinator, c)
        print(f"test_cli: pipe ok ({len(lines)} lines): {lines[0]!r}")
        frames = check_tty(a.coordinator, c)
        print(f"test_cli: tty ok ({frames} frames)")
        status, jobs = c.json("GET", "/v1/jobs")
        check_json(a.coordinator, c, jobs["jobs"][0]["id"])
        print("test_cli: ok")
        ok = True
        return 0
    finally:
        c.kill(signal.SIGTERM)
        if ok:
            shutil.rmtree(state, ignore_errors=True)
        else:
            print(f"test_cli: state kept in {state}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
