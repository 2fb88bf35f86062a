#!/usr/bin/env python3
"""The dashboard in a real browser (headless Chromium from Debian, driven over the DevTools protocol)
against a real coordinator running real 2-rank jobs on Fashion-MNIST:
  - the token is typed into the page and sent as a header (tokens configured), the jobs table lists
    the job, the state filter hides it, and its accuracy matches the API;
  - the job page's charts are non-empty and hold exactly the data of GET .../metrics and .../result;
  - a job submitted from the page (owned by the token's user) is cancelled from the page;
  - the traced job's page offers its trace (output.trace), downloaded with the token header, byte for
    byte GET .../trace, and lists its one attempt;
  - after a coordinator restart (now without tokens) the finished job renders from its stored record;
  - a job that fails on every attempt (max_restarts 1, a worker fault injected at step 0) shows both
    attempts with their causes;
  - no JavaScript exception, console error or error log entry on any page.
Screenshots of each page go to --out (the build folder). Exit 77 (ctest SKIP) only if chromium is absent."""
import argparse
import json
import os
import shutil
import signal
import sys
import tempfile

from cdp import Browser  # cdp, coordlib: tests/python, on PYTHONPATH (CTest)
from coordlib import Coordinator

TOKEN = "tok-alice-3f9c2a"
TERMINAL = ["succeeded", "failed", "cancelled"]


def chart(b, name):
    return b.eval(f"(() => {{ const c = window.rxCharts.{name}; return {{labels: c.data.labels, "
                  f"datasets: c.data.datasets.map(d => ({{label: d.label, data: d.data}}))}}; }})()")


def close(a, b, what):
    assert a is not None and b is not None and abs(a - b) <= 1e-9 * max(1.0, abs(a)), f"{what}: {a} != {b}"


def check_job_page(b, c, jid):
    """The charts of a finished job hold the metrics endpoint's and the run record's numbers."""
    b.wait("the job page to render the stored record", "window.rxPage && window.rxPage.result !== null && "
           "window.rxPage.renders > 0 && document.getElementById('state').textContent === 'succeeded'", timeout=30)
    _, metrics = c.json("GET", f"/v1/jobs/{jid}/metrics")
    _, result = c.json("GET", f"/v1/jobs/{jid}/result")
    steps = [p for p in metrics["points"] if not isinstance(p.get("test_accuracy"), (int, float))]
    assert steps, metrics
    want = [((p["epoch"] - 1) * p["steps_per_epoch"] + p["step"], p["loss"]) for p in steps]
    got = chart(b, "stepLoss")["datasets"][0]["data"]
    assert len(got) == len(want) and len(got) >= 2, (got, want)
    for g, (x, y) in zip(got, want):
        assert g["x"] == x, (g, x)
        close(g["y"], y, f"step-loss point at step {x}")
    ep = chart(b, "epoch")["datasets"]
    assert [d["label"] for d in ep] == ["train loss", "test accuracy"], ep
    assert len(ep[0]["data"]) == len(result["epochs"]) >= 1, (ep, result["epochs"])
    for g, e in zip(ep[0]["data"], result["epochs"]):
        assert g["x"] == e["epoch"], (g, e)
        close(g["y"], e["train_loss"], f"train loss of epoch {e['epoch']}")
    evals = [e for e in result["epochs"] if e["test_accuracy"] is not None]
    assert [(g["x"], g["y"]) for g in ep[1]["data"]] == [(e["epoch"], e["test_accuracy"]) for e in evals], ep
    lr = chart(b, "lr")["datasets"][0]["data"]
    assert [(g["x"], g["y"]) for g in lr] == [(e["epoch"], e["lr"]) for e in result["epochs"]], lr
    ranks = sorted(result["ranks"], key=lambda r: r["rank"])
    ips = chart(b, "ips")
    assert ips["labels"] == [f"rank {r['rank']}" for r in ranks], ips
    assert ips["datasets"][0]["data"] == [r["images_per_sec"] for r in ranks] and all(
        v > 0 for v in ips["datasets"][0]["data"]), ips
    mem = chart(b, "mem")["datasets"][0]["data"]
    for g, r in zip(mem, ranks):
        close(g, r["peak_memory_bytes"] / 2**20, f"peak memory of rank {r['rank']}")
    split = chart(b, "split")["datasets"]
    assert [d["label"] for d in split] == ["data wait", "forward", "backward", "comm exposed", "optimizer"], split
    for d, ph in zip(split, ["data_wait", "forward", "backward", "comm_exposed", "optimizer"]):
        assert d["data"] == [r["step_time_ms"][ph] for r in ranks], (ph, d)
    s = (result.get("reducer") or {}).get("straggler") or {}
    if isinstance(s.get("rank"), int) and len(ranks) > 1:
        banner = b.eval("(e => e && e.textContent)(document.getElementById('straggler'))")
        assert banner and f"rank {s['rank']}," in banner, f"straggler rank {s['rank']} not highlighted: {banner!r}"
        widths = b.eval("window.rxCharts.ips.data.datasets[0].borderWidth")
        assert widths[[r["rank"] for r in ranks].index(s["rank"])] == 3 and widths.count(3) == 1, widths
    cfg = json.loads(b.eval("document.getElementById('config').textContent"))
    assert cfg == result["config"], "resolved config on the page differs from the record's"
    assert "epoch" in b.eval("document.getElementById('logs').textContent"), "log tail is empty"
    return {"step_points": len(got), "epochs": len(ep[0]["data"]), "ranks": len(ranks)}


