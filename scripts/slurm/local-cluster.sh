#!/usr/bin/env bash
# A throw-away one-node SLURM cluster on this machine, for trying and testing
# scripts/slurm/charlm.sbatch: munged, slurmctld and slurmd on loopback, with this machine's
# cores, all state in one directory.
#
#   scripts/slurm/local-cluster.sh start     start (or confirm running) and print how to use it
#   scripts/slurm/local-cluster.sh status    the daemons and the node; exit 0 when up
#   scripts/slurm/local-cluster.sh stop      stop the daemons and remove the state directory
#   scripts/slurm/local-cluster.sh env       print `export SLURM_CONF=...` (for eval)
#
# Needs Debian's slurm-wlm and munge (apt-get install slurm-wlm munge); runs the daemons as the
# calling user, which must be root (slurmd starts jobs for any user; SlurmUser=SlurmdUser=root).
# No systemd, no cgroups (proctrack/linuxproc, task/affinity): works in a container.
#
# Environment:
#   CHARLM_SLURM_DIR    state directory (default /tmp/charlm-slurm): munge key and socket,
#                       slurm.conf, controller state, slurmd spool, logs, pid files
#   CHARLM_SLURM_PORT   slurmctld port (default 6817); slurmd uses the next one
#   CHARLM_SLURM_CPUS   CPUs to give the node (default: nproc)
#
# Everything is idempotent: `start` on a running cluster only reports it, `stop` on a stopped
# one does nothing. The daemons bind to 127.0.0.1 only (CommunicationParameters=NoCtldInAddrAny,
# NoInAddrAny with SlurmctldHost=localhost, NodeAddr=127.0.0.1).
set -euo pipefail
# shellcheck source=scripts/slurm/conf-common.sh
. "$(dirname "${BASH_SOURCE[0]}")/conf-common.sh"

dir="${CHARLM_SLURM_DIR:-/tmp/charlm-slurm}"
port="${CHARLM_SLURM_PORT:-6817}"
node="charlm-node"
partition="debug"
conf="$dir/slurm.conf"
socket="$dir/munge/munge.socket"
export SLURM_CONF="$conf"

say() { echo "local-cluster: $*"; }
die() { echo "local-cluster: error: $*" >&2; exit 1; }

need() {
    local p
    for p in munged slurmctld slurmd scontrol sinfo; do
        command -v "$p" >/dev/null 2>&1 ||
            die "$p not found: install Debian's slurm-wlm and munge (apt-get install slurm-wlm munge)"
    done
    [[ $(id -u) -eq 0 ]] || die "must run as root (slurmd launches jobs as their user)"
}

