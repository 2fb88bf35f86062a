#!/usr/bin/env python3
"""GET /v1/jobs/{id} under wrk with and without a dashboard open (headless Chromium showing the job
page and the jobs table, each polling every 2 s): runs wrk without, with, and again without the
browser, and prints req/s and p99 of each, plus how many API requests the dashboard made meanwhile.
    bench/coordinator/dashboard_wrk.py BUILD_DIR [--duration 10s] [--connections 64]"""
import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Run by hand from any checkout, without CTest's PYTHONPATH: the tests' shared library folder
# (tests/python: coordlib, cdp), found from this script's place.
sys.path.insert(0, os.path.join(ROOT, "tests", "python"))
from cdp import Browser  # noqa: E402
from coordlib import Coordinator, wait_for  # noqa: E402


def wrk(url, a):
    out = subprocess.run(["wrk", "-t2", f"-c{a.connections}", f"-d{a.duration}", "--latency", url],
                         stdout=subprocess.PIPE, text=True, timeout=600).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1)
    return rps, p99


def metrics_requests(c):
    """API requests from the dashboard: the metrics and logs routes, which only the dashboard uses here."""
    _, _, text = c.request("GET", "/metrics")
    total = 0
    for line in text.splitlines():
        if line.startswith("rx_http_requests_total") and ("/metrics\"" in line or "/logs\"" in line) \
                and "{id}" in line:
            total += int(float(line.rsplit(" ", 1)[1]))
    return total


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("build")
    ap.add_argument("--duration", default="10s")
    ap.add_argument("--connections", type=int, default=64)
    a = ap.parse_args()
    state = tempfile.mkdtemp(prefix="rx_dash_bench_")
    c = Coordinator(os.path.join(a.build, "coordinator", "resnext_coordinator"), state,
                    ["--slots", "2", "--threads", "2", "--worker", os.path.join(ROOT, "tests/coordinator/fake_worker.sh"),
                     "--cancel-grace-s", "2", "--log-level", "warn"])
    b = None
    try:
        _, j = c.json("POST", "/v1/jobs", {"name": "bench", "ranks": 2, "config": "fashion_mnist_small",
                                           "overrides": {"training.epochs": 3}})
        jid = j["id"]
        wait_for("the job's progress report", lambda: c.job(jid)["progress"]["step"] == 5, timeout=60)
        url = f"{c.url}/v1/jobs/{jid}"
        rows = [("without dashboard", *wrk(url, a))]
        b = Browser(shutil.which("chromium") or "/usr/bin/chromium", os.path.join(state, "profile"),
                    os.path.join(state, "chromium.log"))
        b.open_tab()
        b.navigate(f"{c.url}/ui/job.html?id={jid}")
        b.wait("the job page", "window.rxPage && window.rxPage.renders > 0")
        before = metrics_requests(c)
        rows.append(("with dashboard open", *wrk(url, a)))
        dash = metrics_requests(c) - before
        assert not b.problems, b.problems
        b.close()
        b = None
        rows.append(("without dashboard", *wrk(url, a)))
        print(f"wrk -t2 -c{a.connections} -d{a.duration} --latency {url}")
        for name, rps, p99 in rows:
            print(f"RESULT {name:22s} req/s={rps:,.0f} p99={p99}")
        print(f"dashboard requests to .../metrics and .../logs during the 'with' run: {dash}")
        c.json("POST", f"/v1/jobs/{jid}/cancel", {})
        c.wait_state(jid, "cancelled", timeout=60)
        return 0
    finally:
        if b:
            b.close()
        c.kill(signal.SIGTERM)
        shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