def check_trace_link(b, c, jid):
    """The trace link of a traced job: shown, and a click fetches exactly GET .../trace (a 2-rank trace)."""
    status, _, body = c.request("GET", f"/v1/jobs/{jid}/trace")
    assert status == 200, (status, body[:300])
    trace = json.loads(body)
    assert {e["pid"] for e in trace["traceEvents"]} == {0, 1}, "the merged trace is not of 2 ranks"
    b.wait("the trace link", "!document.getElementById('trace-box').hidden", timeout=15)
    b.click("#trace-link")
    text = b.wait("the trace download", "(t => /bytes$/.test(t) && t)(document.getElementById('trace-status')"
                  ".textContent)", timeout=30)
    assert text == f"trace-{jid}.json: {len(body.encode())} bytes", (text, len(body.encode()))
    rows = b.eval("[...document.querySelectorAll('#attempts-body tr')].map(r => [...r.children].map(td => "
                  "td.textContent))")
    assert not b.eval("document.getElementById('attempts-section').hidden") and len(rows) == 1, rows
    assert rows[0][0] == "0" and rows[0][5] == "succeeded", rows
    return len(trace["traceEvents"])


def check_attempts(b, c, jid):
    """A job that used its restart: one row per attempt, as the API lists them, failures highlighted."""
    _, job = c.json("GET", f"/v1/jobs/{jid}")
    assert len(job["attempts"]) == 2 and job["restarts"] == 1, job["attempts"]
    b.wait("both attempts", "document.querySelectorAll('#attempts-body tr').length === 2 && "
           "document.getElementById('state').textContent === 'failed'", timeout=30)
    rows = b.eval("[...document.querySelectorAll('#attempts-body tr')].map(r => [...r.children].map(td => "
                  "[td.textContent, td.className]))")
    for row, a in zip(rows, job["attempts"]):
        assert row[0][0] == str(a["attempt"]) and row[1][0] == a["started_at"] and row[2][0] == a["ended_at"], (row, a)
        assert row[3][0] == str(a["exit_code"]) and row[5][0] == a["cause"] and row[5][1] == "error", (row, a)
    _, _, logs = c.request("GET", f"/v1/jobs/{jid}/logs?tail=400")
    assert logs.count("injected fault") >= 2, f"not the injected fault on both attempts:\n{logs[-2000:]}"


def check_static(c):
    """The embedded files over plain HTTP: types, CSP, cache validators, and nothing else served."""
    types = {"/ui/": "text/html", "/ui/job.html": "text/html", "/ui/job.js": "text/javascript",
             "/ui/common.js": "text/javascript", "/ui/charts.js": "text/javascript",
             "/ui/chart.min.js": "text/javascript", "/ui/style.css": "text/css"}
    for path, ctype in types.items():
        status, h, body = c.request("GET", path)
        assert status == 200 and h["Content-Type"].startswith(ctype), (path, status, h)
        csp = h.get("Content-Security-Policy", "")
        assert "script-src 'self'" in csp and "default-src 'none'" in csp and "unsafe-inline" not in csp, (path, csp)
        assert h.get("X-Content-Type-Options") == "nosniff" and h.get("Cache-Control") == "no-cache", (path, h)
        assert body, path
        status, h2, body2 = c.request("GET", path, headers={"If-None-Match": h["ETag"]})
        assert status == 304 and body2 == "" and h2["ETag"] == h["ETag"], (path, status, h2)
        status, _, body3 = c.request("HEAD", path)
        assert status == 200 and body3 == "", (path, status)
    status, h, _ = c.request("GET", "/")
    assert status == 200 and h["Content-Type"].startswith("text/html"), (status, h)  # urllib followed the 302
    for path in ["/ui/nope.js", "/ui/..%2Fjobs.db", "/ui/../jobs.db", "/ui/a/job.js", "/uix", "/ui/coordinator.log"]:
        status, _, body = c.request("GET", path)
        assert status == 404 and "not_found" in body, (path, status, body)
    status, h, _ = c.request("POST", "/ui/", raw=b"{}")
    assert status == 405 and h.get("Allow") == "GET", (status, h)
    return len(types)


