#!/usr/bin/env python3
"""The fused optimizer against the per-parameter one, inside the real worker (bench/README.md
"## Optimizer step").

usage: python3 bench/worker/optimizer_step.py [--build DIR] [--rounds 3] [--steps 30] [--optimizer sgd|adam|adamw]

Per round, alternating so machine load hits both alike, resnext_worker trains at np=1 with one thread
for --steps steps with training.optimizer.fused true, then false, on two models: resnext20_tiny on
Fashion-MNIST (68 parameter tensors, 0.15 M parameters: dispatch-bound) and resnext50_32x4d on the
in-memory synthetic CIFAR-10 data at 32x32, batch 32 (161 tensors, 23 M: memory-bound). Reads the
optimizer phase and the whole step (ms, from result.json's step_time_ms) and prints per-round ratios.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

SRC = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
MODELS = {
    "resnext20_tiny": ["--config", "configs/fashion_mnist_small.json", "--set", "training.batch_size=64"],
    "resnext50_32x4d": ["--config", "configs/cifar10_small.json", "--set", "model.preset=resnext50_32x4d",
                        "--set", "data.format=synthetic", "--set", "data.path=", "--set", "training.batch_size=32"],
}


def run(build, model, fused, steps, out, optimizer="sgd"):
    cmd = [os.path.join(build, "worker", "resnext_worker"), "train", "--out", out] + MODELS[model]
    for s in ["training.threads=1", "data.num_workers=1", f"training.max_steps_per_epoch={steps}", "training.epochs=1",
              "data.max_test_samples=64", f"training.optimizer.fused={'true' if fused else 'false'}",
              f"training.optimizer.name={optimizer}"]:
        cmd += ["--set", s]
    p = subprocess.run(cmd, cwd=SRC, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=1800)
    if p.returncode != 0:
        sys.exit(f"worker failed ({p.returncode}): {' '.join(cmd)}\n{p.stdout[-3000:]}")
    with open(os.path.join(out, "result.json")) as f:
        rec = json.load(f)
    st = rec["ranks"][0]["step_time_ms"]
    return st["optimizer"], st["total"], rec.get("numerics", {}).get("fused_optimizer")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(SRC, "build"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--optimizer", default="sgd", choices=["sgd", "adam", "adamw"])
    a = ap.parse_args()
    print("| model | round | per-parameter optimizer ms | fused optimizer ms | ratio | step ms per-param / fused | fused |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="rx_optim_bench_") as tmp:
        for r in range(a.rounds):
            for model in a.models.split(","):
                plain = run(a.build, model, False, a.steps, os.path.join(tmp, f"{model}-{r}-plain"), a.optimizer)
                fused = run(a.build, model, True, a.steps, os.path.join(tmp, f"{model}-{r}-fused"), a.optimizer)
                print(f"| {model} | {r + 1} | {plain[0]:.2f} | {fused[0]:.2f} | {plain[0] / fused[0]:.2f}x | "
                      f"{plain[1]:.1f} / {fused[1]:.1f} | {fused[2]} |", flush=True)


if __name__ == "__main__":
    main()
