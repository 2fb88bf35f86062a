#!/usr/bin/env python3
"""Two-node tests on two_node_cluster.py (two Linux-namespace nodes, one real Slurm, loopback only).

usage: test_multinode.py SCENARIO   (sbatch | mpirun_hostfile | coordinator | node_loss), with
RX_SOURCE_DIR and RX_BINARY_DIR set and tests/python (rxtest, coordlib, slurm_cluster) on PYTHONPATH, by CTest.
Every wait polls with a deadline. Without root or namespaces the scenario prints SKIPPED with why.
"""
import json
import os
import subprocess
import sys
import time

from coordlib import Coordinator, wait_for
from rxtest import check, main, read_text, skip
from two_node_cluster import TwoNodeCluster, SlurmError, namespaces_usable

SRC = os.environ["RX_SOURCE_DIR"]
BIN = os.environ["RX_BINARY_DIR"]
WORKER = os.path.join(BIN, "worker", "resnext_worker")
COORD = os.path.join(BIN, "coordinator", "resnext_coordinator")
CONFIG = os.path.join(SRC, "configs", "fashion_mnist_small.json")
SLURM_DIR = os.path.join(SRC, "launch", "slurm")
TINY = ["training.epochs=1", "data.max_train_samples=512", "data.max_test_samples=256", "training.log_every_steps=1"]
# 2 nodes x 2 ranks, one CPU each: both nodes claim the machine's cores (see two_node_cluster.py).
LAYOUT = ["--nodes=2", "--ntasks-per-node=2", "--cpus-per-task=1"]
HANG_S = 10  # distributed.hang_timeout_s of the node-loss runs


def cluster():
    reason = namespaces_usable()
    if reason:
        skip(reason)
    return TwoNodeCluster()


def check_two_nodes(rec, log_path):
    """The run record of a 2 x 2 run: every rank names its node and local rank, has its own throughput,
    the replicas ended identical, and the per-node aggregates add up."""
    check(rec.get("status", "succeeded") == "succeeded" and rec.get("world_size") == 4, f"record: {rec}",
          log_path=log_path)
    ranks = rec["ranks"]
    layout = [(r["rank"], r["host"], r["local_rank"]) for r in ranks]
    check(layout == [(0, "node1", 0), (1, "node1", 1), (2, "node2", 0), (3, "node2", 1)],
          f"ranks by node: {layout}", log_path=log_path)
    check(all(r["images_per_sec"] > 0 for r in ranks), f"throughput: {[r['images_per_sec'] for r in ranks]}")
    sums = {r["param_checksum"] for r in ranks}
    check(len(sums) == 1, f"replicas differ across nodes: checksums {[r['param_checksum'] for r in ranks]}")
    nodes = rec["nodes"]
    check([(n["host"], n["ranks"]) for n in nodes] == [("node1", [0, 1]), ("node2", [2, 3])], f"nodes: {nodes}")
    for n in nodes:
        mine = [r for r in ranks if r["host"] == n["host"]]
        check(abs(n["images_per_sec"] - sum(r["images_per_sec"] for r in mine)) < 1e-6 and
              n["peak_memory_bytes"] == sum(r["peak_memory_bytes"] for r in mine), f"node sums: {n}")
    check(rec["reducer"]["straggler"].get("host") in ("node1", "node2", None), f"straggler: {rec['reducer']}")


def submit(c, run, sets, extra=(), **env_extra):
    env = dict(c.env, RX_CONFIG=CONFIG, RX_RUN_DIR=run, RX_WORKER=WORKER, RX_SETS=" ".join(sets), **env_extra)
    p = subprocess.run([os.path.join(SLURM_DIR, "submit.sh"), "train_multinode.sbatch"] + LAYOUT + list(extra),
                       env=env, capture_output=True, text=True, timeout=30)
    check(p.returncode == 0, f"submit.sh exited {p.returncode}: {p.stderr}")
    return p.stdout.strip()


def wait_end(c, jid, timeout):
    ended = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY")
    return wait_for(f"slurm job {jid} to end", lambda: (lambda s: s if s in ended else None)(c.job_field(jid, "JobState")),
                    timeout=timeout, interval=0.5)


