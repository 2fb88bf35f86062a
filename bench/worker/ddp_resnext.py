#!/usr/bin/env python3
"""PyTorch DDP baseline for the training-throughput benchmark (bench/README.md "## Training throughput").

A Python ResNeXt identical in architecture to the worker's resnext20_tiny (common/model/resnext.cpp,
resnext_spec.cpp), trained with torch.nn.parallel.DistributedDataParallel over gloo on synthetic
random input, one intra-op thread and one core per rank. Launch with

    /usr/bin/python3 -m torch.distributed.run --nproc_per_node 2 bench/worker/ddp_resnext.py --steps 60

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


class Bottleneck(nn.Module):
    def __init__(self, cin, width, cout, groups, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, groups=groups, bias=False)  # v1.5 stride
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(out + identity)


class ResNeXtTiny(nn.Module):
    """resnext20_tiny: CIFAR stem (3x3, 32 ch), 3 stages x 2 blocks, cardinality 4, base width 16,
    stage planes 16/32/64 (x4 out), width = floor(planes*16/64)*4, stride 2 on stages 2-3."""

    def __init__(self, in_channels=1, num_classes=10, stem=32, planes=(16, 32, 64), blocks=2, cardinality=4,
                 base_width=16):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, stem, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        cin = stem
        stages = []
        for s, p in enumerate(planes):
            width = (p * base_width // 64) * cardinality
            cout = p * 4
            layers = []
            for b in range(blocks):
                layers.append(Bottleneck(cin, width, cout, cardinality, 2 if (b == 0 and s > 0) else 1))
                cin = cout
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3 = stages
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--bucket-mb", type=float, default=25.0)
    ap.add_argument("--check-params", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    model = ResNeXtTiny()
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
    batches = [(torch.randn(args.batch, 1, 28, 28, generator=g), torch.randint(0, 10, (args.batch,), generator=g))
               for _ in range(8)]
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
