#!/usr/bin/env python3
"""Helpers of launch/gpu_check.sh (stdlib only; Python 3.9+).

  gpu_check.py manifest BUILD SRC OUT.json   the gpu-labelled CTest tests of BUILD, with this machine's
                                             paths replaced by placeholders ({build}, {src}, mpiexec,
                                             python3), so they run from a bundle anywhere
  gpu_check.py run MANIFEST BUILD SRC OUTDIR [--bench-budget S] [--path bundle|rebuilt] [--torch V]
                                             runs the tests (each with its timeout) and the GPU benchmark,
                                             writes OUTDIR/gpu_report.json and prints a table; exit 1 if
                                             any test failed (a skip is not a failure, but is reported)
  gpu_check.py boost-closure ROOT < HEADERS  the Boost header files (relative to ROOT, one per line) of every
                                             Boost library that a listed header belongs to, and of every
                                             library those include in turn ([Header closure])
"""
import json
import os
import re
import subprocess
import sys
import time


def manifest(build, src, out):
    build, src = os.path.realpath(build), os.path.realpath(src)
    js = json.loads(subprocess.run(["ctest", "--test-dir", build, "-L", "gpu", "--show-only=json-v1"],
                                   check=True, stdout=subprocess.PIPE, text=True, timeout=120).stdout)
    tests = []
    for t in js["tests"]:
        props = {p["name"]: p["value"] for p in t.get("properties", [])}

        def portable(arg):
            if arg.startswith(build + "/"):
                return "{build}" + arg[len(build):]
            if arg.startswith(src + "/"):
                return "{src}" + arg[len(src):]
            base = os.path.basename(arg)
            if base in ("mpiexec", "mpirun", "orterun"):
                return "mpiexec"
            if re.fullmatch(r"python3(\.\d+)?", base):
                return "python3"
            return arg

        env = [k + "=" + ":".join(portable(p) for p in v.split(":"))
               for k, v in (e.split("=", 1) for e in props.get("ENVIRONMENT", []))
               if k not in ("RX_SOURCE_DIR", "RX_BINARY_DIR")]
        tests.append({"name": t["name"], "command": [portable(a) for a in t["command"]],
                      "timeout": int(props.get("TIMEOUT", 300)), "skip_regex": props.get("SKIP_REGULAR_EXPRESSION", []),
                      "env": env})
    with open(out, "w") as f:
        json.dump({"tests": tests}, f, indent=2)
    print(f"manifest: {len(tests)} gpu tests -> {out}")


def nvidia_smi():
    q = "name,driver_version,memory.total,clocks.max.sm"
    try:
        p = subprocess.run(["nvidia-smi", f"--query-gpu={q}", "--format=csv,noheader"], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=60)
        return [dict(zip(q.split(","), (v.strip() for v in line.split(",")))) for line in p.stdout.strip().splitlines()
                if p.returncode == 0]
    except (OSError, subprocess.TimeoutExpired) as e:
        return [{"error": str(e)}]


def run_one(test, build, src):
    cmd = [a.replace("{build}", build).replace("{src}", src) for a in test["command"]]
    env = dict(os.environ, RX_BINARY_DIR=build, RX_SOURCE_DIR=src)
    env.update((k, v.replace("{build}", build).replace("{src}", src)) for k, v in (e.split("=", 1) for e in test["env"]))
    t0 = time.monotonic()
    try:
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=test["timeout"],
                           env=env)
        out, rc = p.stdout, p.returncode
    except subprocess.TimeoutExpired as e:
        out, rc = (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or ""), None
    secs = time.monotonic() - t0
    skipped = rc == 0 and any(re.search(rx, out) for rx in test["skip_regex"])
    status = "timeout" if rc is None else "skipped" if skipped else "passed" if rc == 0 else "failed"
    reason = ""
    if skipped:
        m = re.search(r"SKIPPED: no CUDA[^\n]*", out)
        reason = m.group(0) if m else ""
    return {"name": test["name"], "status": status, "seconds": round(secs, 1), "exit_code": rc, "reason": reason,
            "command": " ".join(cmd), "output_tail": out[-3000:]}


