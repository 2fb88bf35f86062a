#!/usr/bin/env python3
"""Time to accuracy: resnext_worker against PyTorch DDP on the same recipe (bench/accuracy/README.md).

    /usr/bin/python3 bench/accuracy/time_to_accuracy.py [--config configs/fashion_mnist_fast.json]
        [--rounds 1] [--target 0.92] [--build build] [--timeout 3600] [--epochs N] [--max-steps N]
        [--max-test N] [--set key=value ...]

Per round it runs, one after the other (alternating, so that machine load hits both alike):
  worker  mpirun -np 2 --bind-to core --map-by core BUILD/worker/resnext_worker --config CONFIG
          --set output.dir=<work dir> [--set ...]
  DDP     /usr/bin/python3 -m torch.distributed.run --standalone --nproc_per_node 2 --redirects 1 --tee 1
          bench/accuracy/ddp_fashion.py --config CONFIG [--set ...]
Both train the same network from the same initial weights on the same batches (ddp_fashion.py). Each
one's output is read live; an epoch's time is when its evaluation line is read, measured from that
run's own launch (so it includes process start, data loading and every evaluation). The time to the
target is that of the first evaluated epoch whose test accuracy reaches --target.

Every wait on a child has --timeout; a child that exits non-zero, times out or prints no epoch line is
reported with the tail of its log, and this script then exits 1. With torch importable (run it with
/usr/bin/python3), the worker's last checkpoint and DDP's final weights are also compared: the two
should train identically, so a difference points at a semantic drift between them.
"""
import argparse
import collections
import glob
import os
import queue
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))

# worker/trainer.cpp, rank 0 at each epoch end (test acc is "-" when the epoch was not evaluated):
#   [...] [rank 0] [info] epoch 3/5 done: train loss 0.3012 acc 0.8931, test acc 0.901200
WORKER_EPOCH = re.compile(r"\[rank 0\].*\bepoch (\d+)/(\d+) done: train loss \S+ acc \S+, test acc ([0-9.]+|-)")
# ddp_fashion.py, rank 0 (torch.distributed.run prefixes "[default0]:"):
#   EPOCH 3/5 train_loss=0.3012 train_acc=0.8931 test_loss=0.2801 test_acc=0.9012 elapsed=612.3
DDP_EPOCH = re.compile(r"\bEPOCH (\d+)/(\d+) .*?(?:test_acc=([0-9.]+))?\s+elapsed=")
TAIL_LINES = 40


class ChildFailed(Exception):
    pass


def pump(stream, lines):
    """Reader thread: every line with the time it was read; None at end of output."""
    for line in iter(stream.readline, ""):
        lines.put((time.monotonic(), line))
    lines.put((time.monotonic(), None))


def stop(proc):
    """Ends a child and everything it started (it leads its own process group): SIGTERM, which mpirun
    and torch.distributed.run pass on to their ranks, then SIGKILL if it has not exited in 15 s."""
    for sig, grace in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            pass


def run(name, cmd, env, pattern, timeout, log_path, echo):
    """Runs `cmd`, reading its output live. Returns a list of (epoch, test accuracy or None, seconds
    since launch) for every epoch-end line `pattern` matches. Raises ChildFailed (with the log tail)
    on a non-zero exit, a timeout, or output without any epoch line."""
    print(f"\n== {name}: {' '.join(cmd)}", flush=True)
    tail = collections.deque(maxlen=TAIL_LINES)
    epochs = []
    start = time.monotonic()
    deadline = start + timeout
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, errors="replace", start_new_session=True)
        lines = queue.Queue()
        threading.Thread(target=pump, args=(proc.stdout, lines), daemon=True).start()
        try:
            while True:
                try:
                    at, line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    raise ChildFailed(f"{name} timed out after {timeout:.0f} s") from None
                if line is None:
                    break
                log.write(line)
                log.flush()
                tail.append(line.rstrip("\n"))
                if echo:
                    print(f"  | {line.rstrip()}", flush=True)
                m = pattern.search(line)
                if m:
                    acc = None if m.group(3) in (None, "-") else float(m.group(3))
                    epochs.append((int(m.group(1)), acc, at - start))
                    shown = "-" if acc is None else f"{acc:.4f}"
                    print(f"  {name} epoch {m.group(1)}/{m.group(2)}: test acc {shown} at {at - start:.1f} s",
                          flush=True)
            try:
                rc = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                raise ChildFailed(f"{name} timed out after {timeout:.0f} s (output closed, process alive)") \
                    from None
            if rc != 0:
                raise ChildFailed(f"{name} exited with status {rc}")
            if not epochs:
                raise ChildFailed(f"{name} exited 0 but printed no epoch line (log format changed?)")
        except ChildFailed as e:
            stop(proc)
            raise ChildFailed(f"{e}; full log {log_path}; last lines:\n" + "\n".join(tail)) from None
        except BaseException:  # Ctrl-C: leave no training running behind us
            stop(proc)
            raise
    print(f"  {name} done in {time.monotonic() - start:.1f} s", flush=True)
    return epochs


