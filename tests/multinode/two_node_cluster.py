#!/usr/bin/env python3
"""Two Slurm "nodes" on this machine: Linux namespaces, one slurmctld, one slurmd per node.

[Two nodes] Each node is a long-lived namespace holder started with
    unshare --uts --mount --pid --fork --kill-child --mount-proc  python3 node_holder.py NAME HOSTS
which sets the hostname (node1, node2), bind-mounts a hosts file over /etc/hosts inside its mount
namespace (node1 -> 127.0.0.2, node2 -> 127.0.0.3), gives the node a private /tmp in which the
cluster's folder (self.dir, with self.shared for run folders) stays visible, then reaps orphans as
the namespace's pid 1.
Everything a node runs is started with `nsenter -t HOLDER -u -m -p`: its slurmd, hence the batch
shell and every rank (slurmstepd forks them), and the orted that mpirun starts through
node_exec.sh (the launch agent). So each node has its own hostname and its own process view: `ps`
on node2 does not show node1's ranks, gethostname() says node2, and killing the holder (pid 1 of
the node's pid namespace) kills everything on that node at once, like a node losing power.

Both slurmds run in the host's network namespace, so they need distinct ports: each NodeName line
has its own Port= and NodeAddr= (127.0.0.2 / 127.0.0.3); slurmctld stays on 127.0.0.1. Slurm
22.05 reads a node's Port from its NodeName line even without --enable-multiple-slurmd, and each
slurmd, given -N, never learns that another one shares the kernel. Open MPI is confined to the
loopback interface (OMPI_MCA_btl_tcp_if_include=lo, OMPI_MCA_oob_tcp_if_include=lo, set in
self.env); the machine's other interfaces are never used.

What it does NOT simulate: network latency and bandwidth (loopback is a memory copy), separate
file systems (only /tmp is per node; the cluster folder, run folders, dataset and binaries are one
file system: the "shared file system" a real cluster needs comes for free), separate CPUs/memory (both nodes report the machine's cores;
2 ranks per node on 2 real cores oversubscribe), and separate network stacks (one net namespace,
so a port taken on node1 is taken on node2). Per-node CPU accounting (cgroups) is off, as in
tests/slurm (no delegation here).

usage as a script: PYTHONPATH=tests/python tests/multinode/two_node_cluster.py run -- CMD...
                   (CMD runs on the host with SLURM_CONF set)
"""
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile

from slurm_cluster import SlurmCluster, SlurmError, _free_port, _mem_mb, _tail, run_main  # tests/python, on PYTHONPATH

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))  # the checkout: visible on every node ([Private /tmp])

NODES = {"node1": "127.0.0.2", "node2": "127.0.0.3"}