def check_plots_svg(run_dir, c, jid):
    """The worker's plots.svg beside result.json: well-formed SVG with one loss point per epoch and one
    throughput bar per rank."""
    import xml.etree.ElementTree as ET
    _, result = c.json("GET", f"/v1/jobs/{jid}/result")
    with open(os.path.join(run_dir, "result.json")) as f:
        assert json.load(f)["final_test_accuracy"] == result["final_test_accuracy"]
    root = ET.parse(os.path.join(run_dir, "plots.svg")).getroot()
    ns = "{http://www.w3.org/2000/svg}"
    assert root.tag == ns + "svg", root.tag
    polylines = root.findall(f".//{ns}polyline")
    assert len(polylines) == 4, len(polylines)  # train loss, test and train accuracy, lr
    assert len(polylines[0].get("points").split()) == len(result["epochs"]), polylines[0].get("points")
    bars = [r for r in root.findall(f".//{ns}g/{ns}rect") if r.get("fill") != "none"]
    assert len(bars) == len(result["ranks"]), len(bars)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--coordinator", required=True)
    ap.add_argument("--worker", required=True)
    ap.add_argument("--out", required=True, help="folder for the screenshots")
    ap.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    ap.add_argument("--timeout", type=float, default=600)
    a = ap.parse_args()
    if not os.access(a.chromium, os.X_OK):
        print(f"SKIPPED: chromium not installed ({a.chromium}); install Debian's chromium (launch/setup.sh)")
        return 77
    if not os.access(a.worker, os.X_OK):
        print(f"test_dashboard: worker {a.worker} is not built", file=sys.stderr)
        return 1
    os.makedirs(a.out, exist_ok=True)
    state = tempfile.mkdtemp(prefix="rx_dash_")
    token_file = os.path.join(state, "tokens")
    with open(token_file, "w") as f:
        f.write(f"alice:{TOKEN}\n")
    c = Coordinator(a.coordinator, state, ["--slots", "2", "--worker", a.worker, "--token-file", token_file],
                    read_token=TOKEN)  # the test's own reads; the page types the token itself
    auth = {"Authorization": f"Bearer {TOKEN}"}
    ok = False
    b = None
    try:
        b = Browser(a.chromium, os.path.join(state, "profile"), os.path.join(state, "chromium.log"))
        n = check_static(c)
        print(f"test_dashboard: {n} embedded files served with their types, CSP and ETags")
        b.open_tab()
        body = {"name": "dash-e2e", "ranks": 2, "config": "fashion_mnist_small",
                "overrides": {"training.epochs": 2, "training.log_every_steps": 2, "data.max_train_samples": 1024,
                              "data.max_test_samples": 256, "output.trace": True}}
        status, job = c.json("POST", "/v1/jobs", body, auth)
        assert status == 201, (status, job)
        jid = job["id"]

        # Jobs table: token typed in, the job listed, the filter applied.
        b.navigate(c.url + "/")
        assert b.eval("location.pathname") == "/ui/", "GET / does not lead to the dashboard"
        b.type("#token", TOKEN)
        b.click("#token-save")
        # [401 before the token] Where reads need a token too, the table's first poll (before one was typed)
        # is a 401 that Chromium logs; that one is expected, any other error is not.
        b.drop_problems(lambda kind, text: kind == "log:network" and "status of 401" in text)
        assert TOKEN not in b.eval("location.href"), "the token leaked into the URL"
        row = f"document.querySelector('tr[data-id=\"{jid}\"]')"
        b.wait("the job's row", f"!!{row}", timeout=30)
        b.eval("(() => { const s = document.getElementById('state-filter'); s.value = 'cancelled'; "
               "s.dispatchEvent(new Event('change')); })()")
        b.wait("the state filter to hide the job", f"!{row} && /0 job/.test(document.getElementById('jobs-status')"
               ".textContent)", timeout=15)
        b.eval("(() => { const s = document.getElementById('state-filter'); s.value = ''; "
               "s.dispatchEvent(new Event('change')); })()")
        job = c.wait_state(jid, TERMINAL, timeout=a.timeout)
        if job["state"] != "succeeded":
            _, _, logs = c.request("GET", f"/v1/jobs/{jid}/logs?tail=40", headers=auth)
            raise AssertionError(f"job ended {job['state']}: {job['error']}\n{logs}")
        check_plots_svg(os.path.join(state, "jobs", jid, "run"), c, jid)
        b.wait("the row to show the finished job", f"{row} && {row}.dataset.state === 'succeeded'", timeout=15)
        acc = b.eval(f"{row}.children[7].textContent")
        # Compared as numbers: JS toFixed and Python round exact ties (e.g. 40/256) differently.
        assert acc.endswith("%") and abs(float(acc[:-1]) - 100 * job["test_accuracy"]) <= 0.005 + 1e-9, (
            acc, job["test_accuracy"])
        b.screenshot(os.path.join(a.out, "jobs.png"))

        # Job page: charts against the endpoints.
        b.click(f"tr[data-id=\"{jid}\"] a")
        b.wait("the job page", "location.pathname === '/ui/job.html'")
        seen = check_job_page(b, c, jid)
        trace_events = check_trace_link(b, c, jid)
        b.screenshot(os.path.join(a.out, "job.png"))

        # Submit from the page, then cancel from the page.
        b.navigate(c.url + "/ui/")
        b.type("#submit-config", "fashion_mnist_small")
        b.type("#submit-ranks", "1")
        b.type("#submit-name", "browser-cancel")
        b.type("#submit-overrides", "training.epochs=50\ndata.max_train_samples=8192")
        b.click("#submit")
        new_id = b.wait("the submitted job's link", "(e => e && e.textContent)(document.getElementById('submitted-link'))")
        status, j2 = c.json("GET", f"/v1/jobs/{new_id}", headers=auth)
        assert status == 200 and j2["name"] == "browser-cancel" and j2["owner"] == "alice", (status, j2)
        b.click("#submitted-link")
        b.wait("the new job running", "(e => e && e.textContent === 'running')(document.getElementById('state'))",
               timeout=120)
        b.click("#cancel")
        b.wait("the cancel acknowledgement", "/cancel requested/.test(document.getElementById('cancel-status').textContent)")
        c.wait_state(new_id, "cancelled", timeout=60)
        b.wait("the page to show cancelled", "document.getElementById('state').textContent === 'cancelled' && "
               "document.getElementById('cancel').disabled", timeout=15)
        b.screenshot(os.path.join(a.out, "job_cancelled.png"))

        # Restart without tokens: the finished job renders from the record on disk.
        c.kill(signal.SIGTERM)
        # [Fault hook] of the worker (trainer.cpp): every job this coordinator starts fails at step 0.
        c = Coordinator(a.coordinator, state, ["--slots", "2", "--worker", a.worker],
                        env=dict(os.environ, RX_FAULT_RANK="0", RX_FAULT_STEP="0"))
        status, failing = c.json("POST", "/v1/jobs", {"name": "dash-restarts", "ranks": 1,
                                                      "config": "fashion_mnist_small", "max_restarts": 1,
                                                      "overrides": {"training.epochs": 1,
                                                                    "data.max_train_samples": 256,
                                                                    "data.max_test_samples": 64}})
        assert status == 201, (status, failing)
        b.navigate(f"{c.url}/ui/job.html?id={jid}")
        after = check_job_page(b, c, jid)
        assert after == seen, (after, seen)
        b.screenshot(os.path.join(a.out, "job_after_restart.png"))
        c.wait_state(failing["id"], TERMINAL, timeout=120)
        b.navigate(f"{c.url}/ui/job.html?id={failing['id']}")
        check_attempts(b, c, failing["id"])
        b.screenshot(os.path.join(a.out, "job_attempts.png"))

        assert not b.problems, "browser reported errors:\n" + "\n".join(f"  {k}: {v}" for k, v in b.problems)
        print(f"test_dashboard: ok: {seen}, trace of {trace_events} events, screenshots in {a.out}")
        ok = True
        return 0
    finally:
        if b:
            b.close()
        c.kill(signal.SIGTERM)
        if ok:
            shutil.rmtree(state, ignore_errors=True)
        else:
            print(f"test_dashboard: state kept in {state}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
