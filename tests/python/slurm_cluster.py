#!/usr/bin/env python3
"""A real single-node Slurm (slurmctld + slurmd + munged) in a temp folder, for the launcher tests.

[SlurmCluster] Everything lives under one mkdtemp() folder: a fresh munge key and socket, slurm.conf,
state/spool dirs, pid and log files. Ports are picked free at start, so two clusters (two engineers,
two tests) never collide, and nothing under /etc or /run is touched. Children see SLURM_CONF (and the
munge socket through AuthInfo), so plain `sbatch`/`squeue` talk to this cluster. Every wait polls with
a deadline; a failure names the daemon and quotes the tail of its log.

Quirks found on Debian 12 in a container (no systemd, gVisor, cgroup v1 mounts without delegation):
  * cgroup plugins cannot be used: ProctrackType=proctrack/linuxproc, TaskPlugin=task/none,
    JobAcctGatherType=jobacct_gather/none, and an empty PlugStackConfig (Debian ships one in /etc).
  * no slurmdbd, so `sacct` has no data: job states come from `squeue -t all` / `scontrol show job`
    (kept MinJobAge seconds after the end).
  * gVisor: slurmd logs "xcpuinfo_hwloc_topo_load: failed" (no hwloc topology) and falls back to
    /proc/cpuinfo; harmless. A NodeName line that promises more CPUs or memory than `slurmd -C`
    reports leaves the node INVAL: start() fails fast and quotes both.
  * a requeued job waits cred_expire seconds (default 120) before it may start again: AuthInfo sets
    cred_expire=10 and SchedulerParameters a short sched_interval so the test does not wait minutes.

usage as a script:  tests/python/slurm_cluster.py run -- CMD...   (starts the cluster, runs CMD with SLURM_CONF set,
                    stops the cluster, exits with CMD's status)
"""
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time


class SlurmError(RuntimeError):
    pass


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path, n=30):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError as e:
        return f"<cannot read {path}: {e}>"


def _mem_mb():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    return 1024