# pid from a pid file when that process is alive
alive() {
    local f="$1" pid
    [[ -s "$f" ]] || return 1
    pid=$(<"$f")
    [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

# 0 when the controller answers and the node is usable
up() {
    alive "$dir/munge/munged.pid" >/dev/null && alive "$dir/slurmctld.pid" >/dev/null &&
        alive "$dir/slurmd.pid" >/dev/null || return 1
    scontrol ping 2>/dev/null | grep -q "is UP" || return 1
    local state
    state=$(sinfo -h -N -n "$node" -o %t 2>/dev/null | head -1)
    [[ "$state" =~ ^(idle|mix|alloc|comp) ]]
}

usage_text() {
    cat <<EOF
local-cluster: one-node SLURM cluster up: node $node, partition $partition, $(sinfo -h -o %C -n "$node" 2>/dev/null | awk -F/ '{print $4}') CPU(s), state in $dir
  export SLURM_CONF=$conf
  sinfo; sbatch scripts/slurm/charlm.sbatch; squeue; scontrol show job ID
  logs: $dir/log/slurmctld.log, $dir/log/slurmd.log; stop with: $0 stop
EOF
}

write_conf() {
    # this machine's topology as slurmd sees it, with CPUs limited to nproc (or CHARLM_SLURM_CPUS)
    local hw cpus sockets cores threads mem want
    hw=$(slurmd -C 2>/dev/null | head -1) || hw=""
    want="${CHARLM_SLURM_CPUS:-$(nproc)}"
    cpus=$(sed -n 's/.*CPUs=\([0-9]*\).*/\1/p' <<<"$hw")
    sockets=$(sed -n 's/.*SocketsPerBoard=\([0-9]*\).*/\1/p' <<<"$hw")
    cores=$(sed -n 's/.*CoresPerSocket=\([0-9]*\).*/\1/p' <<<"$hw")
    threads=$(sed -n 's/.*ThreadsPerCore=\([0-9]*\).*/\1/p' <<<"$hw")
    mem=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$hw")
    local topo
    if [[ -n "$cpus" && -n "$sockets" && -n "$cores" && -n "$threads" && "$cpus" -eq "$want" ]]; then
        topo="CPUs=$cpus Boards=1 SocketsPerBoard=$sockets CoresPerSocket=$cores ThreadsPerCore=$threads"
    else
        # fewer CPUs usable than the hardware has (container limits): one socket of single cores
        topo="CPUs=$want Boards=1 SocketsPerBoard=1 CoresPerSocket=$want ThreadsPerCore=1"
    fi
    # leave a tenth of the memory to the system; memory is not a consumable here (CR_Core)
    [[ -n "$mem" ]] && mem=$((mem * 9 / 10)) || mem=1

    # srun --mpi=pmix keeps its per-step client directories in the state dir, removed by stop
    mkdir -p "$dir/pmix"
    echo "PMIxCliTmpDirBase=$dir/pmix" >"$dir/mpi.conf"
    cat >"$conf" <<EOF
# Throw-away one-node cluster written by scripts/slurm/local-cluster.sh; removed by its stop.
ClusterName=charlm-local
SlurmctldHost=localhost
SlurmctldPort=$port
SlurmdPort=$((port + 1))
CommunicationParameters=NoCtldInAddrAny,NoInAddrAny
$(slurm_conf_common "$socket")
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool/%n
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# a job of partition urgent preempts (requeues) a job of $partition after a grace time of 30 s
# that starts with the job's own --signal (charlm.sbatch: USR1 to the batch script: checkpoint)
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
SlurmctldParameters=preempt_send_user_signal
SlurmctldTimeout=30
SlurmdTimeout=60

NodeName=$node NodeHostname=localhost NodeAddr=127.0.0.1 $topo RealMemory=$mem State=UNKNOWN
PartitionName=$partition Nodes=$node Default=YES MaxTime=INFINITE State=UP PriorityTier=1 OverSubscribe=NO GraceTime=30
PartitionName=urgent Nodes=$node MaxTime=INFINITE State=UP PriorityTier=10 OverSubscribe=NO
EOF
}

stop() {
    local f pid i
    # cancel what is left so that slurmd's job processes end with it
    if [[ -f "$conf" ]] && alive "$dir/slurmctld.pid" >/dev/null; then
        scancel --full --quiet --user="$(id -un)" 2>/dev/null || true
    fi
    for f in slurmd slurmctld munge/munged; do
        pid=$(alive "$dir/$f.pid") || continue
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 50; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    done
    # job step daemons started by this cluster's slurmd (matched by their config, not their name)
    local p
    for p in $(pgrep -x slurmstepd 2>/dev/null || true); do
        if { tr '\0' '\n' <"/proc/$p/environ"; } 2>/dev/null | grep -qx "SLURM_CONF=$conf"; then
            kill -KILL "$p" 2>/dev/null || true
        fi
    done
    rm -rf "$dir"
}

start() {
    need
    if [[ -f "$conf" ]] && up; then
        usage_text
        return 0
    fi
    # a stale or half-started cluster: start again from nothing
    stop
    local p
    for p in "$port" $((port + 1)); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            die "port $p is in use (another SLURM?): choose others with CHARLM_SLURM_PORT"
        fi
    done
    mkdir -p "$dir"/{munge,state,spool/$node,log}
    # munged wants its socket directory searchable by everyone; the key stays root's
    chmod 755 "$dir" "$dir/munge"

    # munge: own key, socket, pid, log and seed files
    dd if=/dev/urandom of="$dir/munge/munge.key" bs=1024 count=1 status=none
    chmod 400 "$dir/munge/munge.key"
    munged --force --key-file="$dir/munge/munge.key" --socket="$socket" \
        --pid-file="$dir/munge/munged.pid" --log-file="$dir/log/munged.log" \
        --seed-file="$dir/munge/munged.seed" ||
        die "munged did not start (see $dir/log/munged.log)"
    local i
    for ((i = 0; i < 50; i++)); do [[ -S "$socket" ]] && break; sleep 0.1; done
    [[ -S "$socket" ]] || die "munged socket $socket did not appear (see $dir/log/munged.log)"

    write_conf
    # -i: ignore state from an earlier run (there is none: the state directory is new)
    slurmctld -i -f "$conf" || die "slurmctld did not start (see $dir/log/slurmctld.log)"
    for ((i = 0; i < 100; i++)); do scontrol ping 2>/dev/null | grep -q "is UP" && break; sleep 0.2; done
    scontrol ping 2>/dev/null | grep -q "is UP" ||
        die "slurmctld does not answer (see $dir/log/slurmctld.log)"
    slurmd -f "$conf" -N "$node" || die "slurmd did not start (see $dir/log/slurmd.log)"
    for ((i = 0; i < 150; i++)); do up && break; sleep 0.2; done
    if ! up; then
        sinfo -N -l >&2 2>/dev/null || true
        tail -n 20 "$dir/log/slurmd.log" "$dir/log/slurmctld.log" >&2 2>/dev/null || true
        die "the node did not become idle"
    fi
    usage_text
}

status() {
    if [[ ! -f "$conf" ]]; then
        say "not running (no $conf)"
        return 1
    fi
    local f pid
    for f in munge/munged slurmctld slurmd; do
        if pid=$(alive "$dir/$f.pid"); then say "${f#munge/} running, pid $pid"; else say "${f#munge/} not running"; fi
    done
    if up; then
        sinfo -N -l 2>/dev/null || true
        squeue 2>/dev/null || true
        echo "export SLURM_CONF=$conf"
        return 0
    fi
    say "not usable (see $dir/log/)"
    return 1
}

case "${1:-}" in
    start) start ;;
    stop) stop; say "stopped" ;;
    status) status ;;
    env) echo "export SLURM_CONF=$conf" ;;
    *) echo "usage: $0 start|stop|status|env" >&2; exit 2 ;;
esac
