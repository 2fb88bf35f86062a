#!/usr/bin/env python3
"""Where a bf16 channels-last training step spends its GPU time, by convolution kind (bench/README.md
"What bounds the fraction of peak").

    PYTHONPATH=bench/python python3 bench/gpu/conv_share.py [--model resnext29_8x64d] [--hw 32] [--batch 128]
        [--benchmark-limit N] [--out conv_share.json] [--quick]

1. The whole eager PyTorch step (autocast bf16, channels_last, cudnn.benchmark, SGD), timed with CUDA
   events: its ms and its FLOP rate as a share of the card's dense bf16 peak (gpu_bench.BF16_PEAK).
2. Every convolution of the model alone, at the shape it has in the step: bf16 weights and input,
   channels_last; its forward, input gradient (dgrad; the stem's input needs none) and weight gradient
   (wgrad), each the median of repeated CUDA-event timings. Grouped by kind (grouped 3x3, 1x1, the dense
   stem), with ms per step, TFLOP/s and share of peak.
3. The bound: the model's convolution FLOPs over the convolutions' summed time. A step cannot reach a
   larger share of peak than this however little the rest (BN, ReLU, adds, the optimizer) costs.
4. The grouped 3x3 layers again in fp16 and in NCHW, to see whether a layout or type would lift them.
--benchmark-limit sets torch.backends.cudnn.benchmark_limit (how many cuDNN engine configurations
cudnn.benchmark tries per shape; PyTorch's default is 10, 0 tries all). cuDNN keeps its choice per
shape for the life of the process, so compare limits in separate runs.
Prints a table and one "RESULT {json}" line; --out also writes the JSON. --quick: CPU smoke run
(tiny model and batch, wall-clock timing). Exit 1 if a timing failed.
"""
import argparse
import json
import os
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gpu_bench import BF16_PEAK  # noqa: E402
from torch_peer import build_model  # noqa: E402


class Timer:
    """Milliseconds of fn(): CUDA events on a GPU, perf_counter (after a sync) on the CPU."""

    def __init__(self, device):
        self.cuda = device.type == "cuda"

    def __call__(self, fn, reps, warmup=3):
        for _ in range(warmup):
            fn()
        times = []
        for _ in range(reps):
            if self.cuda:
                a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                a.record()
                fn()
                b.record()
                b.synchronize()
                times.append(a.elapsed_time(b))
            else:
                t0 = time.perf_counter()
                fn()
                times.append(1000 * (time.perf_counter() - t0))
        return statistics.median(times)


def kind_of(conv, first):
    if first:
        return "stem"
    if conv.groups > 1:
        return f"grouped {conv.kernel_size[0]}x{conv.kernel_size[1]}"
    return f"{conv.kernel_size[0]}x{conv.kernel_size[1]}"


def conv_layers(model, x, dtype):
    """(conv, input shape, output shape) for every Conv2d in forward order."""
    seen = []
    hooks = [m.register_forward_hook(lambda m, i, o: seen.append((m, tuple(i[0].shape), tuple(o.shape))))
             for m in model.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad(), torch.autocast(device_type=x.device.type, dtype=dtype):
        model(x)
    for h in hooks:
        h.remove()
    return seen


def time_conv(timer, conv, in_shape, out_shape, dtype, fmt, needs_dgrad, reps):
    """(forward, input-gradient, weight-gradient) ms of one convolution alone with conv's parameters;
    each gradient is a forward + backward computing only it, less the forward."""
    dev = conv.weight.device
    c = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                  groups=conv.groups, bias=False).to(dev, dtype).to(memory_format=fmt)
    x = torch.randn(in_shape, device=dev, dtype=dtype).contiguous(memory_format=fmt)
    gy = torch.randn(out_shape, device=dev, dtype=dtype).contiguous(memory_format=fmt)

    def fwd():
        with torch.no_grad():
            c(x)

    def fwd_bwd():
        c.weight.grad = None
        x.grad = None
        c(x).backward(gy)

    f = timer(fwd, reps)
    times = []
    for x_grad, w_grad in [(True, False), (False, True)]:
        if x_grad and not needs_dgrad:
            times.append(0.0)
            continue
        x.requires_grad_(x_grad)
        c.weight.requires_grad_(w_grad)
        times.append(max(0.0, timer(fwd_bwd, reps) - f))
    return f, times[0], times[1]