def _die_with_parent():
    """Popen preexec: the holder's unshare gets SIGKILL if the test process dies (no stray namespaces)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def namespaces_usable():
    """None when unshare/nsenter with UTS+mount+pid namespaces work here; else the reason (tests skip)."""
    if os.geteuid() != 0:
        return "needs root (unshare --uts --mount --pid)"
    try:
        p = subprocess.run(["unshare", "--uts", "--mount", "--pid", "--fork", "--mount-proc", "sh", "-c",
                            "hostname rxprobe && test \"$(hostname)\" = rxprobe && test $$ = 1"],
                           capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"unshare failed: {e}"
    if p.returncode != 0:
        return f"unshare --uts --mount --pid does not work here: {p.stderr.strip() or p.returncode}"
    return None


class TwoNodeCluster(SlurmCluster):
    def __init__(self, cpus=None, keep=False):
        super().__init__(cpus=cpus, keep=keep)
        self.nodes = list(NODES)
        self.holders = {}  # node -> Popen of its `unshare`

    # -- lifecycle ----------------------------------------------------------------------------------
    def start(self):
        reason = namespaces_usable()
        if reason:
            raise SlurmError(reason)
        for tool in ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "sinfo"):
            if subprocess.run(["sh", "-c", f"command -v {tool} || test -x /usr/sbin/{tool}"],
                              capture_output=True).returncode != 0:
                raise SlurmError(f"'{tool}' not found: install slurm-wlm and munge (launch/setup.sh)")
        self.dir = tempfile.mkdtemp(prefix="rx_2node_")
        os.chmod(self.dir, 0o755)  # the run folders live below; ranks on both nodes read them
        d = self.dir
        for sub in ("state", "spool", "log", "munge", "node", "shared"):
            os.makedirs(os.path.join(d, sub), mode=0o700)
        self.host = self.nodes[0]
        self.shared = os.path.join(d, "shared")  # run folders: the cluster's "shared file system"
        self.conf = os.path.join(d, "slurm.conf")
        self.munge_socket = os.path.join(d, "munge", "munge.socket")
        self.hosts_file = os.path.join(d, "hosts")
        with open(self.hosts_file, "w") as f:
            f.write("127.0.0.1 localhost\n" + "".join(f"{a} {n}\n" for n, a in NODES.items()))
        self.agent = os.path.join(HERE, "node_exec.sh")
        self.env = dict(os.environ, SLURM_CONF=self.conf, RX_NODE_DIR=os.path.join(d, "node"))
        self.env["PATH"] = self.env.get("PATH", "") + ":/usr/sbin:/sbin"
        # [Loopback only] Open MPI's TCP paths (out-of-band and the byte transfer layer) on lo only.
        self.env.update(OMPI_MCA_btl_tcp_if_include="lo", OMPI_MCA_oob_tcp_if_include="lo",
                        OMPI_MCA_btl="self,vader,tcp", OMPI_MCA_plm_rsh_agent=self.agent,
                        OMPI_MCA_rmaps_base_oversubscribe="1", PRTE_MCA_if_include="lo", PMIX_MCA_ptl_tcp_if_include="lo")
        self._start_munge()
        self._write_conf()
        self._spawn("slurmctld", ["slurmctld", "-D", "-c", "-f", self.conf], "slurmctld.out")
        self.wait_for("slurmctld to answer `scontrol ping`", self._ctld_up, 30, "slurmctld")
        for n in self.nodes:
            self.start_node(n)
        return self

    def start_node(self, node):
        """(Re)creates the node's namespaces and starts its slurmd; waits until Slurm calls it idle."""
        self.kill_node(node)
        ready = os.path.join(self.dir, "node", f"{node}.ready")
        for f in (ready, os.path.join(self.dir, "node", f"{node}.pid")):
            if os.path.exists(f):
                os.unlink(f)
        node_tmp = os.path.join(self.dir, "node", f"{node}-tmp")
        # [Restore] A restored node starts clean, like a reinstalled one: an empty /tmp and slurmd spool.
        # Slurm 22.05's PMIx plugin does not unlink the socket a killed slurmstepd left in the spool
        # (stepd.slurm.pmix.JOB.STEP), and the requeued job reuses the step id, so a kept spool fails
        # the relaunch with "Cannot bind() UNIX socket ...: Address already in use".
        shutil.rmtree(node_tmp, ignore_errors=True)
        os.makedirs(node_tmp)
        spool = os.path.join(self.dir, "spool", f"slurmd-{node}")
        shutil.rmtree(spool, ignore_errors=True)
        os.makedirs(spool, mode=0o700)
        log = open(os.path.join(self.dir, "log", f"holder-{node}.out"), "ab")
        try:
            self.holders[node] = subprocess.Popen(
                ["unshare", "--uts", "--mount", "--pid", "--fork", "--kill-child", "--mount-proc",
                 sys.executable, os.path.join(HERE, "node_holder.py"), node, self.hosts_file, ready,
                 node_tmp, self.dir, REPO] + ([os.environ["RX_BINARY_DIR"]] if os.environ.get("RX_BINARY_DIR") else []),
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                preexec_fn=_die_with_parent)
        finally:
            log.close()
        self.wait_for(f"{node}'s namespace holder", lambda: self._find_holder(node, ready), 15)
        self._spawn(f"slurmd-{node}", self.in_node(node, ["slurmd", "-D", "-f", self.conf, "-N", node]),
                    f"slurmd-{node}.out")
        self.wait_for(f"node {node} to become idle in sinfo", lambda: self._node_idle(node), 60, f"slurmd-{node}")

    def kill_node(self, node):
        """The whole node at once: SIGKILL to its pid 1 takes slurmd, slurmstepd and every rank with it."""
        h = self.holders.pop(node, None)
        if h and h.poll() is None:
            pid = self.holder_pid(node)
            if pid:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            h.kill()
            h.wait(timeout=15)
        p = self.procs.pop(f"slurmd-{node}", None)
        if p and p.poll() is None:
            p.kill()
            p.wait(timeout=15)

    def stop(self):
        if self.env and "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
            self.cmd(["scancel", "--full", "--user", "root"], check=False)
            try:
                self.wait_for("all jobs to leave the running states",
                              lambda: not self.cmd(["squeue", "-h", "-t", "PD,R,CG,S,RQ", "-o", "%i"],
                                                   check=False).stdout.strip(), 20)
            except SlurmError:
                pass
        for n in list(self.holders):
            self.kill_node(n)
        self._terminate("slurmctld")
        self._kill_leftovers()  # mpirun's helpers started on the host side carry our SLURM_CONF
        self._terminate("munged")
        if self.dir and not self.keep:
            shutil.rmtree(self.dir, ignore_errors=True)

    # -- helpers for tests --------------------------------------------------------------------------
    def holder_pid(self, node):
        """The holder's pid as the host sees it (the node's pid 1), once it has set up the node."""
        path = os.path.join(self.dir, "node", f"{node}.pid")
        try:
            with open(path) as f:
                pid = int(f.read().strip() or 0)
        except (OSError, ValueError):
            return None
        return pid if pid and os.path.exists(f"/proc/{pid}") else None

    def _find_holder(self, node, ready):
        """The holder (unshare's only child) once it wrote `ready`; its host pid goes to RX_NODE_DIR/NODE.pid,
        where node_exec.sh finds it."""
        h = self.holders[node]
        if h.poll() is not None:
            raise SlurmError(f"{node}'s holder exited {h.returncode}:\n{self._daemon_log('slurmd-' + node)}")
        if not os.path.exists(ready):
            return None
        with open(f"/proc/{h.pid}/task/{h.pid}/children") as f:
            kids = f.read().split()
        if not kids:
            return None
        with open(os.path.join(self.dir, "node", f"{node}.pid"), "w") as f:
            f.write(kids[0] + "\n")
        return int(kids[0])

    def in_node(self, node, argv):
        pid = self.holder_pid(node)
        if not pid:
            raise SlurmError(f"node {node} is not running")
        return ["nsenter", "-t", str(pid), "-u", "-m", "-p", "--"] + list(argv)

    def node_of_pid(self, pid):
        """Which node's pid namespace a (host) pid lives in; None for the host."""
        try:
            ns = os.readlink(f"/proc/{pid}/ns/pid")
        except OSError:
            return None
        for n in self.nodes:
            hp = self.holder_pid(n)
            if hp and os.readlink(f"/proc/{hp}/ns/pid") == ns:
                return n
        return None

    # -- internals ----------------------------------------------------------------------------------
    def _daemon_log(self, name):
        if name.startswith("slurmd-"):
            n = name.split("-", 1)[1]
            logs = [f"slurmd-{n}.log", f"slurmd-{n}.out", f"holder-{n}.out"]
        else:
            logs = {"slurmctld": ["slurmctld.log", "slurmctld.out"], "munged": ["munged.log"]}[name]
        return "\n".join(f"--- {l}\n{_tail(os.path.join(self.dir, 'log', l))}" for l in logs)

    def _write_conf(self):
        mem = max(256, int(_mem_mb() * 0.4))  # each node claims under half: both fit the real machine
        lines = [
            "ClusterName=rxtwonode",
            f"SlurmctldHost={socket.gethostname().split('.')[0]}(127.0.0.1)",
            f"SlurmctldPort={_free_port()}",
            *self._shared_conf("slurmd-%n.log", kill_wait=5),
            # [Node loss] slurmctld pings nodes every SlurmdTimeout/3 s and marks a silent one DOWN after
            # SlurmdTimeout: short here so a killed node is noticed in seconds, not the default 5 min.
            "SlurmdTimeout=10",
            "MessageTimeout=5",
            "TreeWidth=2",
        ]
        for n, addr in NODES.items():
            lines.append(f"NodeName={n} NodeAddr={addr} NodeHostname={n} Port={_free_port()} CPUs={self.cpus} "
                         f"RealMemory={mem} State=UNKNOWN")
        lines.append(f"PartitionName=debug Nodes={','.join(self.nodes)} Default=YES MaxTime=INFINITE State=UP "
                     "OverSubscribe=NO")
        with open(self.conf, "w") as f:
            f.write("\n".join(lines) + "\n")

    def _node_idle(self, node):
        p = self.cmd(["sinfo", "-h", "-N", "-n", node, "-o", "%T|%E"], check=False, timeout=10)
        state, _, reason = p.stdout.strip().partition("|")
        if state.startswith(("drain", "inval")):
            raise SlurmError(f"node {node} is {state}: {reason}; log:\n{self._daemon_log('slurmd-' + node)}")
        return state if state in ("idle", "mixed", "allocated") else None

    def node_state(self, node):
        return self.cmd(["sinfo", "-h", "-N", "-n", node, "-o", "%T"], check=False, timeout=10).stdout.strip()


def main(argv):
    return run_main(argv, TwoNodeCluster, __doc__, "two_node_cluster")


if __name__ == "__main__":
    sys.exit(main(sys.argv))
