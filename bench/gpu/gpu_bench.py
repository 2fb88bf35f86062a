#!/usr/bin/env python3
"""GPU training throughput: resnext_worker (C++/LibTorch) beside PyTorch (bench/README.md "## GPU training").

usage: python3 bench/gpu/gpu_bench.py --worker build-cuda/worker/resnext_worker --out runs/gpu-bench
           [--budget-s 240] [--python PATH] [--quick]

Per case (model, input HxW, batch), one after another so nothing shares the GPU:
  worker  `resnext_worker train` alone (a world of 1) on in-memory synthetic CIFAR data through its
          normal loader (8 threads, 14 at 224x224, where images are resized on the CPU), per variant:
          fp32 (TF32 convolutions) and bf16-cl (training.precision bf16 + data.channels_last), cuDNN
          autotuning on, the fused SGD; at 32x32 also bf16-cl-graph (the same with training.cuda_graph),
          bf16-cl-fused and bf16-cl-fused-graph (those two with model.fused_bn_relu: BN, the residual
          add and ReLU in the worker's own CUDA kernels);
          at 224x224 with one loader thread, bf16-cl-1thread against bf16-cl-devaug-1thread (the resize
          and the rest of the augmentation on the GPU, data.augment.on_device). Steady images/s = all
          logged windows but the first (cuDNN warm-up); the run record's whole-run images/s and step
          split are kept too.
  peer    bench/gpu/torch_peer.py: PyTorch eager fp32, bf16 autocast, bf16 + channels_last, input
          generated on the GPU, cudnn.benchmark on as in the worker; and last, if the budget allows,
          bf16 + channels_last torch.compile of resnext29_8x64d.
The last cases are a batch sweep of resnext29_8x64d (bf16-cl, worker and eager) up to 512.
FLOPs/image = 3 (forward + backward) x 2 x MACs of one forward (`resnext_worker describe --json`).
Writes <out>/gpu_bench.json and prints a markdown table. Every subprocess has a timeout; once the
budget is spent the remaining steps are recorded as skipped. Exit 0 when the first case's worker and
eager peer both produced a figure for their first shared variant (fp32 unless --variants drops it),
else 1. --quick: a CPU-sized smoke run (tiny batches, few steps).
"""
import argparse
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PEER = os.path.join(HERE, "torch_peer.py")
PEER_PYTHONPATH = os.path.join(HERE, "..", "python")  # bench/python/resnext_torch.py, the peer's model
# Dense bf16 tensor-core peak (TFLOP/s): H100 SXM and H200 (SXM) share it; any other card -> null.
BF16_PEAK = 989.4
WINDOW = re.compile(r"step (\d+)/(\d+) loss (\S+) lr \S+ images/s ([0-9.]+) \(total ([0-9.]+)\)")

ALL = (["fp32", "bf16-cl"], ["fp32", "bf16", "bf16-cl"])  # (worker variants, peer variants) of a case
# and bf16-cl with training.cuda_graph ([Graphed step]), then both with model.fused_bn_relu ([BN-ReLU traffic])
GRAPHED = (ALL[0] + ["bf16-cl-graph", "bf16-cl-fused", "bf16-cl-fused-graph"], ALL[1])
BF16 = (["bf16-cl"], ["bf16-cl"])
SWEEP = (["bf16-cl", "bf16-cl-fused-graph"], ["bf16-cl"])  # the batch sweep: plain and fastest worker
LARGE = (ALL[0] + ["bf16-cl-fused"], ALL[1])  # 224x224: launches matter little, so no graph
# [Device augment] One loader thread for the GPU, resizing 32 -> 224 on the host, then on the device.
LOADER = (["bf16-cl-1thread", "bf16-cl-devaug-1thread"], [])
GPU = dict(device="cuda", cases=[("resnext29_8x64d", 32, 128, GRAPHED), ("resnext50_32x4d", 32, 128, GRAPHED),
                                 ("resnext50_32x4d", 224, 64, LARGE), ("resnext50_32x4d", 224, 64, LOADER),
                                 ("resnext29_8x64d", 32, 256, SWEEP),
                                 ("resnext29_8x64d", 32, 512, SWEEP)],
           worker_steps=80, log_every=20, loader_threads=8, loader_threads_large=14, test_samples=256, warmup=10,
           steps=40, compile_model="resnext29_8x64d", compile_batch=128, worker_timeout=90, peer_timeout=120,
           min_start=25, min_compile=75)