# --- scenarios -------------------------------------------------------------------------------------
def sbatch(tmp):
    """train_multinode.sbatch, 2 nodes x 2 ranks, srun --mpi=pmix starts the ranks on both nodes."""
    with cluster() as c:
        run = os.path.join(c.shared, "run")
        jid = submit(c, run, TINY)
        out = os.path.join(run, f"slurm-{jid}.out")
        check(wait_end(c, jid, 300) == "COMPLETED", f"slurm job {jid} ended {c.job_field(jid, 'JobState')}",
              log_path=out)
        check(c.job_field(jid, "NodeList") == "node[1-2]", f"NodeList={c.job_field(jid, 'NodeList')}", log_path=out)
        check_two_nodes(json.loads(read_text(os.path.join(run, "result.json")) or "{}"), out)


def mpirun_hostfile(tmp):
    """Plain mpirun (no Slurm allocation): a host file naming node1 and node2, node_exec.sh as the launch
    agent (Open MPI's ssh stand-in), TCP between the nodes on lo only."""
    with cluster() as c:
        run = os.path.join(c.shared, "run")
        hosts = os.path.join(c.shared, "hostfile")
        with open(hosts, "w") as f:
            f.write("node1 slots=2\nnode2 slots=2\n")
        cmd = ["mpirun", "--allow-run-as-root", "--bind-to", "none", "--hostfile", hosts, "-np", "4",
               "--mca", "plm_rsh_agent", c.agent, "--mca", "btl_tcp_if_include", "lo",
               "--mca", "oob_tcp_if_include", "lo", "-x", "OMP_NUM_THREADS=1",
               WORKER, "train", "--config", CONFIG, "--out", run]
        for s in TINY:
            cmd += ["--set", s]
        log = os.path.join(c.shared, "mpirun.log")
        with open(log, "w") as f:
            p = subprocess.run(cmd, env=c.env, stdout=f, stderr=subprocess.STDOUT, timeout=300)
        check(p.returncode == 0, f"mpirun exited {p.returncode}", log_path=log)
        check_two_nodes(json.loads(read_text(os.path.join(run, "result.json")) or "{}"), log)


def coordinator(tmp):
    """The coordinator's Slurm launcher submits a 2-node job (--sbatch-arg layout); GET /v1/jobs/ID shows
    the ranks by node while it runs and at the end. Then node2 is lost mid-job: with max_restarts 1 the
    attempt fails (hang report naming node2), the job is resubmitted, waits for two nodes, node2 is
    restored and the job resumes from its checkpoint and succeeds."""
    with cluster() as c:
        state = os.path.join(c.shared, "state")
        os.makedirs(state)
        # --no-requeue: the coordinator's max_restarts owns the retry, not Slurm's own node-failure requeue.
        args = ["--launcher", "slurm", "--worker", WORKER, "--slots", "8", "--configs-dir", os.path.join(SRC, "configs"),
                "--slurm-template", os.path.join(SLURM_DIR, "train_multinode.sbatch")]
        for a in LAYOUT + ["--no-requeue"]:
            args += ["--sbatch-arg", a]
        co = Coordinator(COORD, state, args, env=c.env)
        try:
            s, j = co.json("POST", "/v1/jobs", {"ranks": 4, "config": "fashion_mnist_small", "max_restarts": 1,
                                                 "overrides": {"training.epochs": 2, "data.max_train_samples": 512,
                                                               "data.max_test_samples": 128,
                                                               "training.log_every_steps": 1,
                                                               "distributed.hang_timeout_s": HANG_S}})
            check(s == 201, (s, j))
            jid = j["id"]
            log = os.path.join(state, "jobs", jid, "worker.log")
            j = wait_for("progress from both nodes", lambda: (lambda x: x if x["progress"]["epoch"] == 2 and
                                                              len(x["nodes"]) == 2 else None)(co.job(jid)), 240, 0.2)
            check([(n["host"], n["ranks"]) for n in j["nodes"]] == [("node1", [0, 1]), ("node2", [2, 3])],
                  f"running job's nodes: {j['nodes']}", log_path=log)
            check([r["host"] for r in j["ranks"]] == ["node1", "node1", "node2", "node2"], f"ranks: {j['ranks']}")
            sid = j["slurm_job_id"]
            check(c.job_field(sid, "NodeList") == "node[1-2]", f"NodeList={c.job_field(sid, 'NodeList')}")
            t_kill = time.monotonic()
            c.kill_node("node2")
            j = wait_for("the failed attempt", lambda: (lambda x: x if x["hang"] or x["restarts"] else None)(
                co.job(jid)), HANG_S + 30, 0.2)
            took = time.monotonic() - t_kill
            hang = j["hang"] or {}
            attempt_causes = " ".join(str(a["cause"]) for a in j["attempts"])
            text = (hang.get("message") or "") + " " + attempt_causes
            check("node2 (ranks [2,3])" in text, f"no report naming node2 and its ranks after {took:.1f}s: {j}",
                  log_path=log)
            check(took < HANG_S + 30, f"the failure took {took:.1f}s (hang_timeout_s {HANG_S})")
            print(f"node2 lost: attempt ended after {took:.1f}s: {text.strip()[:300]}")
            wait_for("the relaunch waiting in Slurm for two nodes", lambda: co.job(jid)["restarts"] == 1 and
                     co.job(jid)["state"] in ("queued", "launching"), 60, 0.2)
            c.start_node("node2")
            j = co.wait_state(jid, ["succeeded", "failed", "cancelled"], timeout=240)
            check(j["state"] == "succeeded", f"job ended {j}", log_path=log)
            check(j["restarts"] == 1 and j["attempts"][1]["resumed_from"], f"attempts: {j['attempts']}")
            check("resuming from checkpoint" in read_text(log), "the relaunch did not resume", log_path=log)
            check([(n["host"], n["ranks"]) for n in j["nodes"]] == [("node1", [0, 1]), ("node2", [2, 3])],
                  f"final nodes: {j['nodes']}")
            p = subprocess.run([COORD, "status", jid, "--url", co.url], capture_output=True, text=True, timeout=30)
            check(p.returncode == 0 and "node node2: ranks [2,3]" in p.stdout and "on node1" in p.stdout,
                  f"`resnext_coordinator status` per-node lines: {p.stdout}{p.stderr}")
            rec = json.loads(read_text(os.path.join(state, "jobs", jid, "run", "result.json")))
            check(len({r["param_checksum"] for r in rec["ranks"]}) == 1, f"replicas differ: {rec['ranks']}")
        finally:
            co.kill()


