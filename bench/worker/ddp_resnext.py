#!/usr/bin/env python3
"""PyTorch DDP baseline for the training-throughput benchmark (bench/README.md "## Training throughput").

A Python ResNeXt identical in architecture to the worker's resnext20_tiny (bench/python/resnext_torch.py),
trained with torch.nn.parallel.DistributedDataParallel over gloo on synthetic random input, one
intra-op thread and one core per rank. bench/worker/run_throughput.py launches it; by hand:

    PYTHONPATH=bench/python /usr/bin/python3 -m torch.distributed.run --nproc_per_node 2 \
        bench/worker/ddp_resnext.py --steps 60

Prints one line per rank "RESULT ddp rank=R images_per_sec=X" (after --warmup steps) and, on rank 0,
"RESULT ddp total_images_per_sec=X". --check-params prints the parameter count and exits.
"""
import argparse
import os
import sys
import time

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from resnext_torch import resnext20_tiny


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--bucket-mb", type=float, default=25.0)
    ap.add_argument("--model", default="resnext20_tiny", choices=["resnext20_tiny", "resnext50_32x4d"])
    ap.add_argument("--channels-last", action="store_true", help="model and input in channels_last")
    ap.add_argument("--check-params", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.model == "resnext20_tiny":
        model, shape = resnext20_tiny(), (1, 28, 28)
    else:  # torchvision's, as the worker's resnext50_32x4d preset (23,000,394 parameters at 10 classes)
        import torchvision
        model, shape = torchvision.models.resnext50_32x4d(num_classes=10), (3, 32, 32)
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    if args.check_params:
        print("params", sum(p.numel() for p in model.parameters()))
        return
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    local = int(os.environ.get("LOCAL_RANK", rank))
    if hasattr(os, "sched_setaffinity") and local < os.cpu_count():
        os.sched_setaffinity(0, {local})  # one core per rank, as mpirun --bind-to core does for the worker
    ddp = nn.parallel.DistributedDataParallel(model, bucket_cap_mb=args.bucket_mb)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    g = torch.Generator().manual_seed(1 + rank)
    batches = [(torch.randn(args.batch, *shape, generator=g).contiguous(memory_format=fmt),
                torch.randint(0, 10, (args.batch,), generator=g)) for _ in range(8)]
    t0 = None
    for step in range(args.warmup + args.steps):
        if step == args.warmup:
            dist.barrier()
            t0 = time.perf_counter()
        x, y = batches[step % len(batches)]
        opt.zero_grad()
        F.cross_entropy(ddp(x), y).backward()
        opt.step()
    elapsed = time.perf_counter() - t0
    ips = args.steps * args.batch / elapsed
    print(f"RESULT ddp rank={rank} images_per_sec={ips:.1f}", flush=True)
    all_ips = [None] * world
    dist.all_gather_object(all_ips, ips)
    if rank == 0:
        print(f"RESULT ddp total_images_per_sec={sum(all_ips):.1f}", flush=True)
    dist.barrier()
    # destroy_process_group() sometimes hangs one gloo rank at exit here (torch 1.13); the
    # results are out and every rank has passed the barrier, so leave without teardown.
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
