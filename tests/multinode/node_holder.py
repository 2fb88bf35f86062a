#!/usr/bin/env python3
"""pid 1 of one test node (started by two_node_cluster.py under unshare --uts --mount --pid --mount-proc).

usage: node_holder.py NODE HOSTS_FILE READY_FILE NODE_TMP KEEP_DIR...
Sets the hostname, bind-mounts HOSTS_FILE over /etc/hosts (this mount namespace only, so `node2`
resolves to its loopback address on every node), gives the node a private /tmp (NODE_TMP) in which
each KEEP_DIR under /tmp stays visible at its usual path (the cluster's folder, and the checkout and
build folder when they live under /tmp, as a clone in /tmp does), writes READY_FILE, then reaps
orphans until it is killed.

[Private /tmp] Two processes on two real nodes may pick the same /tmp path: Slurm's PMIx plugin
makes /tmp/spmix_appdir_UID_JOB.STEP on every node of a step, and with one shared /tmp the second
node fails with "File exists". A node-local /tmp is what real nodes have. As pid 1 of the namespace it ignores signals it has no handler for; the fixture ends the node
with SIGKILL, which the kernel then delivers to every process of the node.
"""
import os
import signal
import socket
import subprocess
import sys

node, hosts, ready, node_tmp = sys.argv[1:5]
socket.sethostname(node)
subprocess.run(["mount", "--make-rprivate", "/"], check=True)
subprocess.run(["mount", "--bind", hosts, "/etc/hosts"], check=True)
os.chmod(node_tmp, 0o1777)
kept = []
for d in sorted({os.path.realpath(p) for p in sys.argv[5:]}):
    if not d.startswith("/tmp/") or any(d.startswith(k + "/") for k in kept):
        continue  # outside /tmp (visible anyway) or inside a folder already kept
    target = os.path.join(node_tmp, os.path.relpath(d, "/tmp"))
    os.makedirs(target, exist_ok=True)
    subprocess.run(["mount", "--bind", d, target], check=True)
    kept.append(d)
subprocess.run(["mount", "--rbind", node_tmp, "/tmp"], check=True)
with open(ready, "w") as f:
    f.write(node + "\n")
print(f"node_holder: {node} up (pid {os.getpid()} in its namespace)", flush=True)


def reap(*_):
    try:
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass
    except ChildProcessError:
        pass


signal.signal(signal.SIGCHLD, reap)
reap()
while True:
    signal.pause()
