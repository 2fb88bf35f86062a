#!/usr/bin/env python3
"""Issue 14: cancelling a job in each state ends every process of it (mpirun and each rank) within 10 s.
Real coordinator, real mpirun; real 2-rank resnext_worker jobs where they run, the stand-in
fake_worker.sh where nothing must train. One CTest test each:
  cancel_states  queued, running, running with a SIGSTOPped rank, and restarting (launching:
                 test_faults_launch.cpp, where the launch can be held deterministically).
  slurm_cancel   a running job with a SIGSTOPped rank under the real Slurm fixture (tests/python/
                 slurm_cluster.py): scancel leaves no process of the job."""
import os
import signal
import sys
import time

# coordlib, rxtest, slurm_cluster: tests/python, on PYTHONPATH (CTest).
from coordlib import FAKE, SMALL, TERMINAL, Coordinator, fault_main, gone_within, heartbeat, submit, wait_for
from rxtest import process_alive as alive
from rxtest import read_text as read
from slurm_cluster import SlurmCluster


def cancel(c, jid):
    st, j = c.json("POST", f"/v1/jobs/{jid}/cancel", {})
    assert st in (200, 202), (st, j)
    return time.monotonic()


def cancel_states(a, state):
    c = Coordinator(a.coordinator, state, ["--slots", "2", "--worker", a.worker])
    figures = []
    try:
        # running (real worker), with a queued job behind it.
        run_id = submit(c, dict(SMALL, **{"data.max_train_samples": 8192, "training.epochs": 2}))
        queued_id = submit(c, SMALL)
        c.wait_state(run_id, "running", timeout=60)
        assert c.job(queued_id)["state"] == "queued", c.job(queued_id)
        t0 = cancel(c, queued_id)
        assert c.wait_state(queued_id, "cancelled", timeout=10)
        figures.append(f"queued {time.monotonic() - t0:.2f} s")
        assert not os.path.exists(os.path.join(state, "jobs", queued_id, "launch.pid")), "a queued job was launched"
        wait_for("both ranks' heartbeats", lambda: all(heartbeat(state, run_id, r) for r in (0, 1)), timeout=300)
        pgid = c.db_row(run_id)[1]
        pids = [heartbeat(state, run_id, r)["pid"] for r in (0, 1)]
        t0 = cancel(c, run_id)
        s = gone_within(pgid, pids, 10, "every process of the running job")
        c.wait_state(run_id, "cancelled", timeout=10)
        figures.append(f"running {s:.2f} s")

        # running with rank 1 stopped (SIGSTOP): a SIGTERM stays pending on it.
        stop_id = submit(c, dict(SMALL, **{"data.max_train_samples": 8192, "training.epochs": 2}))
        c.wait_state(stop_id, "running", timeout=60)
        wait_for("rank 1 at step 2", lambda: (heartbeat(state, stop_id, 1) or {}).get("step", -1) >= 2, timeout=300)
        pgid = c.db_row(stop_id)[1]
        pids = [heartbeat(state, stop_id, r)["pid"] for r in (0, 1)]
        os.kill(pids[1], signal.SIGSTOP)
        t0 = cancel(c, stop_id)
        s = gone_within(pgid, pids, 10, "every process of the job with a stopped rank")
        c.wait_state(stop_id, "cancelled", timeout=10)
        figures.append(f"running with a SIGSTOPped rank {s:.2f} s")
    finally:
        c.kill(signal.SIGTERM)
    # restarting: the stand-in worker fails at once (training.epochs 2: exit 3), so the job waits out its
    # restart backoff (2 s) with no process; cancelling it there ends it at once.
    state2 = os.path.join(state, "restarting")
    os.makedirs(state2)
    fake = Coordinator(a.coordinator, state2, ["--slots", "2", "--worker", FAKE])
    try:
        rid = submit(fake, {"training.epochs": 2}, max_restarts=3)
        fake.wait_state(rid, "restarting", timeout=30)
        pgid = fake.db_row(rid)[1]
        t0 = cancel(fake, rid)
        j = fake.wait_state(rid, TERMINAL, timeout=10)
        assert j["state"] == "cancelled", j
        figures.append(f"restarting {time.monotonic() - t0:.2f} s")
        assert pgid == 0, "a restarting job holds no process"
        log = read(os.path.join(state2, "jobs", rid, "worker.log"))
        for line in log.splitlines():
            if line.startswith("fake worker rank"):
                pid = int(line.split()[5])
                assert not alive(pid), f"stand-in rank pid {pid} still alive"
    finally:
        fake.kill(signal.SIGTERM)
    print("test_faults_matrix cancel_states: cancel -> every process gone: " + "; ".join(figures))


def job_processes(jid):
    """pids of live processes whose command line names job `jid` (mpirun, orted and every rank carry it)."""
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit() and int(d) != os.getpid():
            try:
                with open(f"/proc/{d}/cmdline", "rb") as f:
                    args = f.read().split(b"\0")
            except OSError:
                continue
            if jid.encode() in args and alive(int(d)):
                out.append(int(d))
    return out


def slurm_cancel(a, state):
    """Under the real single-node Slurm of tests/python/slurm_cluster.py: cancelling a running job with a
    SIGSTOPped rank (stand-in worker under mpirun inside the batch job) -> scancel -> no process of the job
    within 10 s."""
    src = os.environ["RX_SOURCE_DIR"]
    with SlurmCluster() as cl:
        env = dict(cl.env, RX_LAUNCHER="mpirun", RX_MPIRUN_ARGS="--allow-run-as-root --oversubscribe --bind-to none",
                   OMPI_MCA_rmaps_base_oversubscribe="1", RX_RESUME="0")
        c = Coordinator(a.coordinator, state, ["--launcher", "slurm", "--worker", FAKE, "--slots", "8",
                                               "--configs-dir", os.path.join(src, "configs")], env=env)
        try:
            jid = submit(c, {"training.epochs": 3})
            wait_for("the job's progress report",
                     lambda: c.job(jid)["state"] == "running" and c.job(jid)["progress"]["step"] == 5, timeout=120)
            log = os.path.join(state, "jobs", jid, "worker.log")

            def rank_pids():
                pids = {int(l.split()[3]): int(l.split()[5]) for l in read(log).splitlines()
                        if l.startswith("fake worker rank")}
                return pids if len(pids) == 2 else None
            pids = wait_for("both stand-in ranks' pids in worker.log", rank_pids, timeout=60)
            assert job_processes(jid), "no process names the job: cannot check that they end"
            os.kill(pids[1], signal.SIGSTOP)
            t0 = cancel(c, jid)
            wait_for("every process of the Slurm job to end", lambda: not job_processes(jid) and
                     not any(alive(p) for p in pids.values()), timeout=10, interval=0.05)
            s = time.monotonic() - t0
            j = c.wait_state(jid, TERMINAL, timeout=60)
            assert j["state"] == "cancelled", j
            print(f"test_faults_matrix slurm_cancel: cancel with rank 1 stopped -> every process gone {s:.2f} s "
                  f"(Slurm job {j['slurm_job_id']})")
        finally:
            c.kill(signal.SIGTERM)


if __name__ == "__main__":
    sys.exit(fault_main(["cancel_states", "slurm_cancel"], globals()))
