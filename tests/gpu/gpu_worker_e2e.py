#!/usr/bin/env python3
"""resnext_worker on a GPU, end to end (CTest label gpu; one test per scenario).

usage: gpu_worker_e2e.py record|resume|shared_gpu|mixed|graph   with RX_BINARY_DIR set and tests/python on PYTHONPATH
(CTest, launch/gpu_check.sh)

Skips with "SKIPPED: no CUDA ..." (exit 0) unless `resnext_worker devices --json` reports a CUDA build
with a visible GPU. Data: the synthetic set generated in memory (data.path ""), so no files are needed.
Every process has a timeout; a failure prints what was seen and exits 1.
"""
import json
import os
import re
import shutil
import subprocess
import sys

from rxtest import check, main, run_record, run_worker, skip, worker_path

WORKER = worker_path()
CONFIG = {
    "name": "gpu-e2e",
    "model": {"preset": "resnext11_4x16d", "num_classes": 10},
    "data": {"format": "synthetic", "path": "", "max_train_samples": 2048, "max_test_samples": 512,
             "num_workers": 4},
    "training": {"epochs": 1, "batch_size": 64, "log_every_steps": 8, "seed": 3,
                 "optimizer": {"name": "sgd", "lr": 0.05}},
    "checkpoint": {"every_epochs": 1},
}