QUICK = dict(device="cpu", cases=[("resnext11_4x16d", 32, 4, ALL), ("resnext50_32x4d", 64, 2, BF16),
                                  ("resnext11_4x16d", 64, 4, LOADER)],
             worker_steps=6, log_every=2, loader_threads=1, loader_threads_large=1, test_samples=8, warmup=2,
             steps=3, compile_model="resnext11_4x16d", compile_batch=4, worker_timeout=120, peer_timeout=120,
             min_start=5, min_compile=5)


class Runner:
    """Runs subprocesses against one wall-clock budget and records every command."""

    def __init__(self, budget_s):
        self.start, self.budget_s, self.commands = time.monotonic(), budget_s, []

    def left(self):
        return self.budget_s - (time.monotonic() - self.start)

    def run(self, cmd, log_path, timeout, env=None):
        t0 = time.monotonic()
        rec = {"cmd": cmd, "shell": shlex.join(cmd), "log": log_path, "timeout_s": round(timeout, 1)}
        with open(log_path, "w") as log:
            try:  # own session: on timeout the whole group goes (torch.compile's worker pool, MPI helpers)
                proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
            except OSError as e:  # a missing binary is a failed step, not a crash of the whole run
                log.write(f"cannot start: {e}\n")
                proc, rec["rc"] = None, 127
        if proc is not None:
            try:
                rec["rc"] = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                rec["rc"], rec["timed_out"] = None, True
                for sig in (signal.SIGTERM, signal.SIGKILL):  # SIGKILL too: children may outlive the leader
                    try:
                        os.killpg(proc.pid, sig)
                        proc.wait(timeout=5)
                    except (ProcessLookupError, subprocess.TimeoutExpired):
                        pass
        rec["seconds"] = round(time.monotonic() - t0, 2)
        self.commands.append(rec)
        with open(log_path, errors="replace") as f:
            return rec, f.read()


def tail(text, n=15):
    return "\n".join(text.strip().splitlines()[-n:])


def describe(runner, worker, model, hw, out):
    """MACs and parameters of one forward at batch 1 from the worker's own architecture report."""
    rec, text = runner.run([worker, "describe", "--model", model, "--input", f"{hw}x{hw}x3", "--classes", "10",
                            "--json"], os.path.join(out, f"describe_{model}_{hw}.log"), min(30, max(5, runner.left())))
    try:
        totals = json.loads(text[text.index("{"):])["totals"]
        return {"macs": totals["macs"], "params": totals["params"]}
    except (ValueError, KeyError) as e:
        return {"error": f"describe failed (rc {rec.get('rc')}): {e}: {tail(text, 3)}"}


