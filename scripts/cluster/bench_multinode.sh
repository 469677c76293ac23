#!/usr/bin/env bash
# The gradient all-reduce across emulated nodes (netns-cluster.sh: two network namespaces on a
# bridge, Open MPI over TCP only), for the scaling projection (scripts/scaling_projection.py):
#
#   scripts/cluster/bench_multinode.sh [OUT]     (root; 15 minutes on 2 busy cores, REPS=15)
#
#  1. scripts/allreduce_bench.c across the nodes at -np 2 (one rank per node) and -np 4 (two per
#     node), for SIZES floats as one MPI_Allreduce, and for the benchmark works' gradients also
#     in charlm's pieces (the size of include/charlm/dist.h's DIST_PIECE);
#  2. charlm train on the benchmark works WORKS (scripts/bench.sh's settings: 2 layers, E = H, 64
#     global streams, T = 64, tinyshakespeare) across the nodes at -np 2 and -np 4: its end-of-run
#     time split, whose "all-reduce wait" is the slowest rank's wait for the gradient sum.
#
# Writes everything (the load average before and after each part included) to OUT (default
# scripts/bench-results/multinode-<UTC stamp>.txt) and to stdout. The nodes share this machine's
# cores: -np 4 puts two ranks on each of 2 cores' worth of CPUs per "node", so its waits include
# waiting for oversubscribed ranks, not only the network.
#
# Environment: SIZES (floats; default "1 1024 16384 65536 262144 1048576 4194304"), REPS (30 at
# -np 2 for the sweep; a third of it for the -np 4 sweep and for the works' gradients),
# WORKS (default "lstm128 lstm512"), STEPS_lstm128 (30), STEPS_lstm512 (8), CHARLM (build/charlm).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CLUSTER="$ROOT/scripts/cluster/netns-cluster.sh"

if [[ "${1:-}" != _inside ]]; then
    out="${1:-$ROOT/scripts/bench-results/multinode-$(date -u +%Y%m%dT%H%MZ).txt}"
    export CHARLM_CLUSTER_NAME="${CHARLM_CLUSTER_NAME:-bench$$}"
    export CHARLM_CLUSTER_DIR="${CHARLM_CLUSTER_DIR:-/tmp/charlm-bench-cluster-$$}"
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
    # the machine's directories left out of what may be committed
    "$CLUSTER" run "${BASH_SOURCE[0]}" _inside 2>&1 |
        sed -e "s|$CHARLM_CLUSTER_DIR|\$CHARLM_CLUSTER_DIR|g" -e "s|$ROOT/||g" | tee "$out"
    rm -rf "$CHARLM_CLUSTER_DIR"
    echo "bench_multinode: written to $out"
    exit 0
fi

say() { echo "bench_multinode: $*"; }
SIZES=${SIZES:-1 1024 16384 65536 262144 1048576 4194304}
REPS=${REPS:-30}
WORKS=${WORKS:-lstm128 lstm512}
CHARLM=${CHARLM:-$ROOT/build/charlm}
CORPUS="$ROOT/tests/data/tinyshakespeare.txt"
PIECE=$(sed -n 's/^#define DIST_PIECE (\([0-9]*\) \* \([0-9]*\)).*/\1 \2/p' \
    "$ROOT/include/charlm/dist.h" | awk '{print $1 * $2}')
shared="$CHARLM_CLUSTER_DIR/shared"
bench="$shared/allreduce_bench"
mpicc -O2 -o "$bench" "$ROOT/scripts/allreduce_bench.c"
hosts() { if (($1 == 2)); then echo node1:1,node2:1; else echo node1:2,node2:2; fi; }

say "$(date -u +%Y-%m-%dT%H:%MZ), commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo ?)," \
    "$(nproc) CPU(s): $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)"
say "Open MPI $(ompi_info --version 2>/dev/null | sed -n 's/.*v\([0-9.]*\).*/\1/p' | head -1)," \
    "btl tcp,self over a veth bridge between network namespaces (emulated nodes)"
say "load before the all-reduce: $(cut -d' ' -f1-3 /proc/loadavg)"
# -np 4 puts 4 busy-polling ranks on the cores: they yield when idle, and fewer repetitions
yield=(--mca mpi_yield_when_idle 1)
for np in 2 4; do
    reps=$REPS
    ((np == 4)) && reps=$(((REPS + 2) / 3))
    for n in $SIZES; do
        echo "np=$np $("$CLUSTER" mpirun -np "$np" --host "$(hosts "$np")" "${yield[@]}" "$bench" \
            "$n" "$reps" 0 | grep '^ALLREDUCE')"
    done
done
declare -A floats=([lstm128]=280897 [lstm512]=4269121 [gru512]=3218497 [rnn512]=1117249
                   [lstm1024]=16926785)
for work in $WORKS; do
    n=${floats[$work]}
    for np in 2 4; do
        for piece in 0 "$PIECE"; do
            echo "$work np=$np $("$CLUSTER" mpirun -np "$np" --host "$(hosts "$np")" \
                "${yield[@]}" "$bench" "$n" "$(((REPS + 2) / 3))" "$piece" | grep '^ALLREDUCE')"
        done
    done
done
say "load after the all-reduce: $(cut -d' ' -f1-3 /proc/loadavg)"

for work in $WORKS; do
    cell=${work%%[0-9]*}
    h=${work#"$cell"}
    steps_var="STEPS_$work"
    steps=${!steps_var:-$([[ $work == lstm128 ]] && echo 30 || echo 8)}
    for np in 2 4; do
        dir="$shared/run-$work-$np"
        OPENBLAS_NUM_THREADS=1 "$CLUSTER" mpirun -np "$np" --host "$(hosts "$np")" \
            --bind-to none "$CHARLM" train --corpus "$CORPUS" --cell "$cell" --layers 2 \
            --hidden "$h" --embed "$h" --batch $((64 / np)) --seq 64 --steps "$steps" \
            --log-every 1 --eval-every 0 --optim adam --lr 0.002 --set optim.clip=5 \
            --set model.dropout=0 --set data.val_frac=0 --set checkpoint.every=0 \
            --run-dir "$dir" >"$shared/charlm.out" 2>"$shared/charlm.err" ||
            { tail -5 "$shared/charlm.err" >&2; exit 1; }
        cps=$(grep -v '"summary"' "$dir/metrics.jsonl" | tail -n +2 |
            sed -n 's/.*"chars_per_s":\([-0-9.e+]*\).*/\1/p' | sort -g |
            awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
        echo "CHARLM work=$work np=$np steps=$steps chars_per_s=$cps load=$(cut -d' ' -f1 /proc/loadavg)" \
            "time: $(sed -n 's/^charlm: time: //p' "$shared/charlm.err")"
    done
done