def run(args):
    man, build, src, outdir = args[:4]
    opts = dict(zip(args[4::2], args[5::2]))
    os.makedirs(outdir, exist_ok=True)
    t0 = time.monotonic()
    with open(man) as f:
        tests = json.load(f)["tests"]
    only = [n for n in os.environ.get("RX_GPU_TESTS", "").split(",") if n]
    if only:  # a short device call: just these tests (by CTest name), in the manifest's order
        unknown = sorted(set(only) - {t["name"] for t in tests})
        if unknown:
            sys.exit(f"gpu_check: RX_GPU_TESTS names no test {unknown}; the manifest has {[t['name'] for t in tests]}")
        tests = [t for t in tests if t["name"] in only]
    results = []
    for t in tests:
        r = run_one(t, build, src)
        print(f"  {r['status']:8} {r['seconds']:6.1f}s  {r['name']} {r['reason']}", flush=True)
        if r["status"] in ("failed", "timeout"):
            print(r["output_tail"][-2500:], flush=True)
        results.append(r)
    bench = None
    budget = float(opts.get("--bench-budget", "200"))
    if budget > 0:
        bench_out = os.path.join(outdir, "bench")
        # RX_BENCH_WORKER: another worker binary for the benchmark (an A/B of two builds in one device call).
        worker = os.environ.get("RX_BENCH_WORKER") or os.path.join(build, "worker", "resnext_worker")
        cmd = [sys.executable, os.path.join(src, "bench", "gpu", "gpu_bench.py"), "--worker", worker,
               "--out", bench_out, "--budget-s", str(int(budget))]
        print("bench: " + " ".join(cmd), flush=True)
        try:
            p = subprocess.run(cmd, text=True, timeout=budget + 90, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            print(p.stdout[-6000:], flush=True)
            path = os.path.join(bench_out, "gpu_bench.json")
            bench = json.load(open(path)) if os.path.exists(path) else {"error": p.stdout[-2000:]}
            bench["exit_code"] = p.returncode
        except subprocess.TimeoutExpired:
            bench = {"error": f"timed out after {budget + 90:.0f} s"}
    report = {"gpus": nvidia_smi(), "path": opts.get("--path", "bundle"), "torch": opts.get("--torch"),
              "tests": results, "bench": bench, "seconds": round(time.monotonic() - t0, 1),
              "summary": {s: sum(r["status"] == s for r in results) for s in ("passed", "failed", "skipped", "timeout")}}
    with open(os.path.join(outdir, "gpu_report.json"), "w") as f:
        json.dump(report, f, indent=2)
    print("\n| test | status | seconds | note |\n|---|---|---|---|")
    for r in results:
        print(f"| {r['name']} | {r['status']} | {r['seconds']} | {r['reason']} |")
    s = report["summary"]
    print(f"\ngpu_check: {s['passed']} passed, {s['failed'] + s['timeout']} failed, {s['skipped']} skipped "
          f"on {', '.join(g.get('name', '?') for g in report['gpus'])}; report {outdir}/gpu_report.json")
    return 1 if s["failed"] or s["timeout"] else 0


# [Header closure] ninja's dependency log lists the headers this compiler included with this
# configuration; another GCC on the GPU machine takes other #if branches (boost/config picks headers by
# compiler version), so a snapshot of exactly those files fails there. Whole libraries, closed over their
# own #include lines, cover every branch: ~9000 files, 5-6 MiB once compressed.
def boost_closure(root):
    root = os.path.realpath(root)
    include = re.compile(r'#\s*include\s*[<"]boost/([^>"]+)[>"]')

    def unit(rel):  # a library folder (numeric/* are separate libraries) or a top-level header
        parts = rel.split("/")
        return "/".join(parts[:2]) if parts[0] == "numeric" and len(parts) > 2 else parts[0]

    todo = {unit(os.path.relpath(h.strip(), root)) for h in sys.stdin if h.strip().startswith(root + "/")}
    seen, files = set(), set()
    while todo:
        u = todo.pop()
        seen.add(u)
        path = os.path.join(root, u)
        found = [path + ".hpp"] if os.path.isfile(path + ".hpp") else []
        if os.path.isfile(path):
            found.append(path)
        for d, _, names in os.walk(path):
            found += [os.path.join(d, n) for n in names]
        for f in found:
            files.add(os.path.relpath(f, root))
            with open(f, errors="ignore") as fh:
                todo |= {unit(m.group(1)) for m in include.finditer(fh.read())} - seen
    print("\n".join(sorted(files)))


if __name__ == "__main__":
    if len(sys.argv) >= 5 and sys.argv[1] == "manifest":
        manifest(*sys.argv[2:5])
    elif len(sys.argv) == 3 and sys.argv[1] == "boost-closure":
        boost_closure(sys.argv[2])
    elif len(sys.argv) >= 6 and sys.argv[1] == "run":
        sys.exit(run(sys.argv[2:]))
    else:
        print(__doc__)
        sys.exit(2)
