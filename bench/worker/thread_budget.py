#!/usr/bin/env python3
"""[Thread budget] side by side (bench/README.md "## Thread budget").

usage: python3 bench/worker/thread_budget.py [--build DIR] [--rounds 2] [--samples 2048]

Two placements where the old default (this host's cores / local ranks, whatever the launcher did)
oversubscribed cores, each run with the new default and with the old count forced through
training.threads, alternating per round so machine load hits both alike:
  bound    `mpiexec -np 1` with Open MPI's default binding (one core for np <= 2): new = the core's
           1 thread, old = all cores' worth of threads on that one core.
  2 jobs   two 1-rank jobs at once, unbound, as the coordinator runs them on 2 slots: new = each its
           slot's share (OMP_NUM_THREADS = CPUs / 2, what the local launcher sets), old = each all CPUs.
Reported: wall seconds of the worker process(es), the images/s of the run record (train phases only),
and CPU seconds (user + sys) that the runs used: spinning OpenMP threads burn CPU without progress.
resnext20_tiny on Fashion-MNIST (configs/fashion_mnist_small.json), 1 epoch of --samples images.
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

SRC = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def cmd_for(build, out, samples, threads):
    cmd = [os.path.join(build, "worker", "resnext_worker"), "train", "--config",
           os.path.join(SRC, "configs", "fashion_mnist_small.json"), "--out", out]
    for s in ["training.epochs=1", f"data.max_train_samples={samples}", "data.max_test_samples=128",
              f"training.threads={threads}"]:
        cmd += ["--set", s]
    return cmd


def run_all(cmds, env):
    """Starts every command at once; returns (wall s of the slowest, CPU s of all, rank-0 images/s each)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    procs = [subprocess.Popen(c, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, env=env) for c, _ in cmds]
    for p, (c, _) in zip(procs, cmds):
        if p.wait(timeout=1800) != 0:
            sys.exit(f"failed ({p.returncode}): {' '.join(c)}")
    wall = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    ips = []
    for _, out in cmds:
        with open(os.path.join(out, "result.json")) as f:
            ips.append(json.load(f)["ranks"][0]["images_per_sec"])
    return wall, cpu, ips


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(SRC, "build"))
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--samples", type=int, default=2048)
    a = ap.parse_args()
    cpus = len(os.sched_getaffinity(0))
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    mpiexec = ["mpiexec", "--allow-run-as-root", "-np", "1"]  # Open MPI's default binding
    share = max(1, cpus // 2)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for rnd in range(a.rounds):
            for name, threads in [("bound new", 0), ("bound old", cpus)]:
                out = os.path.join(tmp, f"{name}-{rnd}".replace(" ", "_"))
                results.setdefault(name, []).append(
                    run_all([(mpiexec + cmd_for(a.build, out, a.samples, threads), out)], env))
            for name, threads in [("2 jobs new", share), ("2 jobs old", cpus)]:
                outs = [os.path.join(tmp, f"{name}-{rnd}-{j}".replace(" ", "_")) for j in range(2)]
                results.setdefault(name, []).append(
                    run_all([(cmd_for(a.build, o, a.samples, threads), o) for o in outs], env))
    print(f"thread_budget: {cpus} CPUs, {a.samples} images, {a.rounds} rounds (median)")
    print(f"{'case':<12} {'wall s':>8} {'CPU s':>8} {'images/s':>10}")
    med = {}
    for name, rs in results.items():
        med[name] = (statistics.median(r[0] for r in rs), statistics.median(r[1] for r in rs),
                     statistics.median(statistics.mean(r[2]) for r in rs))
        rounds = ", ".join(f"{r[0]:.1f}" for r in rs)
        print(f"{name:<12} {med[name][0]:8.1f} {med[name][1]:8.1f} {med[name][2]:10.1f}   (wall per round: {rounds})")
    for case in ("bound", "2 jobs"):
        n, o = med[f"{case} new"], med[f"{case} old"]
        print(f"{case}: new/old images/s {n[2] / o[2]:.2f}x, wall old/new {o[0] / n[0]:.2f}x, "
              f"CPU s old/new {o[1] / n[1]:.2f}x")


if __name__ == "__main__":
    main()
