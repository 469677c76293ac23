#!/usr/bin/env bash
# bench_load.sh — how long `charlm train` takes to load a text corpus, by corpus size and rank
# count: the time per MB should not grow with the corpus (each rank scans the text once and then
# decodes only its own shard and validation part).
#
# Usage (from anywhere, after the README's set-up):
#     scripts/bench_load.sh                      # 16, 64, 256 MB and 1 GB at -np 1 and 2: ~5 min
#     SIZES="16 64" CHARLM=/other/build/charlm LABEL=before scripts/bench_load.sh
#
# Each corpus repeats SOURCE (whole copies) to about SIZE MB in a scratch directory. One run is
# `mpirun -np P charlm train --corpus CORPUS` with a tiny model and --steps 1 (MODEL below; the
# validation split is the last 1% of the corpus), timed up to the line charlm prints when
# training starts ("charlm: rnn 1x8 ..."): the wall time from the launch, and the CPU time the
# ranks' main threads have used by then (/proc/PID/schedstat; of the ranks, the least: one that
# is done first spins in Open MPI's first collective until the others arrive). CPU time hardly
# changes when other programs share the cores; wall time does. The load time is either less the
# same for a corpus of one copy of SOURCE (MPI, the libraries, the model: what does not depend
# on the corpus). The best of REPEAT runs counts. The corpus is in the page cache (just
# written): this measures decoding and packing, not the disk.
#
# Output: a table (MB, ranks; wall and CPU time to the training line, load time, load seconds per
# MB; MB/s of CPU load) and, per rank count, the largest over the smallest time per MB (flat:
# near 1). The table and each run's times go to scripts/bench-results/load-<UTC time>.txt (no
# paths of this machine).
#
# Environment knobs:
#   SOURCE=tests/data/tinyshakespeare.txt   text to repeat (relative to the repository; missing:
#                                           a generated mixed-script text of about 1 MB)
#   SIZES="16 64 256 1024"   corpus sizes in MB      NPS="1 2"   rank counts
#   REPEAT=3                 runs per case (best counts)
#   CHARLM=build/charlm      MPIRUN=mpirun           LABEL=      a word for the results file
#   WORK=                    scratch directory (default: a new one under TMPDIR; removed at the
#                            end unless KEEP=1)
set -euo pipefail
export LC_ALL=C

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SOURCE=${SOURCE:-tests/data/tinyshakespeare.txt}
SIZES=${SIZES:-16 64 256 1024}
NPS=${NPS:-1 2}
REPEAT=${REPEAT:-3}
CHARLM=${CHARLM:-$ROOT/build/charlm}
MPIRUN=${MPIRUN:-mpirun}
LABEL=${LABEL:-}
KEEP=${KEEP:-0}
MODEL=(--cell rnn --layers 1 --hidden 8 --embed 8 --batch 16 --seq 64 --steps 1
       --set data.val_frac=0.01)

die() { echo "bench_load.sh: $*" >&2; exit 2; }
[[ -x $CHARLM ]] || die "$CHARLM not built"
command -v "$MPIRUN" >/dev/null || die "$MPIRUN not found"
command -v python3 >/dev/null || die "needs python3"

# Open MPI refuses to run as root without these (containers, CI); more ranks than cores is fine.
if [[ $(id -u) == 0 ]]; then
    export OMPI_ALLOW_RUN_AS_ROOT=${OMPI_ALLOW_RUN_AS_ROOT:-1}
    export OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=${OMPI_ALLOW_RUN_AS_ROOT_CONFIRM:-1}
fi
export OMPI_MCA_rmaps_base_oversubscribe=${OMPI_MCA_rmaps_base_oversubscribe:-1}
export OPENBLAS_NUM_THREADS=1

if [[ -z ${WORK:-} ]]; then
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/charlm-bench-load-XXXXXX")
else
    rm -rf "$WORK"
    mkdir -p "$WORK"
fi
[[ $KEEP == 1 ]] || trap 'rm -rf "$WORK"' EXIT

