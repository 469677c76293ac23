#!/usr/bin/env bash
# An emulated multi-node cluster on one Linux machine, for trying and testing charlm across
# "nodes": each node is a network + UTS + mount + IPC namespace with its own address, hostname,
# /etc/hosts, node-local /tmp and /dev/shm, all joined by a bridge; one directory, the same path
# on every node, plays the cluster file system.
#
#   scripts/cluster/netns-cluster.sh up                 bring up the nodes (default 2)
#   scripts/cluster/netns-cluster.sh exec NODE CMD...   run CMD on NODE (a clean login
#                                                       environment, as ssh gives; cwd kept)
#   scripts/cluster/netns-cluster.sh mpirun ARGS...     Open MPI's mpirun on the first node
#                                                       (CHARLM_CLUSTER_MPIRUN_NODE), over TCP
#                                                       between the nodes only
#   scripts/cluster/netns-cluster.sh slurm-up           munged on every node, slurmctld on the
#                                                       first, one slurmd per node
#   scripts/cluster/netns-cluster.sh status | env | down
#   scripts/cluster/netns-cluster.sh run CMD...         up, CMD (on the host, with
#                                                       CHARLM_CLUSTER_DIR set), down whatever
#                                                       happens
#
# Needs root, iproute2 (`ip netns`) and util-linux (unshare, nsenter); SLURM needs Debian's
# slurm-wlm and munge. Nothing reaches any address outside the cluster's own namespaces: the
# bridge lives in a namespace of its own, the host's network is not touched.
#
# Environment:
#   CHARLM_CLUSTER_DIR    state directory (default /tmp/charlm-cluster); shared/ inside it is the
#                         cluster file system (put run.dir and the corpus there)
#   CHARLM_CLUSTER_KEEP   more directories below /tmp that every node must see (colon-separated;
#                         this checkout and the state directory always are)
#   CHARLM_CLUSTER_NODES  number of nodes (default 2), named node1..nodeN
#   CHARLM_CLUSTER_NAME   prefix of the namespace names (default charlm), so that several
#                         clusters can exist at once
#   CHARLM_CLUSTER_NET    the first three octets of the nodes' /24 (default 10.77.0): node K is
#                         .K, the bridge has no address
#   CHARLM_CLUSTER_CPUS   CPUs each node declares to SLURM (default nproc: the nodes share them)
#   CHARLM_CLUSTER_MPIRUN_NODE  where `mpirun` runs (default node1)
#
# How Open MPI starts the remote ranks: its rsh launcher with this script as the agent
# (plm_rsh_agent = "netns-cluster.sh agent": `exec` with ssh's joining of the words), which
# enters the node's namespaces where ssh would log in: no keys, no sshd, no ports, and the very code path of an ssh cluster (orted started
# on each node with a command line, the ranks wired up over TCP). `down` (also run on any failure
# of `up`, and by `run` on exit) kills every process inside the nodes' namespaces, deletes the
# namespaces (with them the veth pairs and the bridge) and the state directory except shared/;
# it is idempotent and finds a half-built cluster by its names.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
self="$here/$(basename "${BASH_SOURCE[0]}")"
# shellcheck source=scripts/slurm/conf-common.sh
. "$here/../slurm/conf-common.sh"
dir="${CHARLM_CLUSTER_DIR:-/tmp/charlm-cluster}"
nodes="${CHARLM_CLUSTER_NODES:-2}"
name="${CHARLM_CLUSTER_NAME:-charlm}"
net="${CHARLM_CLUSTER_NET:-10.77.0}"
switch="$name-sw"

say() { echo "netns-cluster: $*"; }
die() { echo "netns-cluster: error: $*" >&2; exit 1; }