def time_step(timer, model, x, y, dtype, steps):
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device_type=x.device.type, dtype=dtype):
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()

    return timer(step, steps, warmup=5)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="resnext29_8x64d")
    ap.add_argument("--hw", type=int, default=32)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--reps", type=int, default=20, help="timings per measurement (the median is kept)")
    ap.add_argument("--benchmark-limit", type=int, default=None,
                    help="torch.backends.cudnn.benchmark_limit (default: torch's, 10; 0 = try every engine)")
    ap.add_argument("--out", default="", help="also write the JSON here")
    ap.add_argument("--quick", action="store_true", help="CPU smoke run: resnext11_4x16d, batch 2, 2 reps")
    args = ap.parse_args()
    if args.quick:
        args.model, args.batch, args.reps, device = "resnext11_4x16d", 2, 2, torch.device("cpu")
    elif not torch.cuda.is_available():
        print("conv_share: no CUDA device (use --quick for a CPU smoke run)", file=sys.stderr)
        return 1
    else:
        device = torch.device("cuda")
        torch.backends.cudnn.benchmark = True
        if args.benchmark_limit is not None:
            torch.backends.cudnn.benchmark_limit = args.benchmark_limit
    timer, bf16, cl = Timer(device), torch.bfloat16, torch.channels_last
    torch.manual_seed(0)
    model = build_model(args.model, args.classes).to(device).to(memory_format=cl).train()
    x = torch.randn(args.batch, 3, args.hw, args.hw, device=device).contiguous(memory_format=cl)
    y = torch.randint(0, args.classes, (args.batch,), device=device)
    layers = conv_layers(model, x, bf16)
    step_ms = time_step(timer, model, x, y, bf16, args.reps)

    cache = {}

    def timed(conv, in_shape, out_shape, dtype, fmt, first):
        """time_conv, once per distinct layer, type and layout: repeated blocks share a timing."""
        key = (conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.groups, in_shape, first,
               dtype, fmt)
        if key not in cache:
            cache[key] = time_conv(timer, conv, in_shape, out_shape, dtype, fmt, not first, args.reps)
        return cache[key]

    kinds = {}
    # As gpu_bench counts it: 3 x 2 x the MACs of one forward (every convolution and the classifier).
    model_flops = 6 * args.batch * sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))
    for i, (conv, in_shape, out_shape) in enumerate(layers):
        macs = conv.weight.numel() * out_shape[0] * out_shape[2] * out_shape[3]
        flops = 2 * macs * (3 if i > 0 else 2)  # forward, input gradient (not for the stem), weight gradient
        model_flops += 6 * macs
        f, dg, wg = timed(conv, in_shape, out_shape, bf16, cl, i == 0)
        k = kinds.setdefault(kind_of(conv, i == 0), {"layers": 0, "flops": 0, "fwd_ms": 0.0, "dgrad_ms": 0.0,
                                                     "wgrad_ms": 0.0})
        k["layers"] += 1
        k["flops"] += flops
        k["fwd_ms"] += f
        k["dgrad_ms"] += dg
        k["wgrad_ms"] += wg
    for k in kinds.values():
        k["ms"] = k["fwd_ms"] + k["dgrad_ms"] + k["wgrad_ms"]
    conv_ms = sum(k["ms"] for k in kinds.values())
    conv_flops = sum(k["flops"] for k in kinds.values())

    def share(flops, ms):
        return flops / (ms * 1e-3) / 1e12 / BF16_PEAK if ms > 0 else None

    # The grouped layers in other layouts and types: fp16 channels-last, bf16 NCHW (bf16 channels-last is
    # the timing above, from the cache).
    alternatives = {}
    grouped = [(c, i_s, o_s) for j, (c, i_s, o_s) in enumerate(layers) if j > 0 and c.groups > 1]
    for name, dtype, fmt in [("bf16 channels_last", bf16, cl), ("fp16 channels_last", torch.float16, cl),
                             ("bf16 NCHW", bf16, torch.contiguous_format)]:
        alternatives[name] = sum(sum(timed(c, i_s, o_s, dtype, fmt, False)) for c, i_s, o_s in grouped)

    report = {
        "model": args.model, "hw": args.hw, "batch": args.batch, "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__, "bf16_peak_tflops": BF16_PEAK,
        "cudnn_benchmark_limit": getattr(torch.backends.cudnn, "benchmark_limit", None),
        "step_ms": step_ms, "step_share_of_peak": share(model_flops, step_ms),
        "conv_ms": conv_ms, "conv_share_of_step": conv_ms / step_ms if step_ms > 0 else None,
        "conv_bound_share_of_peak": share(conv_flops, conv_ms),
        "kinds": {n: {"layers": k["layers"], "gflop_per_step": k["flops"] / 1e9, "fwd_ms": k["fwd_ms"],
                      "dgrad_ms": k["dgrad_ms"], "wgrad_ms": k["wgrad_ms"],
                      "tflops": k["flops"] / (k["ms"] * 1e-3) / 1e12 if k["ms"] > 0 else None,
                      "share_of_peak": share(k["flops"], k["ms"])} for n, k in kinds.items()},
        "grouped_alternatives_ms": alternatives,
    }
    print(f"{args.model} {args.hw}x{args.hw} batch {args.batch}, {report['device_name']}, torch {torch.__version__}")
    print(f"eager bf16-cl step: {step_ms:.2f} ms, {100 * (report['step_share_of_peak'] or 0):.1f}% of bf16 peak")
    print("| kind | layers | GFLOP/step | fwd ms | dgrad ms | wgrad ms | TFLOP/s | % of peak |\n"
          "|---|---|---|---|---|---|---|---|")
    for n, k in report["kinds"].items():
        print(f"| {n} | {k['layers']} | {k['gflop_per_step']:.1f} | {k['fwd_ms']:.2f} | {k['dgrad_ms']:.2f} | "
              f"{k['wgrad_ms']:.2f} | "
              f"{k['tflops'] or 0:.1f} | {100 * (k['share_of_peak'] or 0):.1f} |")
    print(f"convolutions alone: {conv_ms:.2f} ms = {100 * (report['conv_share_of_step'] or 0):.0f}% of the step; "
          f"bound on the step's share of peak: {100 * (report['conv_bound_share_of_peak'] or 0):.1f}%")
    print("grouped layers, fwd+bwd ms: " + ", ".join(f"{n} {v:.2f}" for n, v in alternatives.items()))
    print("RESULT " + json.dumps(report), flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=1)
    ok = step_ms > 0 and conv_ms > 0 and all(v > 0 for v in alternatives.values())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