# the source: a file (relative to the repository unless absolute), else generated
[[ $SOURCE == /* ]] || SOURCE=$ROOT/$SOURCE
if [[ -r $SOURCE ]]; then
    src_name=$(basename "$SOURCE")
    cp "$SOURCE" "$WORK/source.txt"
else
    src_name="generated text (no $(basename "$SOURCE"))"
    awk 'BEGIN {
        srand(1)
        n = split("the of and to in a is that for it as was with be by on not he this are " \
                  "or his from at which but have an they you were her she there been one all " \
                  "café naïve über 한국어 문장 東京 ß", w, " ")
        for (i = 0; i < 180000; i++)
            printf "%s%s", w[int(rand() * n) + 1], (rand() < 0.1 ? ".\n" : " ")
    }' > "$WORK/source.txt"
fi
src_bytes=$(stat -c %s "$WORK/source.txt")

# One run: prints "WALL CPU" (seconds to the training line), or the run's output and fails.
cat > "$WORK/run.py" <<'EOF'
import os, subprocess, sys, time

mpirun, np, charlm, corpus, rundir, *model = sys.argv[1:]
t0 = time.monotonic()
p = subprocess.Popen([mpirun, "-np", np, charlm, "train", "--corpus", corpus, *model,
                      "--run-dir", rundir], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                     text=True, errors="replace")
wall, cpus, out = None, [], []
for line in p.stderr:
    out.append(line)
    if wall is None and " parameters, vocabulary " in line:
        wall = time.monotonic() - t0
        for pid in filter(str.isdigit, os.listdir("/proc")):  # the ranks: mpirun's children
            try:
                with open(f"/proc/{pid}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) != p.pid:
                        continue
                with open(f"/proc/{pid}/schedstat") as f:
                    cpus.append(int(f.read().split()[0]) / 1e9)
            except (OSError, ValueError, IndexError):
                pass
if p.wait() != 0 or wall is None or len(cpus) != int(np):
    sys.stderr.write("".join(out).replace(os.path.dirname(corpus), "$WORK"))
    sys.exit(f"the run at -np {np} failed ({len(cpus)} ranks seen)")
print(f"{wall:.3f} {min(cpus):.3f}")
EOF

# corpus_of MB: writes $WORK/corpus.txt of whole copies of the source, about MB * 1e6 bytes
corpus_of() {
    local copies=$(( ($1 * 1000000 + src_bytes / 2) / src_bytes ))
    (( copies >= 1 )) || copies=1
    for ((i = 0; i < copies; i++)); do cat "$WORK/source.txt"; done > "$WORK/corpus.txt"
}

# measure NP: "WALL CPU", each the best of REPEAT runs; every run's times go to $raw
measure() {
    local np=$1 r times bytes
    bytes=$(stat -c %s "$WORK/corpus.txt")
    for ((r = 0; r < REPEAT; r++)); do
        rm -rf "$WORK/run"
        times=$(python3 "$WORK/run.py" "$MPIRUN" "$np" "$CHARLM" "$WORK/corpus.txt" \
                "$WORK/run" "${MODEL[@]}") || die "run failed"
        echo "  run: -np $np, $bytes bytes: training after $times s (wall, CPU)" >> "$raw"
        echo "$times"
    done | awk 'NR == 1 || $1 < w { w = $1 } NR == 1 || $2 < c { c = $2 }
                END { printf "%.3f %.3f\n", w, c }'
}

stamp=$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$ROOT/scripts/bench-results"
out=$ROOT/scripts/bench-results/load-$stamp${LABEL:+-$LABEL}.txt
raw=$WORK/raw.txt
if [[ $CHARLM -ef $ROOT/build/charlm ]]; then
    build="this repository's build at $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null)"
else
    build="another build (CHARLM)"
fi
{
    echo "bench_load.sh ${LABEL:+($LABEL) }at $stamp"
    echo "charlm: $("$CHARLM" --version 2>&1 | head -1), $build"
    echo "machine: $(nproc) cores, $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)," \
         "load average $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "source: $src_name, $src_bytes bytes; model: ${MODEL[*]}; best of $REPEAT"
} > "$raw"

declare -A base
corpus_of 0 # one copy: the baseline
for np in $NPS; do base[$np]=$(measure "$np"); done

table=$WORK/table.txt
row='%-7s %5s | %7s %7s %9s | %7s %7s %9s %7s\n'
# shellcheck disable=SC2059
printf "$row" "MB" "ranks" "wall s" "load" "load s/MB" "CPU s" "load" "load s/MB" "MB/s" > "$table"
for np in $NPS; do
    # shellcheck disable=SC2059
    printf "$row" "$(awk -v b="$src_bytes" 'BEGIN { printf "%.1f", b / 1e6 }')" "$np" \
        "${base[$np]% *}" "(base)" "" "${base[$np]#* }" "(base)" "" "" >> "$table"
done
for mb in $SIZES; do
    corpus_of "$mb"
    bytes=$(stat -c %s "$WORK/corpus.txt")
    for np in $NPS; do
        t=$(measure "$np")
        awk -v t="$t" -v b="${base[$np]}" -v bytes="$bytes" -v sb="$src_bytes" -v np="$np" \
            -v row="$row" '
            BEGIN {
                split(t, x, " "); split(b, y, " "); mb = bytes / 1e6; d = mb - sb / 1e6
                wl = x[1] - y[1]; cl = x[2] - y[2]
                printf row, sprintf("%.1f", mb), np, x[1], sprintf("%.3f", wl),
                       sprintf("%.5f", wl / d), x[2], sprintf("%.3f", cl),
                       sprintf("%.5f", cl / d), sprintf("%.0f", (cl > 0 ? d / cl : 0))
            }' >> "$table"
    done
    rm -f "$WORK/corpus.txt"
done
# flatness: per rank count, the largest over the smallest load time per MB (wall, CPU)
awk -F'|' 'NR > 1 && $2 !~ /base/ {
         split($1, a, " "); split($2, w, " "); split($3, c, " "); np = a[2]
         if (!(np in wlo) || w[3] < wlo[np]) wlo[np] = w[3]
         if (!(np in whi) || w[3] > whi[np]) whi[np] = w[3]
         if (!(np in clo) || c[3] < clo[np]) clo[np] = c[3]
         if (!(np in chi) || c[3] > chi[np]) chi[np] = c[3] }
     END { for (np in clo)
               printf "-np %s: load s/MB, largest/smallest: CPU %.2f (%.5f to %.5f), " \
                      "wall %.2f (%.5f to %.5f)\n", np,
                      (clo[np] > 0 ? chi[np] / clo[np] : 0), clo[np], chi[np],
                      (wlo[np] > 0 ? whi[np] / wlo[np] : 0), wlo[np], whi[np] }' \
    "$table" | sort > "$WORK/flat.txt"

echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)" >> "$raw"
{ cat "$raw"; echo; cat "$table" "$WORK/flat.txt"; } > "$out"
cat "$table" "$WORK/flat.txt"
echo "results: scripts/bench-results/$(basename "$out")"
