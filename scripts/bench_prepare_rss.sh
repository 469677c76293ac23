#!/usr/bin/env bash
# bench_prepare_rss.sh — memory of `charlm prepare` and of training from a prepared corpus:
# each rank holds only its shard, so its peak RSS follows corpus/P, not the corpus.
#
# Usage (from anywhere, after the README's set-up):
#     scripts/bench_prepare_rss.sh          # ~100 MB corpus, -np 2, 4, 8, text and .h5: ~2 min
#     REPEAT=20 NPS="2" scripts/bench_prepare_rss.sh
#
# It concatenates the source text REPEAT times into $WORK/corpus.txt (tinyshakespeare x 90 is
# 100 MB) and REPEAT/10 times into a corpus ten times smaller, prepares both (peak RSS and time
# of each: it does not grow with the corpus), then for P in $NPS trains a few windows of a tiny
# model with `mpirun -np P charlm train` from the .h5 and from the text, each rank wrapped in
# /usr/bin/time, and prints every rank's peak RSS next to the corpus size and the ids that rank
# holds ((train + validation) / P x 1 byte: a vocabulary of at most 256 characters packs each id
# into one byte).
#
# Environment knobs:
#   SOURCE=PATH     text to repeat (default tests/data/tinyshakespeare.txt in the repository)
#   REPEAT=90       copies of SOURCE in the large corpus
#   NPS="2 4 8"     rank counts (more ranks than cores is allowed: oversubscribed)
#   WORK=/tmp/charlm-rss   scratch directory (corpora, runs; removed at the end unless KEEP=1)
#   CHARLM=build/charlm    MPIRUN=mpirun
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SOURCE=${SOURCE:-$ROOT/tests/data/tinyshakespeare.txt}
REPEAT=${REPEAT:-90}
NPS=${NPS:-2 4 8}
WORK=${WORK:-/tmp/charlm-rss}
CHARLM=${CHARLM:-$ROOT/build/charlm}
MPIRUN=${MPIRUN:-mpirun}
KEEP=${KEEP:-0}

die() { echo "bench_prepare_rss.sh: $*" >&2; exit 2; }
[[ -r $SOURCE ]] || die "cannot read $SOURCE; set SOURCE=PATH"
[[ -x $CHARLM ]] || die "$CHARLM not built"
[[ -x /usr/bin/time ]] || die "needs /usr/bin/time (apt-get install time)"

# Open MPI refuses to run as root without these (containers, CI); more ranks than cores is fine.
if [[ $(id -u) == 0 ]]; then
    export OMPI_ALLOW_RUN_AS_ROOT=${OMPI_ALLOW_RUN_AS_ROOT:-1}
    export OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=${OMPI_ALLOW_RUN_AS_ROOT_CONFIRM:-1}
fi
export OMPI_MCA_rmaps_base_oversubscribe=${OMPI_MCA_rmaps_base_oversubscribe:-1}
export OPENBLAS_NUM_THREADS=1

rm -rf "$WORK"
mkdir -p "$WORK"
[[ $KEEP == 1 ]] || trap 'rm -rf "$WORK"' EXIT

mb() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1e6 }'; }

small=$(( REPEAT / 10 > 0 ? REPEAT / 10 : 1 ))
for n in "$small" "$REPEAT"; do
    for ((i = 0; i < n; i++)); do cat "$SOURCE"; done > "$WORK/corpus-$n.txt"
done
txt=$WORK/corpus-$REPEAT.txt
h5=$WORK/corpus-$REPEAT.h5
bytes=$(stat -c %s "$txt")

echo "== charlm prepare: peak RSS and time against the corpus size"
for n in "$small" "$REPEAT"; do
    /usr/bin/time -f "%M %e" -o "$WORK/time" \
        "$CHARLM" prepare "$WORK/corpus-$n.txt" -o "$WORK/corpus-$n.h5" 2> "$WORK/prepare.log" \
        || { cat "$WORK/prepare.log" >&2; exit 1; }
    read -r kb secs < "$WORK/time"
    printf "  %7s MB text -> %6s MB .h5: peak RSS %6.1f MiB, %5.1f s\n" \
        "$(mb "$(stat -c %s "$WORK/corpus-$n.txt")")" "$(mb "$(stat -c %s "$WORK/corpus-$n.h5")")" \
        "$(awk -v k="$kb" 'BEGIN { print k / 1024 }')" "$secs"
done

# A tiny model and a few windows: the corpus, not the model, dominates the memory.
train_args=(--cell rnn --layers 1 --hidden 32 --embed 16 -b 16 -t 64 -n 5 --log-every 5
            --eval-every 0 --set data.val_frac=0.05 --set sample.every=0)

echo "== charlm train: peak RSS of each rank (corpus $(mb "$bytes") MB, $(awk -v b="$bytes" \
    'BEGIN { printf "%.1f", b / 1048576 }') MiB; val_frac 0.05)"
printf "  %-5s %3s %14s %12s  %s\n" corpus P "ids/rank MiB" "wall s" "peak RSS per rank (MiB)"
for np in $NPS; do
    for kind in h5 txt; do
        corpus=$h5
        [[ $kind == txt ]] && corpus=$txt
        rm -rf "$WORK/run" "$WORK"/rss.*
        # each rank under its own /usr/bin/time, its report named by the rank
        "$MPIRUN" -np "$np" \
            sh -c 'exec /usr/bin/time -f "%M %e" -o "$0/rss.$OMPI_COMM_WORLD_RANK" "$@"' \
            "$WORK" "$CHARLM" train --corpus "$corpus" "${train_args[@]}" -o "$WORK/run" \
            > "$WORK/train.log" 2>&1 || { cat "$WORK/train.log" >&2; exit 1; }
        per_rank="" wall=0
        for ((r = 0; r < np; r++)); do
            read -r kb secs < "$WORK/rss.$r"
            per_rank+=$(awk -v k="$kb" 'BEGIN { printf "%7.1f", k / 1024 }')
            wall=$(awk -v a="$wall" -v b="$secs" 'BEGIN { print (b > a ? b : a) }')
        done
        # every character's id, train and validation, is one byte held by exactly one rank
        ids=$(grep -o 'train [0-9]* chars, validation [0-9]* chars' "$WORK/train.log" |
              awk -v p="$np" '{ printf "%.1f", ($2 + $5) / p / 1048576 }')
        printf "  %-5s %3d %14s %12s %s\n" "$kind" "$np" "$ids" "$wall" "$per_rank"
    done
done
