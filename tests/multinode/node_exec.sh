#!/bin/bash
# [node_exec.sh] Open MPI's launch agent for the two-node fixture (plm_rsh_agent): used like ssh,
#   node_exec.sh [ssh-style options] NODE COMMAND...
# it runs COMMAND with /bin/sh -c inside NODE's namespaces (hostname, mount, pid), the way sshd
# would run it on another machine. RX_NODE_DIR (set by two_node_cluster.py) holds NODE.pid, the host
# pid of the node's namespace holder.
set -u
while [ $# -gt 0 ] && [ "${1#-}" != "$1" ]; do shift; done  # ssh options (-x, -T ...) mean nothing here
node=${1:?usage: node_exec.sh NODE COMMAND...}
shift
pidfile=${RX_NODE_DIR:?RX_NODE_DIR is not set (two_node_cluster.py sets it)}/$node.pid
pid=$(cat "$pidfile" 2>/dev/null) || { echo "node_exec.sh: unknown node '$node' (no $pidfile)" >&2; exit 255; }
[ -d "/proc/$pid" ] || { echo "node_exec.sh: node '$node' is down (holder pid $pid gone)" >&2; exit 255; }
exec nsenter -t "$pid" -u -m -p -- /bin/sh -c "$*"