def run_worker(runner, args, cfg, model, hw, batch, variant, case_dir):
    if runner.left() < cfg["min_start"]:
        return {"status": "skipped", "error": f"budget: {max(0, runner.left()):.0f}s left of {args.budget_s:.0f}s"}
    bf16, graph, on_device = variant.startswith("bf16-cl"), "-graph" in variant, "-devaug" in variant
    fused = "-fused" in variant
    threads = 1 if variant.endswith("-1thread") else cfg["loader_threads"] if hw == 32 else cfg["loader_threads_large"]
    wdir = os.path.join(case_dir, "worker_" + variant)
    os.makedirs(wdir, exist_ok=True)
    result_path = os.path.join(wdir, "result.json")
    if os.path.exists(result_path):
        os.remove(result_path)  # never read a stale record from an earlier run
    steps = cfg["worker_steps"]
    job = {"name": f"gpu_bench_{model}_{hw}_b{batch}",
           "model": {"preset": model, "num_classes": 10, "fused_bn_relu": fused},
           "data": {"format": "synthetic", "path": "", "max_train_samples": steps * batch,
                    "max_test_samples": cfg["test_samples"],
                    "num_workers": threads, "channels_last": bf16,
                    "augment": {"resize": hw if hw != 32 else 0, "on_device": on_device}},
           "training": {"epochs": 1, "batch_size": batch, "max_steps_per_epoch": steps,
                        "precision": "bf16" if bf16 else "fp32", "cudnn_benchmark": True, "cuda_graph": graph,
                        "log_every_steps": cfg["log_every"], "eval_every_epochs": 0,
                        "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": True,
                                      "weight_decay": 5e-4},
                        "lr_schedule": {"name": "constant"}},
           "checkpoint": {"every_epochs": 0},
           "output": {"dir": wdir}}
    cfg_path = os.path.join(case_dir, f"worker_{variant}.json")
    with open(cfg_path, "w") as f:
        json.dump(job, f, indent=2)
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    cmd = [args.worker, "train", "--config", cfg_path, "--out", wdir, "--set", f"training.device={cfg['device']}"]
    rec, text = runner.run(cmd, os.path.join(case_dir, f"worker_{variant}.log"), min(cfg["worker_timeout"], runner.left()),
                           env)
    windows = [{"step": int(m.group(1)), "loss": float(m.group(3)), "images_per_sec": float(m.group(4))}
               for m in WINDOW.finditer(text)]
    out = {"command_seconds": rec["seconds"], "rc": rec["rc"], "windows": windows, "config": cfg_path}
    steady = windows[1:] or windows
    if steady:  # equal-sized windows: images / time over them is the harmonic mean of their rates
        out["images_per_sec"] = len(steady) / sum(1.0 / max(w["images_per_sec"], 1e-9) for w in steady)
        out["steady_windows"] = len(steady)
    try:
        with open(result_path) as f:
            record = json.load(f)
        r0 = record["ranks"][0]
    except (OSError, ValueError, KeyError, IndexError) as e:  # no record: the run failed before its end
        record, out["record_error"] = None, f"{type(e).__name__}: {e}"
    if record is not None:
        out.update(run_images_per_sec=r0.get("images_per_sec"), step_time_ms=r0.get("step_time_ms"),
                   cuda_max_memory_allocated_bytes=r0.get("cuda_peak_allocated_bytes"),
                   cuda_max_memory_reserved_bytes=r0.get("cuda_peak_reserved_bytes"),
                   peak_rss_bytes=r0.get("peak_rss_bytes"), device_info=record.get("device_info"),
                   versions=record.get("versions"), wall_seconds=record.get("wall_seconds"),
                   numerics=record.get("numerics"))
    ok = rec["rc"] == 0 and "images_per_sec" in out
    out["status"] = "ok" if ok else "error"
    if not ok:
        out["error"] = ("timed out" if rec.get("timed_out") else f"exit {rec['rc']}") + ": " + tail(text)
    return out


def run_peer(runner, args, cfg, model, hw, batch, variants, case_dir, name, timeout):
    if not variants:  # a worker-only case
        return {}, None
    if runner.left() < (cfg["min_compile"] if name == "compile" else cfg["min_start"]):
        return {v: {"status": "skipped", "error": f"budget: {max(0, runner.left()):.0f}s left of {args.budget_s:.0f}s"}
                for v in variants}, None
    timeout = min(timeout, runner.left())
    cmd = [args.python, PEER, "--model", model, "--hw", str(hw), "--batch", str(batch), "--device", cfg["device"],
           "--variants", ",".join(variants), "--warmup", str(cfg["warmup"]), "--steps", str(cfg["steps"]),
           "--time-limit-s", str(max(1, int(timeout - 20)))]
    rec, text = runner.run(cmd, os.path.join(case_dir, f"peer_{name}.log"), timeout,
                           dict(os.environ, PYTHONPATH=PEER_PYTHONPATH))
    results, env = {}, None
    for line in text.splitlines():
        if line.startswith("RESULT "):
            try:
                obj = json.loads(line[7:])
            except ValueError:  # a line cut short by a kill
                continue
            if obj.get("kind") == "env":
                env = obj
            elif obj.get("kind") == "case":
                results[obj["variant"]] = obj
    why = "timed out" if rec.get("timed_out") else f"exit {rec['rc']}"
    for v in variants:
        results.setdefault(v, {"status": "error", "error": f"no result ({why}): {tail(text)}"})
    return results, env


