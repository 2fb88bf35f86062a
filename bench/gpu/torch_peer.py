#!/usr/bin/env python3
"""PyTorch training-throughput peer for the GPU benchmark (bench/README.md "## GPU training").

One process trains one model at one batch and input size in several variants, one after another:

    PYTHONPATH=bench/python python3 bench/gpu/torch_peer.py --model resnext29_8x64d --hw 32 --batch 128 \
        --variants fp32,bf16,bf16-cl,bf16-compile [--device cuda] [--warmup 10 --steps 40]

A variant is a precision (fp32 | bf16 = torch.autocast bfloat16) with optional "-cl" (channels_last
model and input) and "-compile" (torch.compile; needs torch >= 2.0, else reported "unavailable").
Input and labels are generated on the device once, so only the model, loss and SGD step are timed.
Every variant starts from a fresh model, optimizer and CUDA peak-memory counter.

Prints one JSON object per line prefixed "RESULT ": first {"kind": "env"} (versions, device, TF32
flags), then {"kind": "case"} per variant with images_per_sec or an error. --count-params prints
{"kind": "params"} per --model (comma list) with parameter and MAC counts, and exits 1 when a
known model's count differs from the paper/torchvision figure.
Runs on torch 1.13 (Python 3.11) and torch 2.x alike.
"""
import argparse
import contextlib
import json
import platform
import sys
import time
import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F

from resnext_torch import CifarResNeXt

# The C++ worker's `describe` gives the same counts (10 classes).
EXPECTED_PARAMS = {"resnext29_8x64d": 34426698, "resnext50_32x4d": 23000394}
# CIFAR presets of common/model/resnext_spec.cpp: (depth, cardinality, base_width); stem 64, planes 64.
CIFAR_PRESETS = {"resnext29_8x64d": (29, 8, 64), "resnext29_16x64d": (29, 16, 64),
                 "resnext29_4x16d": (29, 4, 16), "resnext11_4x16d": (11, 4, 16)}


def build_model(name, classes):
    if name in CIFAR_PRESETS:
        return CifarResNeXt(*CIFAR_PRESETS[name], num_classes=classes)
    import torchvision  # only the ImageNet-shaped presets need it
    if not hasattr(torchvision.models, name):
        raise SystemExit(f"unknown model {name!r} (CIFAR presets: {', '.join(CIFAR_PRESETS)}, or a torchvision name)")
    return getattr(torchvision.models, name)(num_classes=classes)


def count_macs(model, hw):
    """Multiply-accumulates of one forward at batch 1, counted as the worker's MacCounter does:
    conv weight.numel() * output H * W, plus the fc weight.numel()."""
    total = [0]

    def hook(m, _inp, out):
        total[0] += m.weight.numel() * (out.shape[2] * out.shape[3] if out.dim() == 4 else 1)

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, 3, hw, hw))
    for h in handles:
        h.remove()
    return total[0]