def devices():
    """`resnext_worker devices --json`; skips the scenario unless it is a CUDA build that sees a GPU."""
    p = subprocess.run([WORKER, "devices", "--json"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                       timeout=120)
    check(p.returncode == 0, f"devices exited {p.returncode}", p.stdout)
    dev = json.loads(p.stdout)
    if not dev["cuda_build"]:
        skip("no CUDA in this build (CPU LibTorch; see launch/build_cuda.sh)")
    if dev["cuda_devices"] == 0:
        skip("no CUDA GPU visible")
    return dev


def run(tmp, out, np=0, extra=(), env=None, timeout=240):
    cfg = os.path.join(tmp, "config.json")
    with open(cfg, "w") as f:
        json.dump(CONFIG, f)
    rc, log, _ = run_worker(np, out, [], timeout, env=env, config=cfg, extra=extra)
    check(rc == 0, f"resnext_worker train on {np or 1} rank(s) {' '.join(extra)} exited {rc}", log)
    return run_record(out), log


def check_gpu_rank(rk, card):
    alloc, reserved = rk["cuda_peak_allocated_bytes"], rk["cuda_peak_reserved_bytes"]
    total = card["total_memory_bytes"]
    check(0 < alloc <= reserved < total, f"rank {rk['rank']}: CUDA peaks allocated {alloc} reserved {reserved} "
                                         f"not within (0, card memory {total})")
    check(rk["peak_memory_bytes"] == alloc, f"rank {rk['rank']}: peak_memory_bytes is not the CUDA peak")


def record(tmp, dev):
    r, log = run(tmp, os.path.join(tmp, "run"), extra=["--set", "training.device=cuda"])
    info, v = r["device_info"], r["versions"]
    check(info["type"] == "cuda" and info["name"] == dev["devices"][0]["name"] and info["name"].strip(),
          f"device_info {info}")
    check(info["total_memory_bytes"] > 0 and info.get("compute_capability"), f"device_info {info}")
    for key in ("cuda", "cuda_driver", "cudnn", "nccl", "libtorch"):
        check(v.get(key), f"versions lacks {key}: {v}")
    check(r["backend"] == "nccl", f"one rank on a GPU should use nccl, got {r['backend']}")
    check(r["device"].startswith("cuda"), f"device {r['device']}")
    check_gpu_rank(r["ranks"][0], info)
    check(r["ranks"][0]["images_per_sec"] > 0, "no throughput")
    check(r["final_test_accuracy"] > 0.5, f"the synthetic set is easy; accuracy {r['final_test_accuracy']}", log)
    print(f"record: {info['name']}, versions {v}, peak allocated {r['ranks'][0]['cuda_peak_allocated_bytes']}")


def resume(tmp, dev):
    """Checkpoint written on the GPU; resumed on the GPU and (no GPU visible) on the CPU: same parameters."""
    first = os.path.join(tmp, "gpu")
    r0, _ = run(tmp, first)
    check(r0["device"].startswith("cuda"), f"first run was not on the GPU: {r0['device']}")
    want = r0["ranks"][0]["param_checksum"]
    for where, env in (("gpu", {}), ("cpu", {"CUDA_VISIBLE_DEVICES": ""})):
        out = os.path.join(tmp, "resume-" + where)
        shutil.copytree(os.path.join(first, "checkpoints"), os.path.join(out, "checkpoints"))
        r, log = run(tmp, out, extra=["--resume"], env=env)
        check(r["device"].startswith("cuda" if where == "gpu" else "cpu"), f"resume on {where} ran on {r['device']}")
        check("resuming from checkpoint" in log, f"resume on {where} did not load the checkpoint", log)
        got = r["ranks"][0]["param_checksum"]
        check(got == want, f"parameters resumed on {where} differ: checksum {got} vs {want}", log)
        check(abs(r["final_test_accuracy"] - r0["final_test_accuracy"]) <= 0.01,
              f"accuracy after resume on {where}: {r['final_test_accuracy']} vs {r0['final_test_accuracy']}")
        print(f"resume on {where}: checksum {got} equal, accuracy {r['final_test_accuracy']:.4f}")


def shared_gpu(tmp, dev):
    """Two ranks under mpiexec on this node's GPU(s): staged mpi when they share one GPU, else nccl."""
    r, log = run(tmp, os.path.join(tmp, "run"), np=2, extra=["--set", "training.device=cuda"])
    expected = "nccl" if dev["cuda_devices"] >= 2 else "mpi"
    check(r["backend"] == expected, f"backend {r['backend']}, expected {expected} with {dev['cuda_devices']} GPU(s)")
    sums = [rk["param_checksum"] for rk in r["ranks"]]
    check(len(sums) == 2 and sums[0] == sums[1], f"replicas differ: {sums}", log)
    for rk in r["ranks"]:
        check_gpu_rank(rk, r["device_info"])
    check(r["final_test_accuracy"] > 0.5, f"accuracy {r['final_test_accuracy']}", log)
    print(f"shared_gpu: backend {r['backend']}, checksums {sums}, {r['total_images_per_sec']:.0f} images/s")


def mixed(tmp, dev):
    """bf16 and fp16 (loss scaling) autocast with channels-last, cuDNN autotuning and the fused optimizer on
    the GPU (SGD, and AdamW in bf16: [Fused Adam]'s tensor-operation path), the last two with the fused
    BN-ReLU kernels (model.fused_bn_relu): the run record says so,
    training still learns, and the step split comes from CUDA events (every phase measured, their sum close
    to the whole run's training time)."""
    adamw = ["--set", "training.optimizer.name=adamw", "--set", "training.optimizer.lr=0.002"]
    fused_bn = ["--set", "model.fused_bn_relu=true"]  # the CUDA kernels of [Fused BN-ReLU], in 16-bit types
    for name, precision, optimizer in (("bf16", "bf16", []), ("fp16-fused-bn", "fp16", fused_bn),
                                       ("bf16-adamw-fused-bn", "bf16", adamw + fused_bn)):
        r, log = run(tmp, os.path.join(tmp, name),
                     extra=["--set", "training.device=cuda", "--set", f"training.precision={precision}",
                            "--set", "data.channels_last=true", "--set", "training.cudnn_benchmark=true"] + optimizer)
        n = r["numerics"]
        check(n["precision"] == precision and n["channels_last"] and n["cudnn_benchmark"], f"numerics {n}")
        check(n["fused_bn_relu"] == ("fused-bn" in name), f"{name}: fused_bn_relu {n['fused_bn_relu']}")
        check(n.get("fused_optimizer", {}).get("groups", 0) >= 1, f"the fused optimizer was not used: {n}")
        if precision == "fp16":
            check(n["loss_scale"] > 0 and 0 <= n["skipped_steps"] < 8, f"fp16 loss scaler: {n}", log)
        rk = r["ranks"][0]
        split = rk["step_time_ms"]
        for phase in ("forward", "backward", "optimizer"):
            check(split[phase] > 0, f"{name}: phase {phase} not measured on the device: {split}")
        check(all(v >= 0 for v in split.values()), f"{name}: negative phase time {split}")
        check(r["final_test_accuracy"] > 0.5, f"{name}: accuracy {r['final_test_accuracy']}", log)
        check_gpu_rank(rk, r["device_info"])
        print(f"mixed {name}: accuracy {r['final_test_accuracy']:.4f}, {rk['images_per_sec']:.0f} images/s, "
              f"split {split}, numerics {n}")


def graph(tmp, dev):
    """[Graphed step] training.cuda_graph in fp32 and in bf16 with channels-last, against the same run without
    it: the step is captured after 3 eager warm-up steps, every later full batch replays it (each epoch's
    last, partial batch runs eagerly), the phases are still measured, and training follows the eager run's
    curve. cuDNN autotuning off and deterministic cuDNN (training.cudnn_deterministic) on both sides, so
    both pick the same kernels and the runs must agree to 1e-4 relative in every epoch's train loss and
    test accuracy (GpuTraining.GraphedStepMatchesEagerStep found the graphed step bit-identical; with
    autotuning the two runs may pick different kernels and drift apart: 7% in epoch 2's loss on an H200).
    Whether the final parameters are bit-identical is printed. The bf16 pair augments on the GPU
    ([Device augment], data.augment.on_device), so the graphs also replay from batches made there."""
    epochs, samples, batch = 2, 2000, CONFIG["training"]["batch_size"]
    steps = -(-samples // batch)
    full = samples // batch
    common = ["--set", "training.device=cuda", "--set", f"training.epochs={epochs}",
              "--set", f"data.max_train_samples={samples}", "--set", "training.cudnn_benchmark=false",
              "--set", "training.cudnn_deterministic=true"]
    window = re.compile(r"step (\d+)/\d+ loss (\S+)")

    def rel(a, b):
        return abs(a - b) / max(abs(b), 1e-12)

    for precision, layout in (("fp32", []),
                              ("bf16", ["--set", "data.channels_last=true", "--set", "data.augment.on_device=true"])):
        runs, logs = {}, {}
        for graphed in ("false", "true"):
            runs[graphed], logs[graphed] = run(tmp, os.path.join(tmp, f"{precision}-{graphed}"),
                                               extra=common + layout + ["--set", f"training.precision={precision}",
                                                                        "--set", f"training.cuda_graph={graphed}"])
        n = runs["true"]["numerics"]["cuda_graph"]
        check(runs["false"]["numerics"]["cuda_graph"] is False, f"{precision}: graphs off, yet {runs['false']}")
        check(runs["true"]["numerics"]["cudnn_deterministic"] and not runs["true"]["numerics"]["cudnn_benchmark"],
              f"{precision}: numerics {runs['true']['numerics']}")
        want = {"captured_at_step": 3, "graphed_steps": epochs * full - 3, "eager_steps": epochs * steps - (epochs * full - 3)}
        check(n == want, f"{precision}: cuda_graph {n}, expected {want}", logs["true"])
        split = runs["true"]["ranks"][0]["step_time_ms"]
        for phase in ("data_wait", "forward", "backward", "optimizer"):
            check(split[phase] > 0, f"{precision}: phase {phase} not measured with graphs: {split}")
        curves = {g: [(e["train_loss"], e["test_accuracy"]) for e in runs[g]["epochs"]] for g in runs}
        windows = {g: window.findall(logs[g]) for g in logs}
        worst = max(rel(a, b) for e, f in zip(curves["true"], curves["false"]) for a, b in zip(e, f))
        check(len(curves["true"]) == epochs and worst <= 1e-4,
              f"{precision}: graphed run left the eager run's curve (worst relative difference {worst:.3g}); "
              f"(train loss, test accuracy) per epoch graphed {curves['true']} eager {curves['false']}; "
              f"logged windows graphed {windows['true']} eager {windows['false']}")
        acc = [runs[g]["final_test_accuracy"] for g in ("true", "false")]
        check(acc[0] > 0.5, f"{precision}: accuracy graphed/eager {acc}", logs["true"])
        sums = [runs[g]["ranks"][0]["param_checksum"] for g in ("true", "false")]
        ips = [runs[g]["ranks"][0]["images_per_sec"] for g in ("true", "false")]
        print(f"graph {precision}: {n}, worst relative difference {worst:.3g}, final parameters "
              f"{'bit-identical' if sums[0] == sums[1] else 'differ'}, accuracy graphed/eager {acc}, "
              f"images/s {ips[0]:.0f} / {ips[1]:.0f}, split {split}")


def with_devices(scenario):
    return lambda tmp: scenario(tmp, devices())


SCENARIOS = {"record": with_devices(record), "resume": with_devices(resume), "shared_gpu": with_devices(shared_gpu),
             "mixed": with_devices(mixed), "graph": with_devices(graph)}

if __name__ == "__main__":
    sys.exit(main(SCENARIOS, __doc__))