def node_loss(tmp):
    """sbatch, RX_MAX_RESTARTS=1: node2 (slurmd and ranks) killed mid-epoch. The hang watchdog ends the
    step within hang_timeout_s with a report naming node2 and ranks 2, 3; the job is requeued (by the
    batch script after the failed run, or by Slurm itself on NODE_FAIL, whichever comes first: one
    restart either way); Slurm marks node2 DOWN; the job starts again once node2 is restored and
    resumes from the last checkpoint."""
    with cluster() as c:
        run = os.path.join(c.shared, "run")
        sets = ["training.epochs=2", "data.max_train_samples=512", "data.max_test_samples=128",
                "training.log_every_steps=1", f"distributed.hang_timeout_s={HANG_S}"]
        jid = submit(c, run, sets, RX_MAX_RESTARTS="1")
        out = os.path.join(run, f"slurm-{jid}.out")
        wait_for("epoch 2 under way", lambda: "epoch 2/2 step 1/" in read_text(out), 240, 0.2)
        t_kill = time.monotonic()
        c.kill_node("node2")
        rec = wait_for("the hang report", lambda: (lambda r: r if r.get("status") == "failed" else None)(
            json.loads(read_text(os.path.join(run, "result.json")) or "{}")), HANG_S + 30, 0.2)
        took = time.monotonic() - t_kill
        msg = rec["hang"]["message"]
        check(sorted(rec["hang"]["missing"]) == [2, 3] and "node2 (ranks [2,3])" in msg,
              f"report after {took:.1f}s: {msg}", log_path=out)
        check(took < HANG_S + 30, f"the hang report took {took:.1f}s (hang_timeout_s {HANG_S})")
        print(f"node2 lost: hang report after {took:.1f}s: {msg[:300]}")
        wait_for("the job to be requeued", lambda: c.job_field(jid, "Restarts") == "1", 60, 0.5)
        print("requeued by " + ("the batch script (RX_MAX_RESTARTS)" if "run failed (exit" in read_text(out)
                                else "Slurm (NODE_FAIL)"))
        wait_for("Slurm to mark node2 DOWN", lambda: c.node_state("node2").startswith("down"), 60, 0.5)
        c.start_node("node2")
        check(wait_end(c, jid, 300) == "COMPLETED", f"slurm job {jid} ended {c.job_field(jid, 'JobState')}",
              log_path=out)
        check("resuming from checkpoint" in read_text(out), "the requeued job did not resume", log_path=out)
        check_two_nodes(json.loads(read_text(os.path.join(run, "result.json")) or "{}"), out)


SCENARIOS = {"sbatch": sbatch, "mpirun_hostfile": mpirun_hostfile, "coordinator": coordinator,
             "node_loss": node_loss}

if __name__ == "__main__":
    sys.exit(main(SCENARIOS, __doc__, keep_on_failure=True, failures=(SlurmError, AssertionError)))
