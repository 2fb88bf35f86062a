"""The Python tests' general helper module: failing with what was seen, skipping with a reason,
running resnext_worker, and the scenario runner every test script's __main__ calls. Beside it in
tests/python, the other shared helpers: coordlib.py (the coordinator), cdp.py (headless Chromium),
slurm_cluster.py (a real Slurm); a test imports only these, never from another test's folder.

CTest puts tests/python on PYTHONPATH (each folder's CMakeLists.txt), so a test does `import rxtest`;
by hand: PYTHONPATH=tests/python RX_SOURCE_DIR=$PWD RX_BINARY_DIR=$PWD/build python3 tests/... SCENARIO
Stdlib only: this module also runs on bare GPU machines (launch/gpu_check.sh).
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

# mpiexec as the tests run it: as root, more ranks than cores, no binding (RX_MPIEXEC overrides the
# executable, e.g. a bundled Open MPI).
MPIEXEC = os.environ.get("RX_MPIEXEC", "mpiexec").split() + ["--allow-run-as-root", "--oversubscribe",
                                                            "--bind-to", "none"]


class Failure(Exception):
    """A check failed; the message says what was expected and what was seen."""


class Skip(Exception):
    """A prerequisite is missing; the message is the reason."""


def source_dir():
    return os.environ["RX_SOURCE_DIR"]


def binary_dir():
    return os.environ["RX_BINARY_DIR"]


def worker_path():
    return os.environ.get("RX_WORKER", os.path.join(binary_dir(), "worker", "resnext_worker"))


def _log_excerpt(log, log_path):
    if log_path:
        try:
            with open(log_path, errors="replace") as f:
                log = f.read()
        except OSError as e:
            return f"\n--- {log_path}: unreadable ({e})"
    if not log:
        return ""
    errors = [line[:300] for line in log.splitlines() if "[error]" in line or "error:" in line][:10]
    text = f"\n--- {log_path or 'output'} (last 4000 characters):\n{log[-4000:]}"
    if errors:
        text += "\n--- error lines:\n" + "\n".join(errors)
    return text


def check(cond, msg, log="", log_path=None):
    """Fails the scenario with msg (and the tail and error lines of log, or of the file log_path)."""
    if not cond:
        raise Failure(msg + _log_excerpt(log, log_path))


def read_text(path):
    """The file's text, or "" when it does not exist (yet) or cannot be read."""
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def process_alive(pid):
    """True while pid exists and is neither a zombie nor dead (/proc/PID/stat state)."""
    stat = read_text(f"/proc/{pid}/stat")
    return bool(stat) and stat[stat.rfind(")") + 2] not in "ZX"


def skip(reason):
    """Ends the scenario as skipped: prints "SKIPPED: <reason>" and exits 0."""
    raise Skip(reason)


def run_worker(np, out, sets, timeout, env=None, config=None, extra=(), launcher=None, preexec_fn=None):
    """resnext_worker train on np ranks under mpiexec (np 0: a plain process, a world of 1).

    launcher: a command to start it with instead (np is then ignored); preexec_fn: run in the child
    before exec (e.g. pinning it). Returns (exit code, combined output, seconds). config defaults to
    configs/fashion_mnist_small.json.
    """
    config = config or os.path.join(source_dir(), "configs", "fashion_mnist_small.json")
    start = list(launcher) if launcher is not None else ([] if np == 0 else MPIEXEC + ["-np", str(np)])
    cmd = start + [worker_path(), "train", "--config", config, "--out", out]
    for s in sets:
        cmd += ["--set", s]
    cmd += list(extra)
    t0 = time.monotonic()
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout,
                       env=dict(os.environ, **(env or {})), preexec_fn=preexec_fn)
    return p.returncode, p.stdout, time.monotonic() - t0


def run_record(out):
    """The run record (result.json) a finished worker wrote into out."""
    with open(os.path.join(out, "result.json")) as f:
        return json.load(f)


def main(scenarios, doc="", keep_on_failure=False, failures=()):
    """Runs the scenario named by argv[1] in a fresh temp folder; returns the exit code for sys.exit.

    0 and "PASS <name>" when it passed, 0 and "SKIPPED: <reason>" when it skipped, 1 and "FAIL <name>: ..."
    when a check (or one of the exception types in `failures`) failed, 2 for a bad command line. The
    folder is removed afterwards, except after a failure with keep_on_failure.
    """
    if len(sys.argv) != 2 or sys.argv[1] not in scenarios:
        print(doc or f"usage: {sys.argv[0]} {'|'.join(scenarios)}")
        return 2
    name = sys.argv[1]
    tmp = tempfile.mkdtemp(prefix=f"rx_{name}_")
    keep = False
    try:
        scenarios[name](tmp)
    except Skip as e:
        print(f"SKIPPED: {e}")
        return 0
    except (Failure,) + tuple(failures) as e:
        print(f"FAIL {name}: {e}")
        keep = keep_on_failure
        if keep:
            print(f"(files kept in {tmp})")
        return 1
    finally:
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"PASS {name}")
    return 0