need() {
    [[ $(id -u) -eq 0 ]] || die "must run as root (network namespaces, mounts)"
    local p
    for p in ip unshare nsenter; do
        command -v "$p" >/dev/null 2>&1 || die "$p not found (iproute2, util-linux)"
    done
    if ! [[ "$nodes" =~ ^[0-9]+$ ]] || ((nodes < 1 || nodes > 200)); then
        die "CHARLM_CLUSTER_NODES=$nodes: expected 1..200"
    fi
    [[ "$name" =~ ^[a-zA-Z0-9_-]{1,20}$ ]] || die "CHARLM_CLUSTER_NAME=$name: 1-20 of [a-zA-Z0-9_-]"
}

# the pid of the process holding NODE's UTS, mount and IPC namespaces, when it is alive
holder() {
    local f="$dir/nodes/$1/holder.pid" pid
    [[ -s "$f" ]] || return 1
    pid=$(<"$f")
    [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

# NODE's own setup, run inside its fresh namespaces before it sleeps as their holder: hostname,
# /etc/hosts, node-local /tmp and /dev/shm. What every node must see at its own path is mounted
# again inside the node's /tmp when it lies below /tmp: the state directory (with shared/), this
# checkout (the launch agent, the binary in its build tree) and CHARLM_CLUSTER_KEEP (more paths,
# separated by colons)
node_setup() {
    local node="$1" local_tmp="$dir/nodes/$1/tmp" keep p
    hostname "$node"
    mount --bind "$dir/hosts" /etc/hosts
    IFS=: read -r -a keep <<<"$dir:$(cd "$here/../.." && pwd):${CHARLM_CLUSTER_KEEP:-}"
    for p in "${keep[@]}"; do
        [[ "$p" == /tmp/?* && -d "$p" ]] || continue
        mkdir -p "$local_tmp/${p#/tmp/}"
        mount --bind "$p" "$local_tmp/${p#/tmp/}"
    done
    mount --rbind "$local_tmp" /tmp
    mount -t tmpfs -o size=256m,mode=1777 tmpfs /dev/shm
    ip link set lo up
    touch "$dir/nodes/$node/ready"
    exec sleep infinity
}

up() {
    need
    if [[ -f "$dir/cluster.env" ]] && status >/dev/null 2>&1; then
        say "already up ($dir)"
        return 0
    fi
    down_quiet
    trap 'echo "netns-cluster: up failed: tearing down" >&2; down_quiet' ERR
    mkdir -p "$dir/shared" "$dir/nodes"
    chmod 755 "$dir"
    {
        echo "127.0.0.1 localhost"
        local k
        for ((k = 1; k <= nodes; k++)); do echo "$net.$k node$k"; done
    } >"$dir/hosts"
    # the holders carry the cluster's name: down tells them from unrelated processes by it
    export CHARLM_CLUSTER_NAME="$name" CHARLM_CLUSTER_DIR="$dir"
    ip netns add "$switch"
    ip -n "$switch" link add br0 type bridge
    ip -n "$switch" link set br0 up
    local node ns
    for ((k = 1; k <= nodes; k++)); do
        node="node$k"
        ns="$name-$node"
        mkdir -p "$dir/nodes/$node/tmp"
        chmod 1777 "$dir/nodes/$node/tmp"
        ip netns add "$ns"
        ip link add eth0 netns "$ns" type veth peer name "p$k" netns "$switch"
        ip -n "$switch" link set "p$k" master br0 up
        ip -n "$ns" addr add "$net.$k/24" dev eth0
        ip -n "$ns" link set eth0 up
        # nsenter, not `ip netns exec`, which would mount a new /sys without the cgroup file
        # systems under it (slurmd needs them)
        nsenter --net="/run/netns/$ns" unshare --uts --mount --ipc --propagation private -- \
            "$self" _setup "$node" </dev/null >"$dir/nodes/$node/holder.log" 2>&1 &
        echo $! >"$dir/nodes/$node/holder.pid"
    done
    for ((k = 1; k <= nodes; k++)); do
        local i
        for ((i = 0; i < 100; i++)); do [[ -e "$dir/nodes/node$k/ready" ]] && break; sleep 0.05; done
        [[ -e "$dir/nodes/node$k/ready" ]] || {
            cat "$dir/nodes/node$k/holder.log" >&2
            false
        }
    done
    cat >"$dir/cluster.env" <<EOF
CHARLM_CLUSTER_DIR=$dir
CHARLM_CLUSTER_NODES=$nodes
CHARLM_CLUSTER_NAME=$name
CHARLM_CLUSTER_NET=$net
EOF
    trap - ERR
    say "$nodes node(s) up: $(seq -s, -f "node%g" 1 "$nodes") on $net.0/24, shared directory $dir/shared"
}

# Runs CMD in NODE's namespaces, in the caller's working directory when it exists there. The
# environment is a fresh login's, as sshd gives (PATH, HOME, USER and the cluster's variables),
# or with `login` set the caller's own (a login node's shell). With `join` set, the words of CMD
# are joined into one shell command line, as ssh does: Open MPI's rsh launcher calls its agent
# as `AGENT HOST orted -mca key "value" ...`, quoted for the remote shell.
node_exec() {
    local node="$1" join="${join:-}"
    shift
    local pid
    pid=$(holder "$node") || die "node $node is not up (CHARLM_CLUSTER_DIR=$dir)"
    # shellcheck disable=SC2016 # the inner shell expands them
    if [[ -n "${login:-}" ]]; then
        exec nsenter -t "$pid" --net --uts --mount --ipc -- \
            bash -c 'cd "$1" 2>/dev/null || cd /; exec "${@:2}"' _ "$PWD" "$@"
    fi
    # shellcheck disable=SC2016 # the inner shell expands them
    exec nsenter -t "$pid" --net --uts --mount --ipc -- \
        env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME="${HOME:-/root}" \
        USER="$(id -un)" LOGNAME="$(id -un)" CHARLM_CLUSTER_DIR="$dir" \
        CHARLM_CLUSTER_NODES="$nodes" CHARLM_CLUSTER_NAME="$name" CHARLM_CLUSTER_NET="$net" \
        ${SLURM_CONF:+SLURM_CONF="$SLURM_CONF"} \
        bash -c 'cd "$1" 2>/dev/null || cd /; shift; [[ -n "$1" ]] && exec bash -c "${*:2}"; exec "${@:2}"' \
        _ "$PWD" "$join" "$@"
}

# Open MPI's mpirun on node1 (or CHARLM_CLUSTER_MPIRUN_NODE: Open MPI maps the first ranks to
# the node it runs on, whatever the order of --host) with the rsh agent above, TCP only (btl
# tcp,self: no shared memory even between the ranks of one node), the cluster's subnet for both
# the MPI traffic and the run-time's own (oob). The caller's OMPI_*, OPENBLAS_*, CHARLM_KERN,
# OMP_NUM_THREADS and HDF5_USE_FILE_LOCKING are passed on to mpirun, as a login node's shell
# would have them: the ranks on mpirun's node inherit them, the other nodes' only what `-x`
# exports (and Open MPI's OMPI_MCA_* settings).
node_mpirun() {
    local pass=() v
    for v in $(compgen -e); do
        case "$v" in OMPI_* | OPENBLAS_* | CHARLM_KERN | OMP_NUM_THREADS | HDF5_USE_FILE_LOCKING)
            pass+=("$v=${!v}") ;;
        esac
    done
    node_exec "${CHARLM_CLUSTER_MPIRUN_NODE:-node1}" env "${pass[@]}" \
        mpirun --mca plm rsh --mca plm_rsh_agent "$self agent" \
        --mca btl tcp,self --mca btl_tcp_if_include "$net.0/24" \
        --mca oob_tcp_if_include "$net.0/24" --mca pml ob1 "$@"
}

# SLURM: one munged per node (the same key, each its socket in the node's own /tmp), slurmctld
# on node1, one slurmd per node (NodeName=nodeK NodeAddr=<its address>) with its own spool.
slurm_conf() {
    local cpus="$1"
    cat <<EOF
# Throw-away cluster of $nodes emulated nodes written by scripts/cluster/netns-cluster.sh
ClusterName=charlm-netns
SlurmctldHost=node1($net.1)
$(slurm_conf_common /tmp/munge/munge.socket)
StateSaveLocation=$dir/slurm/state
SlurmdSpoolDir=/tmp/slurmd-spool
SlurmctldPidFile=$dir/slurm/slurmctld.pid
SlurmdPidFile=/tmp/slurmd.pid
SlurmctldLogFile=$dir/slurm/log/slurmctld.log
SlurmdLogFile=$dir/slurm/log/slurmd-%n.log
PartitionName=debug Nodes=node[1-$nodes] Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
    local k
    for ((k = 1; k <= nodes; k++)); do
        echo "NodeName=node$k NodeAddr=$net.$k CPUs=$cpus Boards=1 SocketsPerBoard=1" \
            "CoresPerSocket=$cpus ThreadsPerCore=1 RealMemory=1000 State=UNKNOWN"
    done
}

slurm_up() {
    need
    local p k
    for p in munged slurmctld slurmd scontrol sinfo; do
        command -v "$p" >/dev/null 2>&1 || die "$p not found: apt-get install slurm-wlm munge"
    done
    [[ -f "$dir/cluster.env" ]] || die "the cluster is not up: $0 up first"
    mkdir -p "$dir/slurm/state" "$dir/slurm/log"
    slurm_conf "${CHARLM_CLUSTER_CPUS:-$(nproc)}" >"$dir/slurm/slurm.conf"
    dd if=/dev/urandom of="$dir/slurm/munge.key" bs=1024 count=1 status=none
    chmod 400 "$dir/slurm/munge.key"
    export SLURM_CONF="$dir/slurm/slurm.conf"
    for ((k = 1; k <= nodes; k++)); do
        (node_exec "node$k" bash -c "mkdir -p /tmp/munge /tmp/slurmd-spool && chmod 755 /tmp/munge &&
            munged --force --key-file='$dir/slurm/munge.key' --socket=/tmp/munge/munge.socket \
                --pid-file=/tmp/munge/munged.pid --log-file='$dir/slurm/log/munged-node$k.log' \
                --seed-file=/tmp/munge/munged.seed")
    done
    (node_exec node1 slurmctld -i -f "$SLURM_CONF") || die "slurmctld did not start"
    local i
    for ((i = 0; i < 100; i++)); do
        (node_exec node1 scontrol ping 2>/dev/null) | grep -q "is UP" && break
        sleep 0.2
    done
    for ((k = 1; k <= nodes; k++)); do
        (node_exec "node$k" slurmd -f "$SLURM_CONF" -N "node$k") || die "slurmd on node$k did not start"
    done
    for ((i = 0; i < 150; i++)); do
        [[ $( (node_exec node1 sinfo -h -N -o %t 2>/dev/null) | grep -cE '^(idle|mix|alloc)') -eq $nodes ]] && break
        sleep 0.2
    done
    (node_exec node1 sinfo -N) || true
    [[ $( (node_exec node1 sinfo -h -N -o %t 2>/dev/null) | grep -cE '^(idle|mix|alloc)') -eq $nodes ]] ||
        die "not all nodes became idle (see $dir/slurm/log/)"
    # the SLURM commands for the host: they run on node1 (the host has no route to the nodes),
    # in the caller's environment, which sbatch passes to the job; on a node they are SLURM's own
    mkdir -p "$dir/bin"
    local c
    for c in sbatch squeue scancel scontrol sinfo srun salloc; do
        cat >"$dir/bin/$c" <<EOF
#!/bin/sh
# $c on node1 of the emulated cluster (written by netns-cluster.sh slurm-up)
case "\$(ip netns identify 2>/dev/null)" in $name-node*) exec "$(command -v "$c")" "\$@" ;; esac
CHARLM_CLUSTER_DIR='$dir' CHARLM_CLUSTER_NAME='$name' CHARLM_CLUSTER_NODES='$nodes' \\
    CHARLM_CLUSTER_NET='$net' exec '$self' login node1 "$(command -v "$c")" "\$@"
EOF
        chmod +x "$dir/bin/$c"
    done
    say "SLURM up: slurmctld on node1, slurmd on node1..node$nodes; use it from here with"
    echo "  export SLURM_CONF=$SLURM_CONF PATH=$dir/bin:\$PATH"
}

status() {
    [[ -f "$dir/cluster.env" ]] || { say "not up (no $dir/cluster.env)"; return 1; }
    local k ok=0 pid
    for ((k = 1; k <= nodes; k++)); do
        if pid=$(holder "node$k"); then
            say "node$k: $net.$k, namespace $name-node$k, holder pid $pid," \
                "$(ip netns pids "$name-node$k" 2>/dev/null | wc -l) process(es)"
        else
            say "node$k: down"
            ok=1
        fi
    done
    return $ok
}

# kills every process in the cluster's namespaces (TERM, then KILL), deletes the namespaces and
# the state directory but shared/; by the names, so that a half-built cluster goes too
down_quiet() {
    local nss ns pids i
    nss=$(ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^$name-(node[0-9]+|sw)$" || true)
    for sig in TERM KILL; do
        pids=""
        for ns in $nss; do pids+=" $(ip netns pids "$ns" 2>/dev/null || true)"; done
        # holders that never entered a namespace (a failure half-way), when they are ours: a
        # stale pid file may name a pid that another process has now
        for f in "$dir"/nodes/*/holder.pid; do
            [[ -s "$f" ]] || continue
            p=$(<"$f")
            { tr '\0' '\n' <"/proc/$p/environ"; } 2>/dev/null | grep -qx "CHARLM_CLUSTER_NAME=$name" &&
                pids+=" $p"
        done
        pids=$(tr ' ' '\n' <<<"$pids" | grep -E '^[0-9]+$' | grep -vx "$$" | sort -u || true)
        [[ -z "$pids" ]] && break
        # shellcheck disable=SC2086
        kill -"$sig" $pids 2>/dev/null || true
        for ((i = 0; i < 50; i++)); do
            local left=""
            for p in $pids; do kill -0 "$p" 2>/dev/null && left+=" $p"; done
            [[ -z "$left" ]] && break
            sleep 0.1
        done
    done
    for ns in $nss; do ip netns del "$ns" 2>/dev/null || true; done
    if [[ -d "$dir" ]]; then
        rm -rf "${dir:?}/nodes" "${dir:?}/slurm" "${dir:?}/bin" "${dir:?}/hosts" "${dir:?}/cluster.env"
        rmdir "$dir/shared" "$dir" 2>/dev/null || true
    fi
}

case "${1:-}" in
    up) up ;;
    down) need; down_quiet; say "down" ;;
    status) status ;;
    env) echo "export CHARLM_CLUSTER_DIR=$dir CHARLM_CLUSTER_NODES=$nodes CHARLM_CLUSTER_NAME=$name" \
        "CHARLM_CLUSTER_NET=$net${SLURM_CONF:+ SLURM_CONF=$SLURM_CONF}" ;;
    exec) shift; [[ $# -ge 2 ]] || die "usage: $0 exec NODE CMD..."; node_exec "$@" ;;
    agent) shift; join=1 node_exec "$@" ;;
    login) shift; [[ $# -ge 2 ]] || die "usage: $0 login NODE CMD..."; login=1 node_exec "$@" ;;
    mpirun) shift; node_mpirun "$@" ;;
    slurm-up) slurm_up ;;
    run)
        shift
        trap 'down_quiet' EXIT
        trap 'exit 130' INT TERM
        up
        # in the background, so that a signal to this script tears down at once
        CHARLM_CLUSTER_DIR="$dir" "$@" &
        child=$!
        trap 'kill -TERM "$child" 2>/dev/null; exit 130' INT TERM
        wait "$child"
        ;;
    _setup) node_setup "$2" ;;
    *) echo "usage: $0 up|down|status|env|exec NODE CMD...|mpirun ARGS...|slurm-up|run CMD..." >&2
        exit 2 ;;
esac