class SlurmCluster:
    def __init__(self, cpus=None, keep=False):
        self.cpus = cpus or os.cpu_count() or 1
        self.keep = keep
        self.dir = None
        self.procs = {}
        self.env = None

    # -- lifecycle ----------------------------------------------------------------------------------
    def __enter__(self):
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc):
        self.stop()

    def start(self):
        for tool in ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "sinfo"):
            if not shutil.which(tool, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin"):
                raise SlurmError(f"'{tool}' not found: install slurm-wlm and munge (launch/setup.sh)")
        if os.geteuid() != 0:
            raise SlurmError("the test cluster runs slurmd as root (SlurmUser=root); run as root")
        self.dir = tempfile.mkdtemp(prefix="rx_slurm_")
        os.chmod(self.dir, 0o700)
        d = self.dir
        for sub in ("state", "spool", "log", "munge"):
            os.makedirs(os.path.join(d, sub), mode=0o700)
        self.host = socket.gethostname().split(".")[0]
        os.makedirs(os.path.join(d, "spool", f"slurmd-{self.host}"), mode=0o700)  # else slurmd logs an error
        self.conf = os.path.join(d, "slurm.conf")
        self.munge_socket = os.path.join(d, "munge", "munge.socket")
        self.env = dict(os.environ, SLURM_CONF=self.conf)
        self.env["PATH"] = self.env.get("PATH", "") + ":/usr/sbin:/sbin"
        self._start_munge()
        self._write_conf()
        self._spawn("slurmctld", ["slurmctld", "-D", "-c", "-f", self.conf], "slurmctld.out")
        self.wait_for("slurmctld to answer `scontrol ping`", self._ctld_up, 30, "slurmctld")
        self._spawn("slurmd", ["slurmd", "-D", "-f", self.conf, "-N", self.host], "slurmd.out")
        self.wait_for(f"node {self.host} to become idle in sinfo", self._node_idle, 60, "slurmd")
        return self

    def stop(self):
        """Cancels every job, stops the daemons and anything they started, removes the folder."""
        if self.env and "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
            self.cmd(["scancel", "--full", "--user", "root"], check=False)
            try:
                self.wait_for("all jobs to leave the running states",
                              lambda: not self.cmd(["squeue", "-h", "-t", "PD,R,CG,S,RQ", "-o", "%i"],
                                                   check=False).stdout.strip(), 30)
            except SlurmError:
                pass
        for name in ("slurmd", "slurmctld"):
            self._terminate(name)
        self._kill_leftovers()
        self._terminate("munged")
        if self.dir and not self.keep:
            shutil.rmtree(self.dir, ignore_errors=True)

    # -- helpers for tests --------------------------------------------------------------------------
    def cmd(self, argv, check=True, timeout=30, input=None):
        p = subprocess.run(argv, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           timeout=timeout, input=input)
        if check and p.returncode != 0:
            raise SlurmError(f"{' '.join(argv)} exited {p.returncode}: {p.stderr.strip() or p.stdout.strip()}")
        return p

    def job_field(self, job_id, field):
        """A field of `scontrol show job -o ID` (e.g. JobState, ExitCode, Restarts); None when unknown."""
        p = self.cmd(["scontrol", "show", "job", "-o", str(job_id)], check=False)
        for tok in p.stdout.split():
            k, _, v = tok.partition("=")
            if k == field:
                return v
        return None

    def wait_for(self, what, fn, timeout, daemon=None, interval=0.2):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if daemon and self.procs.get(daemon) and self.procs[daemon].poll() is not None:
                raise SlurmError(f"{daemon} exited with {self.procs[daemon].returncode} while waiting for {what}; "
                                 f"its log:\n{self._daemon_log(daemon)}")
            last = fn()
            if last:
                return last
            time.sleep(interval)
        msg = f"timed out after {timeout}s waiting for {what} (last: {last!r})"
        if daemon:
            msg += f"; {daemon} log:\n{self._daemon_log(daemon)}"
        raise SlurmError(msg)

    # -- internals ----------------------------------------------------------------------------------
    def _daemon_log(self, name):
        logs = {"slurmctld": ["slurmctld.log", "slurmctld.out"], "slurmd": ["slurmd.log", "slurmd.out"],
                "munged": ["munged.log"]}[name]
        return "\n".join(f"--- {l}\n{_tail(os.path.join(self.dir, 'log', l))}" for l in logs)

    def _spawn(self, name, argv, out):
        f = open(os.path.join(self.dir, "log", out), "ab")
        try:
            self.procs[name] = subprocess.Popen(argv, env=self.env, stdout=f, stderr=subprocess.STDOUT,
                                                stdin=subprocess.DEVNULL, start_new_session=True)
        except OSError as e:
            raise SlurmError(f"cannot start {name}: {e}")
        finally:
            f.close()

    def _start_munge(self):
        key = os.path.join(self.dir, "munge", "munge.key")
        p = subprocess.run(["mungekey", "--create", "--keyfile", key], capture_output=True, text=True)
        if p.returncode != 0:  # older munge: a random key by hand
            with open(key, "wb") as f:
                f.write(os.urandom(1024))
        os.chmod(key, 0o600)
        m = os.path.join(self.dir, "munge")
        self._spawn("munged", ["munged", "--foreground", "--force", f"--key-file={key}",
                               f"--socket={self.munge_socket}", f"--pid-file={m}/munged.pid",
                               f"--seed-file={m}/munged.seed", f"--log-file={self.dir}/log/munged.log"],
                    "munged.log")
        self.wait_for("munged's socket", lambda: os.path.exists(self.munge_socket), 15, "munged")

    def _shared_conf(self, slurmd_log, kill_wait):
        """The settings every fixture here shares: daemons as root, munge, files under self.dir, no
        accounting, backfill every 2 s (the two-node fixture adds its nodes and timeouts)."""
        d = self.dir
        plugstack = os.path.join(d, "plugstack.conf")
        open(plugstack, "w").close()
        return [
            "SlurmUser=root",
            "SlurmdUser=root",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={self.munge_socket},cred_expire=10",
            f"StateSaveLocation={d}/state",
            f"SlurmdSpoolDir={d}/spool/slurmd-%n",
            f"SlurmctldPidFile={d}/slurmctld.pid",
            f"SlurmdPidFile={d}/slurmd-%n.pid",
            f"SlurmctldLogFile={d}/log/slurmctld.log",
            f"SlurmdLogFile={d}/log/{slurmd_log}",
            "SlurmctldDebug=info",
            "SlurmdDebug=info",
            f"PlugStackConfig={plugstack}",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "JobCompType=jobcomp/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core",
            "SchedulerType=sched/backfill",
            "SchedulerParameters=sched_interval=2,bf_interval=2",
            "MpiDefault=none",
            "MailProg=/bin/true",
            "JobRequeue=1",
            "ReturnToService=2",
            f"KillWait={kill_wait}",
            "MinJobAge=600",
            "InactiveLimit=0",
        ]

    def _write_conf(self):
        mem = max(256, int(_mem_mb() * 0.8))
        lines = [
            "ClusterName=rxtest",
            f"SlurmctldHost={self.host}(127.0.0.1)",
            f"SlurmctldPort={_free_port()}",
            f"SlurmdPort={_free_port()}",
            *self._shared_conf("slurmd.log", kill_wait=10),
            f"NodeName={self.host} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={mem} State=UNKNOWN",
            f"PartitionName=debug Nodes={self.host} Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO",
        ]
        with open(self.conf, "w") as f:
            f.write("\n".join(lines) + "\n")

    def _ctld_up(self):
        p = self.cmd(["scontrol", "ping"], check=False, timeout=10)
        return "UP" in p.stdout and "DOWN" not in p.stdout

    def _node_idle(self):
        p = self.cmd(["sinfo", "-h", "-N", "-n", self.host, "-o", "%T|%E"], check=False, timeout=10)
        state, _, reason = p.stdout.strip().partition("|")
        if state.startswith(("drain", "inval")):  # slurmd registered but slurmctld rejected the node
            raise SlurmError(f"node {self.host} is {state}: {reason} (slurm.conf NodeName line vs `slurmd -C`: "
                             f"{self.cmd(['slurmd', '-C'], check=False).stdout.splitlines()[:1]}); slurmd log:\n"
                             f"{self._daemon_log('slurmd')}")
        return state if state in ("idle", "mixed", "allocated") else None

    def _terminate(self, name):
        p = self.procs.get(name)
        if not p or p.poll() is not None:
            return
        p.terminate()
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=10)

    def _kill_leftovers(self):
        """slurmstepd and job processes reparent to init; they carry our SLURM_CONF in their environment."""
        if not self.dir:
            return
        marker = f"SLURM_CONF={self.conf}".encode()
        me = os.getpid()
        for pid in os.listdir("/proc"):
            if not pid.isdigit() or int(pid) == me:
                continue
            try:
                with open(f"/proc/{pid}/environ", "rb") as f:
                    env = f.read().split(b"\0")
            except OSError:
                continue
            if marker in env:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except OSError:
                    pass


def run_main(argv, cluster_class, doc, name):
    """`NAME run -- CMD...`: CMD runs against a cluster of `cluster_class`, which is stopped after it."""
    if len(argv) < 3 or argv[1] != "run" or argv[2] != "--":
        print(doc)
        return 2
    try:
        with cluster_class() as c:
            print(f"{name} up in {c.dir} (SLURM_CONF={c.conf})", flush=True)
            return subprocess.run(argv[3:], env=c.env).returncode
    except SlurmError as e:
        print(f"{name}: {e}", file=sys.stderr)
        return 1


def main(argv):
    return run_main(argv, SlurmCluster, __doc__, "slurm_cluster")


if __name__ == "__main__":
    sys.exit(main(sys.argv))
