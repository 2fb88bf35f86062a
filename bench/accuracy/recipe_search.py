#!/usr/bin/env python3
"""Recipe search for the Fashion-MNIST configs (issue 17), run on a lent GPU so that dozens of
candidate recipes finish in minutes instead of days of the 2-core machine.

Accuracy per epoch does not depend on the device, so this answers "how many epochs of which model and
recipe reach 92% / 94.5%"; bench/README.md's CPU throughput of each model turns that into CPU time, and
the chosen recipes are then run for real by resnext_worker on the CPU machine (the figures that count).

The model is the worker's CIFAR ResNeXt (bench/python/resnext_torch.py). Augmentation is done per batch
on the device with the worker's semantics ([Order] in common/data/augment.h: zero-pixel padding crop,
flip, then random erasing of one rectangle filled with 0 after normalisation, i.e. the dataset mean);
the random draws differ from the worker's (they are not the worker's per-sample RNG). SGD with Nesterov
momentum, weight decay on every parameter, per-step linear warm-up then cosine to 0, label smoothing,
and optionally an EMA of parameters and buffers evaluated beside the raw weights.

    PYTHONPATH=bench/python python3 bench/accuracy/recipe_search.py --data DIR --out DIR [--jobs 10]
        [--only NAME,NAME] [--smoke]

Writes OUT/NAME.jsonl: one line per epoch {"epoch", "test_acc", "ema_acc", "train_loss", "seconds"}.
"""
import argparse
import copy
import json
import math
import os
import subprocess
import sys
import time


TINY = dict(depth=20, cardinality=4, base_width=16, stem=32, base_planes=16)
D11 = dict(depth=11, cardinality=4, base_width=16, stem=32, base_planes=16)
D29 = dict(depth=29, cardinality=4, base_width=16, stem=32, base_planes=16)
BP32 = dict(depth=20, cardinality=4, base_width=16, stem=32, base_planes=32)
C8 = dict(depth=20, cardinality=8, base_width=16, stem=32, base_planes=16)
BP24 = dict(depth=20, cardinality=4, base_width=16, stem=32, base_planes=24)

BASE = dict(model=TINY, epochs=5, batch=128, lr=0.1, warmup=0.1, wd=5e-4, crop=0, flip=True, erase=0.0,
            smoothing=0.0, ema=0.0)


def candidates():
    c = {}

    def add(name, **kw):
        d = copy.deepcopy(BASE)
        d.update(kw)
        c[name] = d

    # fast: the fewest epochs (of the cheapest models) to 92%
    for ep in (3, 4, 5, 6):
        add(f"fast_tiny_e{ep}", epochs=ep)
    add("fast_tiny_e4_lr02", epochs=4, lr=0.2)
    add("fast_tiny_e4_ls", epochs=4, smoothing=0.1)
    add("fast_tiny_e4_b64", epochs=4, batch=64, lr=0.05)
    add("fast_tiny_e4_crop1", epochs=4, crop=1)
    add("fast_d11_e4", model=D11, epochs=4)
    add("fast_d11_e5", model=D11, epochs=5)
    add("fast_d11_e6", model=D11, epochs=6)
    add("fast_tiny_e5_ema", epochs=5, ema=0.998)
    # best: >= 94.5% in <= 2.5 h of the CPU machine
    reg = dict(crop=2, erase=0.5, smoothing=0.1)
    add("best_tiny_e30", epochs=30, **reg)
    add("best_tiny_e40_ema", epochs=40, ema=0.999, **reg)
    add("best_tiny_e40_noerase_ema", epochs=40, crop=2, smoothing=0.1, ema=0.999)
    add("best_d29_e30_ema", model=D29, epochs=30, ema=0.999, **reg)
    add("best_c8_e30_ema", model=C8, epochs=30, ema=0.999, **reg)
    add("best_bp24_e20_ema", model=BP24, epochs=20, ema=0.999, **reg)
    add("best_bp32_e15_ema", model=BP32, epochs=15, ema=0.999, **reg)
    return c