def gpu_name(runner, out):
    rec, text = runner.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                           os.path.join(out, "nvidia-smi.log"), 15)
    fields = [f.strip() for f in text.strip().splitlines()[0].split(",")] if rec["rc"] == 0 and text.strip() else []
    if len(fields) == 3:
        return {"name": fields[0], "driver": fields[1], "memory": fields[2], "source": "nvidia-smi"}
    return None  # no nvidia-smi: main() falls back to the peer's torch.cuda.get_device_name


def bf16_peak(name):
    n = (name or "").upper()
    if "NVL" in n or "PCIE" in n:
        return None  # lower clocks/power: not the SXM figure
    return BF16_PEAK if ("H200" in n or ("H100" in n and ("SXM" in n or "HBM3" in n))) else None


def add_flops(entry, fpi, peak):
    ips = entry.get("images_per_sec") if entry.get("status") == "ok" else None
    if ips and fpi:
        entry["tflops"] = ips * fpi / 1e12
        entry["fraction_of_bf16_peak"] = entry["tflops"] / peak if peak else None


def ratio(a, b):
    a, b = a.get("images_per_sec"), b.get("images_per_sec")
    return a / b if a and b and a > 0 and b > 0 else None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", required=True, help="the resnext_worker binary")
    ap.add_argument("--out", required=True, help="output folder (configs, logs, gpu_bench.json)")
    ap.add_argument("--budget-s", type=float, default=240, help="wall-clock cap for the whole run")
    ap.add_argument("--python", default=sys.executable, help="python with torch for the peer")
    ap.add_argument("--quick", action="store_true", help="CPU smoke run: tiny models, batches and steps")
    ap.add_argument("--no-compile", action="store_true", default=os.environ.get("RX_BENCH_NO_COMPILE") == "1",
                    help="skip the torch.compile variant (also RX_BENCH_NO_COMPILE=1)")
    ap.add_argument("--cases", default=os.environ.get("RX_BENCH_CASES", ""),
                    help="comma list of 1-based case numbers to run (also RX_BENCH_CASES); default all")
    ap.add_argument("--variants", default=os.environ.get("RX_BENCH_VARIANTS", ""),
                    help="comma list: keep only these worker and peer variants, e.g. bf16-cl,bf16-cl-graph "
                         "(also RX_BENCH_VARIANTS); default all")
    args = ap.parse_args()
    cfg = dict(QUICK if args.quick else GPU)
    if args.cases:  # a subset, e.g. for a short rerun: 1-based indices into the case list
        picked = [int(i) for i in args.cases.split(",")]
        bad = [i for i in picked if not 1 <= i <= len(cfg["cases"])]
        if bad:
            ap.error(f"--cases {args.cases}: no case {bad[0]} (1..{len(cfg['cases'])})")
        cfg["cases"] = [cfg["cases"][i - 1] for i in picked]
    if args.variants:  # a short rerun of a few rows; torch.compile still follows when bf16-cl is kept
        keep = set(args.variants.split(","))
        cfg["cases"] = [(m, hw, b, ([v for v in w if v in keep], [v for v in p if v in keep]))
                        for m, hw, b, (w, p) in cfg["cases"]]
        cfg["cases"] = [c for c in cfg["cases"] if c[3][0] or c[3][1]]
        if not cfg["cases"]:
            ap.error(f"--variants {args.variants}: no case runs any of them")
    os.makedirs(args.out, exist_ok=True)
    runner = Runner(args.budget_s)
    report = {"schema": "gpu_bench/1", "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "quick": args.quick, "budget_s": args.budget_s, "device": cfg["device"],
              "worker": os.path.abspath(args.worker), "python": args.python, "cases": []}
    card = gpu_name(runner, args.out) if cfg["device"] == "cuda" else None
    peer_env = None
    for i, (model, hw, batch, (worker_variants, peer_variants)) in enumerate(cfg["cases"]):
        case_dir = os.path.join(args.out, f"{i + 1}_{model}_{hw}_b{batch}")
        os.makedirs(case_dir, exist_ok=True)
        case = {"model": model, "hw": hw, "batch": batch, "describe": describe(runner, args.worker, model, hw, case_dir)}
        case["worker"] = {v: run_worker(runner, args, cfg, model, hw, batch, v, case_dir) for v in worker_variants}
        case["peer"], env = run_peer(runner, args, cfg, model, hw, batch, peer_variants, case_dir, "eager",
                                     cfg["peer_timeout"])
        peer_env = peer_env or env
        if model == cfg["compile_model"] and batch == cfg["compile_batch"] and peer_variants and not args.no_compile:
            case["compile_pending"] = case_dir
        report["cases"].append(case)
    for case in report["cases"]:  # last: compilation may take minutes, so it only gets what is left
        case_dir = case.pop("compile_pending", None)
        if case_dir:
            res, env = run_peer(runner, args, cfg, case["model"], case["hw"], case["batch"], ["bf16-cl-compile"],
                                case_dir, "compile", runner.left())
            case["peer"].update(res)
            peer_env = peer_env or env
    if card is None and peer_env and peer_env.get("device_name"):
        card = {"name": peer_env["device_name"], "source": "torch.cuda.get_device_name"}
    peak = bf16_peak(card and card["name"])
    report.update(card=card, bf16_dense_peak_tflops=peak, peer_env=peer_env)
    for case in report["cases"]:
        fpi = 6 * case["describe"]["macs"] if "macs" in case["describe"] else None
        case["flops_per_image"] = fpi
        worker, peer = case["worker"], case["peer"]
        for entry in list(worker.values()) + list(peer.values()):
            add_flops(entry, fpi, peak)
        # Like for like: the worker's variant over the same precision and layout in PyTorch.
        case["ratios"] = {"fp32_over_torch_eager": ratio(worker.get("fp32", {}), peer.get("fp32", {})),
                          "bf16_cl_over_torch_eager": ratio(worker.get("bf16-cl", {}), peer.get("bf16-cl", {})),
                          "bf16_cl_over_torch_compile": ratio(worker.get("bf16-cl", {}),
                                                              peer.get("bf16-cl-compile", {})),
                          "bf16_cl_graph_over_torch_eager": ratio(worker.get("bf16-cl-graph", {}),
                                                                  peer.get("bf16-cl", {})),
                          "bf16_cl_graph_over_torch_compile": ratio(worker.get("bf16-cl-graph", {}),
                                                                    peer.get("bf16-cl-compile", {})),
                          "graph_over_eager_worker": ratio(worker.get("bf16-cl-graph", {}), worker.get("bf16-cl", {})),
                          "bf16_cl_fused_over_torch_eager": ratio(worker.get("bf16-cl-fused", {}),
                                                                  peer.get("bf16-cl", {})),
                          "bf16_cl_fused_graph_over_torch_eager": ratio(worker.get("bf16-cl-fused-graph", {}),
                                                                        peer.get("bf16-cl", {})),
                          "bf16_cl_fused_graph_over_torch_compile": ratio(worker.get("bf16-cl-fused-graph", {}),
                                                                          peer.get("bf16-cl-compile", {})),
                          "fused_over_unfused_graphed_worker": ratio(worker.get("bf16-cl-fused-graph", {}),
                                                                     worker.get("bf16-cl-graph", {})),
                          "device_over_host_augment_1thread": ratio(worker.get("bf16-cl-devaug-1thread", {}),
                                                                    worker.get("bf16-cl-1thread", {}))}
    first = report["cases"][0]  # its first variant run on both sides: fp32 unless --variants left it out
    both = [v for v in first["worker"] if v in first["peer"]]
    ok = bool(both) and all(first[side][both[0]].get("status") == "ok" for side in ("worker", "peer"))
    report.update(ok=ok, elapsed_s=round(time.monotonic() - runner.start, 1), commands=runner.commands)
    with open(os.path.join(args.out, "gpu_bench.json"), "w") as f:
        json.dump(report, f, indent=2)
    print_table(report)
    return 0 if ok else 1