def time_to(epochs, target):
    """Seconds to the first evaluated epoch at or above target, or None."""
    return next((t for _, acc, t in epochs if acc is not None and acc >= target), None)


def print_table(name, epochs):
    print(f"\n{name}\n  epoch  test acc  elapsed s")
    for e, acc, t in epochs:
        print(f"  {e:5d}  {'-' if acc is None else f'{acc:.4f}':>8s}  {t:9.1f}")


def compare_weights(worker_dir, ddp_state):
    """Max |worker - DDP| over the parameters and buffers of the worker's newest checkpoint (rank 0's,
    a LibTorch archive) and DDP's final state_dict (rank 0's). Returns a one-line verdict."""
    try:
        import torch
    except ImportError:
        return "skipped (this Python has no torch; run with /usr/bin/python3)"
    ckpts = glob.glob(os.path.join(worker_dir, "checkpoints", "ckpt-*.pt"))
    if not ckpts or not os.path.exists(ddp_state):
        return "skipped (no worker checkpoint or DDP state; checkpoint.every_epochs=0?)"
    newest = max(ckpts, key=lambda p: int(re.search(r"ckpt-(\d+)\.pt$", p).group(1)))
    archive = torch.jit.load(newest)
    worker = dict(archive.named_parameters())
    worker.update(dict(archive.named_buffers()))
    ddp = torch.load(ddp_state)
    missing = [k for k in ddp if k not in worker]
    if missing:
        return f"not comparable: {len(missing)} DDP tensors missing from the worker checkpoint ({missing[:3]})"
    worst, key, identical = 0.0, None, 0
    for k, v in ddp.items():
        d = (worker[k].double() - v.double()).abs().max().item() if v.numel() else 0.0
        identical += d == 0
        if d > worst:
            worst, key = d, k
    verdict = "bit-identical" if worst == 0 else f"largest in {key}"
    return f"max |worker - DDP| = {worst:.3g} over {len(ddp)} tensors, {identical} identical ({verdict})"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/fashion_mnist_fast.json", help="job config (repo-relative ok)")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--target", type=float, default=0.92, help="test accuracy to reach (default 0.92)")
    ap.add_argument("--build", default="build", help="the worker's build folder (BUILD/worker/resnext_worker)")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds each run may take (default 3600)")
    ap.add_argument("--epochs", type=int, help="training.epochs for both")
    ap.add_argument("--max-steps", type=int, help="training.max_steps_per_epoch for both (smoke runs)")
    ap.add_argument("--max-test", type=int, help="data.max_test_samples for both (smoke runs)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="config override for both (repeatable)")
    ap.add_argument("--np", type=int, default=2, help="ranks on each side (default 2)")
    ap.add_argument("--python", default="/usr/bin/python3", help="the Python with torch, for DDP")
    ap.add_argument("--mpirun", default="mpirun")
    ap.add_argument("--work-dir", help="logs, worker outputs, DDP state (default: a new temp folder)")
    ap.add_argument("--echo", action="store_true", help="also print every line of the children's output")
    args = ap.parse_args()

    config = os.path.join(REPO, args.config) if not os.path.isabs(args.config) else args.config
    build = os.path.join(REPO, args.build) if not os.path.isabs(args.build) else args.build
    binary = os.path.join(build, "worker", "resnext_worker")
    if not os.access(binary, os.X_OK):
        sys.exit(f"no worker binary at {binary} (build it: ninja -C {args.build} resnext_worker)")
    overrides = list(args.set)
    for key, value in (("training.epochs", args.epochs), ("training.max_steps_per_epoch", args.max_steps),
                       ("data.max_test_samples", args.max_test)):
        if value is not None:
            overrides.append(f"{key}={value}")
    work = args.work_dir or tempfile.mkdtemp(prefix="time_to_accuracy-")
    os.makedirs(work, exist_ok=True)
    print(f"config {args.config}, overrides {overrides or 'none'}, target {args.target}, work dir {work}")

    worker_env = dict(os.environ)
    if os.geteuid() == 0:  # Open MPI refuses to run as root without both
        worker_env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    ddp_env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1",
                   PYTHONPATH=os.pathsep.join(filter(None, [os.path.join(REPO, "bench", "python"),
                                                            os.environ.get("PYTHONPATH")])))
    sets = [a for kv in overrides for a in ("--set", kv)]
    results = []  # per round: (worker epochs, ddp epochs, weights verdict)
    try:
        for r in range(1, args.rounds + 1):
            out = os.path.join(work, f"worker-{r}")
            worker_cmd = [args.mpirun, "-np", str(args.np), "--bind-to", "core", "--map-by", "core", binary,
                          "--config", config, "--set", f"output.dir={out}"] + sets
            w = run(f"round {r} worker", worker_cmd, worker_env, WORKER_EPOCH, args.timeout,
                    os.path.join(work, f"worker-{r}.log"), args.echo)
            state = os.path.join(work, f"ddp-{r}.pt")
            # --redirects/--tee 1: torch 1.13's launcher crashes on Python 3.11 with the default 0.
            ddp_cmd = [args.python, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                       str(args.np), "--redirects", "1", "--tee", "1",
                       os.path.join(REPO, "bench", "accuracy", "ddp_fashion.py"), "--config", config,
                       "--save-state", state] + sets
            d = run(f"round {r} DDP", ddp_cmd, ddp_env, DDP_EPOCH, args.timeout,
                    os.path.join(work, f"ddp-{r}.log"), args.echo)
            results.append((w, d, compare_weights(out, state)))
    except ChildFailed as e:
        print(f"\nFAILED: {e}", file=sys.stderr, flush=True)
        sys.exit(1)

    pct = f"{100 * args.target:g}%"
    ratios = []
    for r, (w, d, weights) in enumerate(results, 1):
        print_table(f"round {r} worker", w)
        print_table(f"round {r} DDP", d)
        tw, td = time_to(w, args.target), time_to(d, args.target)
        best_w = max((a for _, a, _ in w if a is not None), default=0.0)
        best_d = max((a for _, a, _ in d if a is not None), default=0.0)
        fw = f"{tw:.1f} s" if tw is not None else f"not reached (best {best_w:.4f})"
        fd = f"{td:.1f} s" if td is not None else f"not reached (best {best_d:.4f})"
        ratio = td / tw if tw is not None and td is not None else None
        if ratio is not None:
            ratios.append((tw, td, ratio))
        print(f"\nround {r}: time to {pct}: worker {fw}, DDP {fd}, ratio DDP/worker "
              f"{'n/a' if ratio is None else f'{ratio:.3f}'}")
        print(f"round {r}: final weights: {weights}")
    print()
    for r, (w, d, _) in enumerate(results, 1):
        tw, td = time_to(w, args.target), time_to(d, args.target)
        if tw is not None and td is not None:
            print(f"RESULT round {r}: time to {pct}: worker {tw:.1f} s, DDP {td:.1f} s, ratio DDP/worker {td / tw:.3f}")
        else:
            print(f"RESULT round {r}: time to {pct}: target not reached by "
                  + " and ".join(n for n, t in (("worker", tw), ("DDP", td)) if t is None))
    if ratios:
        print(f"RESULT mean over {len(ratios)} round(s): time to {pct}: worker {statistics.mean(x[0] for x in ratios):.1f} s, "
              f"DDP {statistics.mean(x[1] for x in ratios):.1f} s, ratio DDP/worker "
              f"{statistics.mean(x[2] for x in ratios):.3f}")
    print(f"logs: {work}")


if __name__ == "__main__":
    main()