def env_info(device):
    info = {"kind": "env", "python": platform.python_version(), "torch": torch.__version__,
            "torch_cuda": torch.version.cuda, "device": str(device),
            "torch_compile_available": hasattr(torch, "compile"),
            "cudnn_benchmark": torch.backends.cudnn.benchmark}
    try:
        import torchvision
        info["torchvision"] = torchvision.__version__
    except Exception as e:  # noqa: BLE001 - the CIFAR models do not need it
        info["torchvision"] = f"unavailable: {e}"
    # TF32 stays at PyTorch's defaults (cuDNN convs may use TF32, cuBLAS matmuls not); record what
    # that is. torch >= 2.9 also has fp32_precision and warns on the legacy getters: read both, quietly.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for key, getter in [("cudnn_allow_tf32", lambda: torch.backends.cudnn.allow_tf32),
                            ("matmul_allow_tf32", lambda: torch.backends.cuda.matmul.allow_tf32),
                            ("cudnn_conv_fp32_precision", lambda: torch.backends.cudnn.conv.fp32_precision),
                            ("matmul_fp32_precision", lambda: torch.backends.cuda.matmul.fp32_precision)]:
            try:
                info[key] = getter()
            except Exception:  # noqa: BLE001 - attribute absent in this torch version
                info[key] = None
    if device.type == "cuda":
        info["device_name"] = torch.cuda.get_device_name(device)
        info["cudnn"] = torch.backends.cudnn.version()
        info["device_capability"] = ".".join(map(str, torch.cuda.get_device_capability(device)))
    return info


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_variant(args, variant, device):
    parts = variant.split("-")
    precision, flags = parts[0], set(parts[1:])
    if precision not in ("fp32", "bf16") or not flags <= {"cl", "compile"}:
        raise ValueError(f"bad variant {variant!r}: fp32|bf16 with optional -cl and -compile")
    cl, compiled = "cl" in flags, "compile" in flags
    rec = {"kind": "case", "model": args.model, "variant": variant, "precision": precision, "channels_last": cl,
           "mode": "compile" if compiled else "eager", "batch": args.batch, "hw": args.hw, "device": str(device),
           "warmup": args.warmup, "steps": args.steps}
    if compiled and not hasattr(torch, "compile"):
        rec.update(status="unavailable", error=f"torch.compile needs torch >= 2.0 (this is {torch.__version__})")
        return rec
    torch.manual_seed(0)
    fmt = torch.channels_last if cl else torch.contiguous_format
    model = build_model(args.model, args.classes).to(device).to(memory_format=fmt).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    x = torch.randn(args.batch, 3, args.hw, args.hw, device=device).contiguous(memory_format=fmt)
    y = torch.randint(0, args.classes, (args.batch,), device=device)
    fwd = torch.compile(model) if compiled else model

    def amp():
        if precision == "bf16":
            return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def step():
        opt.zero_grad(set_to_none=True)
        with amp():
            loss = F.cross_entropy(fwd(x), y)
        loss.backward()
        opt.step()
        return loss

    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    # The first step holds cuDNN's algorithm choice and, with -compile, the whole compilation.
    t0 = time.perf_counter()
    step()
    sync(device)
    rec["first_step_s"] = time.perf_counter() - t0
    for _ in range(max(0, args.warmup - 1)):
        step()
    sync(device)
    rec["warmup_s"] = time.perf_counter() - t0
    if compiled:
        rec["compile_s"] = rec["first_step_s"]
    t0 = time.perf_counter()
    for _ in range(args.steps):
        loss = step()
    sync(device)
    elapsed = time.perf_counter() - t0
    rec.update(status="ok", images_per_sec=args.steps * args.batch / elapsed, step_ms=1000 * elapsed / args.steps,
               timed_s=elapsed, last_loss=float(loss))
    if device.type == "cuda":
        rec["cuda_max_memory_allocated_bytes"] = torch.cuda.max_memory_allocated(device)
        rec["cuda_max_memory_reserved_bytes"] = torch.cuda.max_memory_reserved(device)
    return rec


def emit(obj):
    print("RESULT " + json.dumps(obj), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None,
                    help="preset name (default resnext29_8x64d); a comma list with --count-params (default: both)")
    ap.add_argument("--hw", type=int, default=32, help="input height = width")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--variants", default="fp32", help="comma list, e.g. fp32,bf16,bf16-cl,bf16-compile")
    ap.add_argument("--device", default="cuda", help="cuda | cuda:N | cpu")
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--threads", type=int, default=0, help="CPU intra-op threads (0 = torch default)")
    ap.add_argument("--cudnn-benchmark", type=int, default=1, choices=(0, 1),
                    help="torch.backends.cudnn.benchmark (default 1: autotuned, as the worker's training.cudnn_benchmark)")
    ap.add_argument("--time-limit-s", type=float, default=0, help="skip variants not started within this (0 = none)")
    ap.add_argument("--count-params", action="store_true", help="print parameter and MAC counts, then exit")
    args = ap.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.backends.cudnn.benchmark = bool(args.cudnn_benchmark)

    if args.count_params:
        names = args.model.split(",") if args.model else list(EXPECTED_PARAMS)
        bad = 0
        for name in names:
            model = build_model(name, args.classes)
            params = sum(p.numel() for p in model.parameters())
            expected = EXPECTED_PARAMS.get(name) if args.classes == 10 else None
            bad += expected is not None and params != expected
            emit({"kind": "params", "model": name, "classes": args.classes, "params": params,
                  "expected_params": expected, "macs_per_image": count_macs(model, args.hw), "hw": args.hw})
            print(f"{name}: {params:,} parameters" + ("" if expected is None else
                  (" (matches)" if params == expected else f" (EXPECTED {expected:,})")), flush=True)
        return 1 if bad else 0

    args.model = args.model or "resnext29_8x64d"
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        emit({"kind": "env", "error": "CUDA requested but torch.cuda.is_available() is False", "torch": torch.__version__})
        return 1
    emit(env_info(device))
    start, failures = time.monotonic(), 0
    for variant in [v for v in args.variants.split(",") if v]:
        if args.time_limit_s > 0 and time.monotonic() - start > args.time_limit_s:
            emit({"kind": "case", "model": args.model, "variant": variant, "status": "skipped",
                  "error": f"time limit {args.time_limit_s:.0f}s reached before this variant"})
            continue
        try:
            emit(run_variant(args, variant, device))
        except Exception as e:  # noqa: BLE001 - one variant failing (OOM, compiler) must not stop the rest
            failures += 1
            emit({"kind": "case", "model": args.model, "variant": variant, "status": "error",
                  "error": f"{type(e).__name__}: {str(e)[:500]}"})
        if device.type == "cuda":  # after the except block: its traceback no longer pins the tensors
            torch.cuda.empty_cache()
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
