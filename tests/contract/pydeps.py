"""[Test-side Python deps] The contract tests need PyPI packages that Debian does not ship (schemathesis,
openapi-spec-validator). They are installed by the tests themselves, once, into a virtual environment
under ~/.cache/resnext-pytest/venv-<hash of requirements.txt> (RX_PYDEPS_DIR overrides the folder),
made with Debian's python3 -m venv. A marker file is written only after pip succeeded, so a half
install is never used; a lock file serialises two tests installing at the same time (ctest -j2)."""
import fcntl
import hashlib
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REQUIREMENTS = os.path.join(HERE, "requirements.txt")


def venv_python():
    """Returns the venv's python, installing it first if needed. Raises RuntimeError with pip's
    output when the install fails (e.g. no route to PyPI)."""
    with open(REQUIREMENTS, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()[:12]
    root = os.environ.get("RX_PYDEPS_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "resnext-pytest")
    venv = os.path.join(root, f"venv-{digest}")
    python = os.path.join(venv, "bin", "python")
    marker = os.path.join(venv, ".installed")
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, f"venv-{digest}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if os.path.exists(marker):
            return python
        print(f"pydeps: installing {REQUIREMENTS} into {venv} (once)", flush=True)
        subprocess.run(["/usr/bin/python3", "-m", "venv", "--clear", venv], check=True)
        r = subprocess.run([python, "-m", "pip", "install", "--disable-pip-version-check", "-q", "-r", REQUIREMENTS],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=900)
        if r.returncode != 0:
            raise RuntimeError(f"pip install -r {REQUIREMENTS} failed ({r.returncode}):\n{r.stdout[-4000:]}")
        with open(marker, "w") as f:
            f.write("ok\n")
    return python


def reexec_in_venv():
    """Re-runs the calling script under the venv's python unless it already runs there."""
    python = venv_python()
    if os.path.realpath(sys.prefix) != os.path.realpath(os.path.dirname(os.path.dirname(python))):
        os.execv(python, [python] + sys.argv)