def train_one(name, cfg, data_dir, out_dir, smoke):
    import torch
    import torch.nn.functional as F
    from resnext_torch import CifarResNeXt

    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(1)
    torch.backends.cudnn.benchmark = True
    mean, std = 0.2860, 0.3530
    from ddp_fashion import read_idx  # the worker's IDX reading, ported once (bench/accuracy)

    xtr, ytr = read_idx(data_dir, "train")
    xte, yte = read_idx(data_dir, "test")
    if smoke:
        xtr, ytr, xte, yte = xtr[:512], ytr[:512], xte[:256], yte[:256]
    xtr = torch.tensor(xtr, device=dev).float().div_(255).unsqueeze(1)
    xte = (torch.tensor(xte, device=dev).float().div_(255).unsqueeze(1) - mean) / std
    ytr = torch.tensor(ytr, device=dev).long()
    yte = torch.tensor(yte, device=dev).long()
    m = cfg["model"]
    model = CifarResNeXt(m["depth"], m["cardinality"], m["base_width"], num_classes=10, in_channels=1,
                         stem=m["stem"], base_planes=m["base_planes"]).to(dev)
    ema = None
    if cfg["ema"] > 0:
        ema = copy.deepcopy(model)
        for p in ema.parameters():
            p.requires_grad_(False)
    opt = torch.optim.SGD(model.parameters(), lr=cfg["lr"], momentum=0.9, nesterov=True, weight_decay=cfg["wd"])
    n, bs = xtr.shape[0], cfg["batch"]
    steps_per_epoch = n // bs
    total = steps_per_epoch * cfg["epochs"]
    warm = int(cfg["warmup"] * steps_per_epoch)
    g = torch.Generator(device=dev).manual_seed(1)
    p = cfg["crop"]
    out = open(os.path.join(out_dir, name + ".jsonl"), "w")
    step = 0

    def evaluate(net):
        net.eval()
        correct = 0
        with torch.no_grad():
            for i in range(0, xte.shape[0], 1000):
                correct += (net(xte[i:i + 1000]).argmax(1) == yte[i:i + 1000]).sum().item()
        net.train()
        return correct / xte.shape[0]

    t0 = time.time()
    for epoch in range(cfg["epochs"]):
        perm = torch.randperm(n, device=dev, generator=g)
        loss_sum = 0.0
        for b in range(steps_per_epoch):
            idx = perm[b * bs:(b + 1) * bs]
            x = xtr[idx]
            B = x.shape[0]
            if p > 0:
                xp = F.pad(x, (p, p, p, p))
                sy = torch.randint(0, 2 * p + 1, (B,), device=dev, generator=g)
                sx = torch.randint(0, 2 * p + 1, (B,), device=dev, generator=g)
                ar = torch.arange(28, device=dev)
                rows = (sy[:, None] + ar)[:, :, None]
                cols = (sx[:, None] + ar)[:, None, :]
                x = xp[torch.arange(B, device=dev)[:, None, None], 0, rows, cols].unsqueeze(1)
            if cfg["flip"]:
                f = torch.rand(B, device=dev, generator=g) < 0.5
                x = torch.where(f[:, None, None, None], x.flip(-1), x)
            x = (x - mean) / std
            if cfg["erase"] > 0:
                area = 784 * (0.02 + 0.38 * torch.rand(B, device=dev, generator=g))
                logr = math.log(0.3) + (math.log(1 / 0.3) - math.log(0.3)) * torch.rand(B, device=dev, generator=g)
                r = torch.exp(logr)
                h = torch.sqrt(area * r).round().clamp(1, 28)
                w = torch.sqrt(area / r).round().clamp(1, 28)
                y0 = (torch.rand(B, device=dev, generator=g) * (29 - h)).floor()
                x0 = (torch.rand(B, device=dev, generator=g) * (29 - w)).floor()
                ar = torch.arange(28, device=dev).float()
                inside = ((ar[None, :, None] >= y0[:, None, None]) & (ar[None, :, None] < (y0 + h)[:, None, None]) &
                          (ar[None, None, :] >= x0[:, None, None]) & (ar[None, None, :] < (x0 + w)[:, None, None]))
                on = torch.rand(B, device=dev, generator=g) < cfg["erase"]
                x = x.masked_fill((inside & on[:, None, None]).unsqueeze(1), 0.0)
            lr = cfg["lr"] * (step + 1) / warm if step < warm else \
                0.5 * cfg["lr"] * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))
            for gr in opt.param_groups:
                gr["lr"] = lr
            loss = F.cross_entropy(model(x), ytr[idx], label_smoothing=cfg["smoothing"])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            if ema is not None:
                d = min(cfg["ema"], (1 + step) / (10 + step))
                with torch.no_grad():
                    for e, w in zip(ema.state_dict().values(), model.state_dict().values()):
                        if e.dtype.is_floating_point:
                            e.mul_(d).add_(w, alpha=1 - d)
                        else:
                            e.copy_(w)
            loss_sum += loss.detach()
        rec = {"epoch": epoch + 1, "test_acc": evaluate(model), "ema_acc": evaluate(ema) if ema else None,
               "train_loss": float(loss_sum) / steps_per_epoch, "seconds": round(time.time() - t0, 1)}
        out.write(json.dumps(rec) + "\n")
        out.flush()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--jobs", type=int, default=10)
    ap.add_argument("--only", default="")
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--one", default="")  # internal: train this candidate in this process
    args = ap.parse_args()
    cands = candidates()
    os.makedirs(args.out, exist_ok=True)
    if args.one:
        cfg = cands[args.one]
        if args.smoke:
            cfg["epochs"] = 1
        train_one(args.one, cfg, args.data, args.out, args.smoke)
        return
    names = [n for n in cands if not args.only or n in args.only.split(",")]
    # Longest first, so the long runs are not left to start last.
    names.sort(key=lambda n: -cands[n]["epochs"])
    running = []
    while names or running:
        while names and len(running) < args.jobs:
            n = names.pop(0)
            cmd = [sys.executable, __file__, "--data", args.data, "--out", args.out, "--one", n]
            if args.smoke:
                cmd.append("--smoke")
            log = open(os.path.join(args.out, n + ".log"), "w")
            running.append((n, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)))
        time.sleep(0.5)
        for n, pr in list(running):
            if pr.poll() is not None:
                print(f"{n}: exit {pr.returncode}", flush=True)
                running.remove((n, pr))
    for n in cands:
        path = os.path.join(args.out, n + ".jsonl")
        if os.path.exists(path):
            lines = [json.loads(l) for l in open(path)]
            if lines:
                last = lines[-1]
                print(n, "epochs", last["epoch"], "acc", last["test_acc"], "ema", last["ema_acc"], "s", last["seconds"])


if __name__ == "__main__":
    main()
