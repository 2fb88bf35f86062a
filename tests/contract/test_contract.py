#!/usr/bin/env python3
"""Contract test: requests generated from api/openapi.yaml by schemathesis (PyPI, via pydeps) against a
real `resnext_coordinator serve` on loopback, with a stand-in mpirun (fake_mpirun.sh) running the
stand-in worker (tests/coordinator/fake_worker.sh). Fails on any 5xx, any status the document does
not declare for the operation, any body or header that violates the documented schema, a request
that breaks the schema but is accepted, a method the server does not refuse with 405 + Allow, an
operation that needs auth but answers without it, and a coordinator that is not alive afterwards.

[Real ids] Generated ids would only ever meet 404s, so the path parameter `id` is pinned to a real
running job (alice's), and the run sends alice's token and that job's secret: the generated
requests reach reports, shards, logs and cancel. Unknown ids are covered by the `coverage` phase's
negative cases and by the C++ route tests.
[Bounded] --max-examples per operation, a fixed seed (the same requests every CI run), one worker,
--max-time, and a wall-clock timeout on the whole schemathesis process; loopback only."""
import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile

import pydeps  # beside this script (its folder is sys.path[0]); used only by tests/contract
from coordlib import Coordinator, session_members, wait_for  # tests/python, on PYTHONPATH (CTest)

HERE = os.path.dirname(os.path.abspath(__file__))

ALICE = {"Authorization": "Bearer atok"}
CHECKS = ("not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,"
          "response_schema_conformance,negative_data_rejection,unsupported_method,ignored_auth")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--coordinator", required=True)
    ap.add_argument("--source-dir", required=True)
    ap.add_argument("--max-examples", type=int, default=int(os.environ.get("RX_CONTRACT_EXAMPLES", "30")))
    ap.add_argument("--max-time", type=int, default=int(os.environ.get("RX_CONTRACT_MAX_TIME", "90")))
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args()
    a.source_dir = os.path.abspath(a.source_dir)

    python = pydeps.venv_python()
    st_bin = os.path.join(os.path.dirname(python), "schemathesis")
    spec = os.path.join(a.source_dir, "api", "openapi.yaml")

    state = tempfile.mkdtemp(prefix="rx_contract_")
    secrets = os.path.join(state, "secrets")
    os.makedirs(secrets)
    with open(os.path.join(state, "tokens"), "w") as f:
        f.write("alice:atok\nbob:btok\n")
    env = dict(os.environ, RX_CONTRACT_SECRETS=secrets)
    args = ["--slots", "4", "--token-file", os.path.join(state, "tokens"),
            "--worker", os.path.join(a.source_dir, "tests", "coordinator", "fake_worker.sh"),
            "--mpirun", os.path.join(HERE, "fake_mpirun.sh"), "--configs-dir", os.path.join(a.source_dir, "configs"),
            "--cancel-grace-s", "1", "--idle-timeout-s", "5", "--log-level", "warn"]
    c = Coordinator(a.coordinator, state, args, env=env, read_token="atok")  # reads need a token too
    ok = False
    try:
        # A job that runs until cancelled (fake worker: epochs 3), with a progress report stored.
        body = {"name": "contract", "ranks": 2, "config": "fashion_mnist_small",
                "overrides": {"training.epochs": 3, "data.max_train_samples": 512}}
        status, j = c.json("POST", "/v1/jobs", body, ALICE)
        assert status == 201, (status, j)
        job = j["id"]
        c.wait_state(job, "running", timeout=30)
        secret = wait_for("the job's secret from the stand-in mpirun",
                          lambda: open(os.path.join(secrets, job)).read() if os.path.exists(os.path.join(secrets, job))
                          else None, timeout=30)
        wait_for("the job's first progress report", lambda: c.json("GET", f"/v1/jobs/{job}/metrics")[1]["points"],
                 timeout=30)

        config = os.path.join(state, "schemathesis.toml")
        with open(config, "w") as f:
            f.write(f'[parameters]\nid = "{job}"\n')
        report = os.path.join(state, "report")
        cmd = [st_bin, "--config-file", config, "run", spec, "--url", c.url,
               "--checks", CHECKS, "--max-examples", str(a.max_examples), "--seed", "1", "--workers", "1",
               "--phases", "examples,coverage,fuzzing", "--max-time", str(a.max_time), "--request-timeout", "20",
               "--suppress-health-check", "all", "-H", f"Authorization: {ALICE['Authorization']}",
               "-H", f"X-Job-Secret: {secret}", "--report", "junit", "--report-dir", report, "--no-color"]
        print("contract:", " ".join(cmd), flush=True)
        try:
            r = subprocess.run(cmd, cwd=state, timeout=a.max_time + 120, env=dict(os.environ, SCHEMATHESIS_HOOKS=""))
        except subprocess.TimeoutExpired:
            raise AssertionError(f"schemathesis ran past {a.max_time + 120} s")
        assert c.proc.poll() is None, f"the coordinator exited ({c.proc.returncode}); see {state}/coordinator.log"
        assert c.request("GET", "/healthz")[0] == 200, "the coordinator no longer answers /healthz"
        assert r.returncode == 0, f"schemathesis found contract violations (exit {r.returncode}); see above"
        ok = True
        print("contract: no 5xx, no undocumented status, no schema violation")
    finally:
        # Cancel whatever still runs (the generated requests may have started jobs), then stop.
        try:
            _, lst = c.json("GET", "/v1/jobs?limit=1000", None, ALICE)
            live = [x["id"] for x in lst["jobs"] if x["state"] in ("queued", "launching", "running")]
            for jid in live:
                c.json("POST", f"/v1/jobs/{jid}/cancel", {}, ALICE)
            for jid in live:
                c.wait_state(jid, ["cancelled", "failed", "succeeded"], timeout=30)
        except Exception as e:  # noqa: BLE001 - cleanup must not hide the test's own failure
            print(f"contract: cleanup: {e}", file=sys.stderr)
        pgids = []
        try:
            import sqlite3
            con = sqlite3.connect(os.path.join(state, "jobs.db"), timeout=10)
            pgids = [row[0] for row in con.execute("SELECT pgid FROM jobs WHERE pgid > 0")]
            con.close()
        except Exception:  # noqa: BLE001
            pass
        c.kill(signal.SIGTERM)
        for pg in pgids:
            for pid in session_members(pg):
                os.kill(pid, signal.SIGKILL)
        if not ok or a.keep:
            print(f"contract: state kept in {state} (coordinator.log, report/)", file=sys.stderr)
        else:
            shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    main()
