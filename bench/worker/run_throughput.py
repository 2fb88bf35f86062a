#!/usr/bin/env python3
"""Training throughput side by side (bench/README.md "## Training throughput").

usage: /usr/bin/python3 bench/worker/run_throughput.py [--build DIR] [--rounds 2] [--steps 60]

Per round, alternating so machine load hits every variant alike:
  worker-b25   resnext_worker, np=2, distributed.bucket_mb=25 (first bucket 1 MB: the 0.6 MB model
               fits the first bucket, so one all-reduce after backward, as DDP has for it too)
  worker-b0.1  resnext_worker, np=2, bucket_mb=0.1, first_bucket_mb=0.02 (6 buckets: overlap)
  worker-b0    resnext_worker, np=2, distributed.bucket_mb=0 (one all-reduce per parameter)
  ddp          PyTorch DDP (gloo) in Python, np=2, same architecture (bench/worker/ddp_resnext.py)
  worker-np1   resnext_worker, np=1, bucket_mb=25 (for scaling efficiency)
  2x-solo      control: two independent np=1 workers at once on cores 0 and 1 (no communication)
All: resnext20_tiny, per-rank batch 64, one intra-op thread and one core per rank. The worker reads
Fashion-MNIST through its normal loader (configs/fashion_mnist_small.json); DDP uses synthetic input.
Images/s after warm-up: worker = mean of rank 0's logged window totals, first window dropped;
DDP = steps after --warmup. Exposed comm share = comm_exposed / total step time from result.json.

--model resnext50_32x4d (issue 11's CPU target) runs instead, per round:
  worker       resnext_worker, np=2, default buckets (25 MB), fused SGD, contiguous (NCHW)
  worker-cl    the same with data.channels_last and model.fused_bn_relu
  ddp          PyTorch DDP (gloo), torchvision's resnext50_32x4d, NCHW
  ddp-cl       the same in channels_last
All on in-memory synthetic CIFAR-10-shaped data (3x32x32, 10 classes), per-rank batch 32, SGD with
momentum 0.9, Nesterov, weight decay 5e-4; one intra-op thread and one core per rank.
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile

SRC = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PY = "/usr/bin/python3"
MPIEXEC = ["mpiexec", "--allow-run-as-root", "--bind-to", "core", "--map-by", "core"]
WINDOW = re.compile(r"images/s [0-9.]+ \(total ([0-9.]+)\)")


# Worker settings of --model resnext50_32x4d: the synthetic CIFAR-10 data needs no files.
R50 = ["model.preset=resnext50_32x4d", "data.format=synthetic", "data.path=", "training.batch_size=32",
       "training.optimizer.fused=true"]


def worker(build, np, bucket_mb, steps, out, first_mb=1, config="fashion_mnist_small.json", extra=()):
    cmd = MPIEXEC + ["-np", str(np), os.path.join(build, "worker", "resnext_worker"), "train",
                     "--config", os.path.join(SRC, "configs", config), "--out", out]
    for s in list(extra) + ["training.threads=1", f"distributed.bucket_mb={bucket_mb}", f"distributed.first_bucket_mb={first_mb}",
              f"training.max_steps_per_epoch={steps}",
              "training.epochs=1", "training.log_every_steps=10", "data.max_test_samples=256",
              "data.num_workers=1"]:
        cmd += ["--set", s]
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=900)
    if p.returncode != 0:
        sys.exit(f"worker failed ({p.returncode}):\n{p.stdout[-3000:]}")
    windows = [float(x) for x in WINDOW.findall(p.stdout)]
    with open(os.path.join(out, "result.json")) as f:
        rec = json.load(f)
    share = statistics.mean(r["step_time_ms"]["comm_exposed"] / r["step_time_ms"]["total"] for r in rec["ranks"])
    red = rec.get("reducer", {})
    return {"ips": statistics.mean(windows[1:]), "comm_share": share,
            "exposed_ms": red.get("mean_exposed_ms"), "buckets": red.get("buckets", {}).get("count"),
            "step_ms": statistics.mean(r["step_time_ms"]["total"] for r in rec["ranks"]),
            "straggler": red.get("straggler")}


def two_solo(build, steps, tmp):
    """Control: two independent np=1 workers at once, pinned to cores 0 and 1 (no communication).
    Their summed images/s is what np=2 could reach on this machine if communication were free."""
    procs = []
    for core in (0, 1):
        out = os.path.join(tmp, f"solo{core}")
        cmd = ["taskset", "-c", str(core), "mpiexec", "--allow-run-as-root", "--bind-to", "none", "-np", "1",
               os.path.join(build, "worker", "resnext_worker"), "train",
               "--config", os.path.join(SRC, "configs", "fashion_mnist_small.json"), "--out", out]
        for s in ["training.threads=1", f"training.max_steps_per_epoch={steps}", "training.epochs=1",
                  "training.log_every_steps=10", "data.max_test_samples=256", "data.num_workers=1"]:
            cmd += ["--set", s]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    total = 0.0
    for p in procs:
        log, _ = p.communicate(timeout=900)
        if p.returncode != 0:
            sys.exit(f"solo worker failed ({p.returncode}):\n{log[-3000:]}")
        total += statistics.mean(float(x) for x in WINDOW.findall(log)[1:])
    return {"ips": total}


def ddp(steps, extra=()):
    # --redirects/--tee 1: torch 1.13's launcher fails on Python 3.11 with the default "0" (its
    # Std.from_str finds no enum member for 0 there), so stdout goes to a log and is tee'd back.
    cmd = [PY, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--redirects", "1", "--tee", "1",
           "--master_port", "29533",
           os.path.join(SRC, "bench", "worker", "ddp_resnext.py"), "--steps", str(steps), "--warmup", "10", *extra]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.path.join(SRC, "bench", "python"))
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=900, env=env)
    m = re.search(r"RESULT ddp total_images_per_sec=([0-9.]+)", p.stdout)
    if p.returncode != 0 or not m:
        sys.exit(f"ddp failed ({p.returncode}):\n{p.stdout[-3000:]}")
    return {"ips": float(m.group(1))}


def print_rows(rows):
    """One line per variant: images/s per round and, for the worker, its communication and step time."""
    for k, v in rows.items():
        line = f"{k:11s} images/s " + " ".join(f"{x['ips']:.1f}" for x in v)
        if "comm_share" in v[0]:
            line += "  exposed comm " + " ".join(f"{100 * x['comm_share']:.1f}%" for x in v)
            line += "  mean exposed ms/step " + " ".join(f"{x['exposed_ms']:.2f}" for x in v)
            line += "  step ms " + " ".join(f"{x['step_ms']:.1f}" for x in v)
            line += f"  buckets {v[0]['buckets']}"
        print(line)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(SRC, "build-reducer"))
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--model", default="resnext20_tiny", choices=["resnext20_tiny", "resnext50_32x4d"])
    args = ap.parse_args()
    if args.model == "resnext50_32x4d":
        return main_resnext50(args)
    rows = {k: [] for k in ("worker-b25", "worker-b0.1", "worker-b0", "ddp", "worker-np1", "2x-solo")}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            rows["worker-b25"].append(worker(args.build, 2, 25, args.steps, os.path.join(tmp, f"b25_{r}")))
            rows["worker-b0.1"].append(worker(args.build, 2, 0.1, args.steps, os.path.join(tmp, f"b01_{r}"), 0.02))
            rows["worker-b0"].append(worker(args.build, 2, 0, args.steps, os.path.join(tmp, f"b0_{r}")))
            rows["ddp"].append(ddp(args.steps))
            rows["worker-np1"].append(worker(args.build, 1, 25, args.steps, os.path.join(tmp, f"np1_{r}")))
            rows["2x-solo"].append(two_solo(args.build, args.steps, tmp))
            print(f"round {r}: " + ", ".join(f"{k} {v[-1]['ips']:.1f}" for k, v in rows.items()), flush=True)
    print_rows(rows)
    mean = {k: statistics.mean(x["ips"] for x in v) for k, v in rows.items()}
    per_round = [rows["worker-b25"][i]["ips"] / rows["ddp"][i]["ips"] for i in range(args.rounds)]
    print("RESULT worker/ddp = " + " ".join(f"{x:.3f}" for x in per_round) + f" (mean {statistics.mean(per_round):.3f})")
    print("RESULT worker-b0.1/ddp = " + " ".join(
        f"{rows['worker-b0.1'][i]['ips'] / rows['ddp'][i]['ips']:.3f}" for i in range(args.rounds)))
    print("RESULT worker-b0/ddp = " + " ".join(
        f"{rows['worker-b0'][i]['ips'] / rows['ddp'][i]['ips']:.3f}" for i in range(args.rounds)))
    eff = [rows["worker-b25"][i]["ips"] / (2 * rows["worker-np1"][i]["ips"]) for i in range(args.rounds)]
    print("RESULT scaling efficiency np2/(2*np1) = " + " ".join(f"{x:.3f}" for x in eff))
    ctl = [rows["2x-solo"][i]["ips"] / (2 * rows["worker-np1"][i]["ips"]) for i in range(args.rounds)]
    print("RESULT control: 2 concurrent solo workers / (2*np1) = " + " ".join(f"{x:.3f}" for x in ctl))
    vs = [rows["worker-b25"][i]["ips"] / rows["2x-solo"][i]["ips"] for i in range(args.rounds)]
    print("RESULT np2 / 2 concurrent solo workers = " + " ".join(f"{x:.3f}" for x in vs))
    print("RESULT straggler (last b25 run): " + json.dumps(rows["worker-b25"][-1]["straggler"]))
    print("RESULT means " + json.dumps({k: round(v, 1) for k, v in mean.items()}))


def main_resnext50(args):
    """Issue 11's CPU target: np=2, one core per rank, resnext50_32x4d at 32x32, batch 32 per rank."""
    cl = ["data.channels_last=true", "model.fused_bn_relu=true"]
    ddp_args = ["--model", "resnext50_32x4d", "--batch", "32"]
    rows = {k: [] for k in ("worker", "worker-cl", "ddp", "ddp-cl")}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            rows["worker"].append(worker(args.build, 2, 25, args.steps, os.path.join(tmp, f"w_{r}"),
                                         config="cifar10_small.json", extra=R50))
            rows["worker-cl"].append(worker(args.build, 2, 25, args.steps, os.path.join(tmp, f"wcl_{r}"),
                                            config="cifar10_small.json", extra=R50 + cl))
            rows["ddp"].append(ddp(args.steps, ddp_args))
            rows["ddp-cl"].append(ddp(args.steps, ddp_args + ["--channels-last"]))
            print(f"round {r}: " + ", ".join(f"{k} {v[-1]['ips']:.1f}" for k, v in rows.items()), flush=True)
    print_rows(rows)
    for num, den in (("worker", "ddp"), ("worker-cl", "ddp-cl")):
        ratios = [rows[num][i]["ips"] / rows[den][i]["ips"] for i in range(args.rounds)]
        print(f"RESULT {num}/{den} = " + " ".join(f"{x:.3f}" for x in ratios) + f" (mean {statistics.mean(ratios):.3f})")
    best = [max(rows["worker"][i]["ips"], rows["worker-cl"][i]["ips"]) /
            max(rows["ddp"][i]["ips"], rows["ddp-cl"][i]["ips"]) for i in range(args.rounds)]
    print("RESULT best worker / best ddp = " + " ".join(f"{x:.3f}" for x in best) +
          f" (mean {statistics.mean(best):.3f})")


if __name__ == "__main__":
    main()