FUSED_RATIOS = ("bf16_cl_fused_over_torch_eager", "bf16_cl_fused_graph_over_torch_eager",
                "bf16_cl_fused_graph_over_torch_compile", "fused_over_unfused_graphed_worker")


def print_table(report):
    card = report["card"]["name"] if report.get("card") else report["device"]
    peak = report.get("bf16_dense_peak_tflops")
    print(f"\n### GPU training throughput ({card}; {report['elapsed_s']}s of a {report['budget_s']:.0f}s budget)\n")
    print("| model | input | batch | runner | precision | images/s | TFLOP/s | % bf16 peak | peak alloc GiB | note |")
    print("|---|---|---|---|---|---|---|---|---|---|")

    def fmt(v, spec):
        return format(v, spec) if isinstance(v, (int, float)) else "-"

    for c in report["cases"]:
        rows = [("worker (C++)", v, e) for v, e in c["worker"].items()] + \
               [("torch compile" if "compile" in v else "torch eager", v, e) for v, e in c["peer"].items()]
        for runner, variant, e in rows:
            mem = e.get("cuda_max_memory_allocated_bytes")
            pct = e.get("fraction_of_bf16_peak")
            note = e.get("error", "")[:80].replace("\n", " ").replace("|", "/") if e.get("status") != "ok" else ""
            if e.get("compile_s"):
                note = f"compile {e['compile_s']:.0f}s"
            if runner.startswith("worker") and e.get("run_images_per_sec"):
                note = f"whole run {e['run_images_per_sec']:.0f} img/s"
            print(f"| {c['model']} | {c['hw']}x{c['hw']} | {c['batch']} | {runner} | {variant} "
                  f"| {fmt(e.get('images_per_sec'), '.1f')} | {fmt(e.get('tflops'), '.3g')} "
                  f"| {fmt(pct * 100 if pct is not None else None, '.1f')} | {fmt(mem / 2**30 if mem else None, '.2f')} "
                  f"| {note} |")
    print("\n| model | input | batch | worker / eager, fp32 | worker / eager, bf16+CL | worker / torch.compile, bf16+CL "
          "| graphed worker / eager, bf16+CL | graphed worker / torch.compile | graphed / eager worker |")
    print("|---|---|---|---|---|---|---|---|---|")
    for c in report["cases"]:
        r = c["ratios"]
        print(f"| {c['model']} | {c['hw']}x{c['hw']} | {c['batch']} | {fmt(r['fp32_over_torch_eager'], '.3f')} "
              f"| {fmt(r['bf16_cl_over_torch_eager'], '.3f')} | {fmt(r['bf16_cl_over_torch_compile'], '.3f')} "
              f"| {fmt(r['bf16_cl_graph_over_torch_eager'], '.3f')} | {fmt(r['bf16_cl_graph_over_torch_compile'], '.3f')} "
              f"| {fmt(r['graph_over_eager_worker'], '.3f')} |")
    fused = [c for c in report["cases"] if any(c["ratios"][k] is not None for k in FUSED_RATIOS)]
    if fused:
        print("\n| model | input | batch | fused worker / eager, bf16+CL | fused graphed worker / eager "
              "| fused graphed worker / torch.compile | fused / unfused, graphed worker |")
        print("|---|---|---|---|---|---|---|")
        for c in fused:
            print(f"| {c['model']} | {c['hw']}x{c['hw']} | {c['batch']} | "
                  + " | ".join(fmt(c["ratios"][k], ".3f") for k in FUSED_RATIOS) + " |")
    for c in report["cases"]:
        r = c["ratios"]["device_over_host_augment_1thread"]
        if r is not None:
            print(f"\n{c['model']} {c['hw']}x{c['hw']} batch {c['batch']}, one loader thread: augmentation on the "
                  f"device / in the loader = {r:.3f}")
    print(f"\nFLOPs/image = 6 x forward MACs; % of the dense bf16 peak ({fmt(peak, '.1f')} TFLOP/s) for every row, "
          f"fp32 rows included. ok={report['ok']}")


if __name__ == "__main__":
    sys.exit(main())
