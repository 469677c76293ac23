#!/usr/bin/env bash
# bench.sh — charlm against a PyTorch reference trainer on the same cores, side by side.
#
# Usage (from anywhere; needs the README's set-up, i.e. build/charlm, plus Debian's
# python3-torch for the reference):
#     scripts/bench.sh                 # full run: REPS alternating runs per work, ~20 min on 2 cores
#     QUICK=1 scripts/bench.sh         # smoke run: 1 rep, a few windows each, ~3 min
#
# For each work (E = H, 2 layers, global S = 64 streams, T = 64, Adam lr 0.002, clip 5, no
# validation) it runs, alternately, `mpirun -np $NP charlm train` (1 BLAS thread per rank) and
# scripts/torch_ref.py (DistributedDataParallel over gloo, $NP processes, 1 thread each), REPS
# times each, and prints the medians of chars/s, their ratio, the nominal GFLOP/s of both (6 per
# weight-matrix element per character), the GFLOP/s charlm executed and their fraction of the
# sgemm peak measured by this same run (scripts/sgemm_peak.c, $NP single-thread
# processes at once). Then LSTM 2x512 at -np 2 x 1 BLAS thread against -np 1 x 2 threads.
# All three use the OpenBLAS kernels charlm takes (OPENBLAS_CORETYPE from `charlm --version`:
# charlm corrects a library choice below the CPU's features, and the reference's matrix products
# are OpenBLAS's too), or the set named in OPENBLAS_CORETYPE. When that set is not an AVX-512
# one on an AVX-512 CPU (the AMD EPYC machines here set OPENBLAS_CORETYPE=Haswell), the works
# and the peak are measured a second time with OPENBLAS_CORETYPE=SKYLAKEX for all three, with
# the final training losses of both kernel sets side by side.
#
# charlm's chars/s of a run is the median of its metrics.jsonl records (each the throughput of
# the last log.every training windows) after the first record (start-up and warm-up); the
# reference's is its throughput over the windows after --warmup (3) untimed ones.
#
# Environment knobs:
#   REPS=3            runs of each program per work (QUICK=1: 1)
#   QUICK=0           1 = short smoke run
#   WORKS="lstm512 gru512 rnn512 lstm128 lstm1024"   subset / order of the works
#   THREADS_CMP=1     0 = skip the ranks-vs-threads comparison
#   AVX512=1          0 = skip the second table with OpenBLAS's AVX-512 kernels
#   CORPUS=PATH       corpus (default: tests/data/tinyshakespeare.txt in the repository)
#   NP=2              MPI ranks / DDP processes (one per core); 64 must be divisible by NP
#   CHARLM=build/charlm   PYTHON=/usr/bin/python3   MPIRUN=mpirun   CC=cc
#   RESULTS_DIR=scripts/bench-results   where the raw output file goes
#   SGEMM_SECONDS=3   duration of each sgemm measurement
#   PRECISION=fp32    charlm's model.precision (bf16: every product in bfloat16)
#   TABLE=1           0 = skip the works against PyTorch (and the AVX-512 table)
#   BF16_CMP=0        1 = charlm alone, model.precision fp32 against bf16, alternating, REPS
#                     runs each per work, each ending with one validation (data.val_frac 0.1):
#                     median chars/s, their ratio and the two validation losses
#   BASE=PATH         (unset) another charlm binary, e.g. build-base/charlm built from an earlier
#                     commit: charlm alone, BASE against CHARLM, as BF16_CMP compares precisions
#   CHARLM_KERN       (unset) forces charlm's recurrent-product path: blas, avx2, avx512,
#                     avx512bf16, amx (src/README.md §3); each run says which it took
# The raw output names paths in the repository relative to its root (it is committed and says
# nothing of the machine's directories); a CORPUS or RESULTS_DIR elsewhere is printed as given.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/blas_kernels.sh
. "$ROOT/scripts/blas_kernels.sh"
QUICK=${QUICK:-0}
if [[ $QUICK == 1 ]]; then REPS=${REPS:-1}; WARMUP=${WARMUP:-1}; else REPS=${REPS:-3}; WARMUP=${WARMUP:-3}; fi
WORKS=${WORKS:-lstm512 gru512 rnn512 lstm128 lstm1024}
THREADS_CMP=${THREADS_CMP:-1}
AVX512=${AVX512:-1}
NP=${NP:-2}
CHARLM=${CHARLM:-$ROOT/build/charlm}
PYTHON=${PYTHON:-/usr/bin/python3}
MPIRUN=${MPIRUN:-mpirun}
CC=${CC:-cc}
RESULTS_DIR=${RESULTS_DIR:-$ROOT/scripts/bench-results}
SGEMM_SECONDS=${SGEMM_SECONDS:-3}
PRECISION=${PRECISION:-fp32}
TABLE=${TABLE:-1}
BF16_CMP=${BF16_CMP:-0}
BASE=${BASE:-}
STREAMS=64
SEQ=64
LAYERS=2

CORPUS=${CORPUS:-$ROOT/tests/data/tinyshakespeare.txt}
[[ -e $CORPUS ]] || { echo "bench.sh: no corpus $CORPUS; set CORPUS=PATH" >&2; exit 2; }
[[ -x $CHARLM ]] || { echo "bench.sh: $CHARLM not built (run scripts/setup.sh)" >&2; exit 2; }
[[ -z $BASE || -x $BASE ]] || { echo "bench.sh: BASE=$BASE: not an executable" >&2; exit 2; }
"$PYTHON" -c 'import torch' 2>/dev/null \
    || { echo "bench.sh: $PYTHON has no torch (apt-get install python3-torch)" >&2; exit 2; }
(( STREAMS % NP == 0 )) || { echo "bench.sh: NP=$NP does not divide $STREAMS streams" >&2; exit 2; }

# Open MPI refuses to run as root without these (containers, CI).
if [[ $(id -u) == 0 ]]; then
    export OMPI_ALLOW_RUN_AS_ROOT=${OMPI_ALLOW_RUN_AS_ROOT:-1}
    export OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=${OMPI_ALLOW_RUN_AS_ROOT_CONFIRM:-1}
fi

# work name -> "cell hidden steps log_every" (full run: ~15-30 s of timed windows per run at
# the speeds of scripts/bench-results; QUICK: a few windows)
work_spec() {
    local full quick
    case $1 in
        lstm128)  full="lstm 128 300 30";  quick="lstm 128 40 10" ;;
        lstm512)  full="lstm 512 40 5";    quick="lstm 512 6 2" ;;
        gru512)   full="gru 512 50 5";     quick="gru 512 6 2" ;;
        rnn512)   full="rnn 512 150 15";   quick="rnn 512 20 5" ;;
        lstm1024) full="lstm 1024 12 2";   quick="lstm 1024 3 1" ;;
        *) echo "bench.sh: unknown work $1" >&2; exit 2 ;;
    esac
    if [[ $QUICK == 1 ]]; then echo "$quick"; else echo "$full"; fi
}

TMP=$(mktemp -d "${TMPDIR:-/tmp}/charlm-bench.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
mkdir -p "$RESULTS_DIR"
STAMP=$(date -u +%Y%m%dT%H%MZ)
OUT=$RESULTS_DIR/$STAMP.txt
if [[ $QUICK == 1 ]]; then OUT=$RESULTS_DIR/$STAMP-quick.txt; fi
: >"$OUT"

say() { printf '%s\n' "$*" | tee -a "$OUT"; }
# PATH relative to the repository root when it is inside the repository, else as given
repo_path() {
    local p
    p=$(realpath -ms -- "$1")
    case $p in "$ROOT"/*) printf '%s\n' "${p#"$ROOT"/}" ;; *) printf '%s\n' "$1" ;; esac
}
# the 1-minute load average: more than NP means other work shared the cores during a run
load1() { cut -d' ' -f1 /proc/loadavg; }

# median of the numbers on stdin, one per line ("nan" when there are none)
median() {
    sort -g | awk '{ a[NR] = $1 } END {
        if (NR == 0) print "nan"; else if (NR % 2) printf "%.1f\n", a[(NR + 1) / 2];
        else printf "%.1f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}

# FLOPs per character: 6 per weight-matrix element (forward 2, backward input gradient 2,
# weight gradient 2), over all W_ih and W_hh of every layer and the decoder; biases, the
# element-wise gate math, the embedding lookup and the softmax are not counted:
#   G = 4 (LSTM), 3 (GRU), 1 (RNN)
#   weights = G*H*(E + H)  +  (layers - 1) * G*H*(H + H)  +  V*H
#   flops_per_char = 6 * weights
flops_per_char() { # cell H E V
    local g
    case $1 in lstm) g=4 ;; gru) g=3 ;; *) g=1 ;; esac
    echo $(( 6 * (g * $2 * ($3 + $2) + (LAYERS - 1) * g * $2 * 2 * $2 + $4 * $2) ))
}

# a private copy: a rebuild of build/ during the run does not mix two versions
cp "$CHARLM" "$TMP/charlm"
CHARLM_BIN=$TMP/charlm
if [[ -n $BASE ]]; then cp "$BASE" "$TMP/charlm-base"; BASE_BIN=$TMP/charlm-base; fi

# charlm takes OpenBLAS's kernels from the CPU's features where the library's own choice is
# below them (src/README.md §8); the reference and sgemm_peak get the same set (a set you name
# in OPENBLAS_CORETYPE goes to all three)
if [[ -z ${OPENBLAS_CORETYPE:-} ]]; then
    core=$(charlm_blas_kernels "$CHARLM_BIN")
    if [[ -n $core ]]; then export OPENBLAS_CORETYPE=$core; fi
fi

# ---- sgemm peak ------------------------------------------------------------------------------
SGEMM=$TMP/sgemm_peak
# shellcheck disable=SC2046  # pkg-config's output is a list of flags
"$CC" -O2 -std=c11 -o "$SGEMM" "$ROOT/scripts/sgemm_peak.c" \
    $(pkg-config --cflags --libs openblas 2>/dev/null || echo -lopenblas)

gflops_of() { sed -n 's/.*best_gflops=\([0-9.]*\).*/\1/p'; }

# prints "one_proc sum_of_NP_procs two_threads" best GFLOP/s; the raw lines go to the file
measure_sgemm() {
    local one sum=0 thr i
    one=$(OPENBLAS_NUM_THREADS=1 "$SGEMM" 2048 "$SGEMM_SECONDS" 1 | tee -a "$OUT" | gflops_of)
    for (( i = 0; i < NP; i++ )); do
        OPENBLAS_NUM_THREADS=1 "$SGEMM" 2048 "$SGEMM_SECONDS" 1 >"$TMP/sgemm.$i" &
    done
    wait
    for (( i = 0; i < NP; i++ )); do
        sed 's/^/concurrent: /' "$TMP/sgemm.$i" >>"$OUT"
        sum=$(awk -v s="$sum" -v g="$(gflops_of <"$TMP/sgemm.$i")" 'BEGIN { print s + g }')
    done
    thr=$(OPENBLAS_NUM_THREADS=$NP "$SGEMM" 2048 "$SGEMM_SECONDS" "$NP" | tee -a "$OUT" | gflops_of)
    echo "$one $sum $thr"
}

# ---- one run of each program -----------------------------------------------------------------
# run_charlm NP THREADS CELL H STEPS LOG [PREC [VAL]] -> sets CPS (chars/s), VOCAB and SPLIT
# (charlm's time split line); model.precision PREC ($PRECISION); with VAL = 1, 10% of the corpus
# held out and one validation at the last step, its loss in VLOSS; the binary RUN_BIN when set
run_charlm() {
    local np=$1 threads=$2 cell=$3 h=$4 steps=$5 log=$6 prec=${7:-$PRECISION} val=${8:-0}
    local dir=$TMP/run bind=() every=0 frac=0
    if (( val )); then every=$steps frac=0.1; fi
    rm -rf "$dir"
    # a single rank with several threads must not be bound to one core (Open MPI binds np <= 2
    # to cores by default)
    if (( np == 1 && threads > 1 )); then bind=(--bind-to none); fi
    if ! OPENBLAS_NUM_THREADS=$threads OMP_NUM_THREADS=$threads \
        "$MPIRUN" "${bind[@]}" -np "$np" "${RUN_BIN:-$CHARLM_BIN}" train --corpus "$CORPUS" \
        --cell "$cell" --layers "$LAYERS" --hidden "$h" --embed "$h" --batch $((STREAMS / np)) --seq "$SEQ" \
        --steps "$steps" --log-every "$log" --eval-every "$every" --optim adam --lr 0.002 \
        --set optim.clip=5 --set model.dropout=0 --set data.val_frac="$frac" \
        --set checkpoint.every=0 --set model.precision="$prec" \
        --run-dir "$dir" >"$TMP/charlm.out" 2>"$TMP/charlm.err"; then
        echo "bench.sh: charlm failed:" >&2; tail -5 "$TMP/charlm.err" >&2; exit 1
    fi
    CPS=$(grep -v '"summary"\|"val_loss"' "$dir/metrics.jsonl" | tail -n +2 \
        | sed -n 's/.*"chars_per_s":\([-0-9.e+]*\).*/\1/p' | median)
    VOCAB=$(sed -n 's/.*vocabulary \([0-9]*\).*/\1/p' "$TMP/charlm.err" | head -1)
    SPLIT=$(sed -n 's/^charlm: time: //p' "$TMP/charlm.err" | head -1)
    MEM=$(sed -n 's/^charlm: memory: //p' "$TMP/charlm.err" | head -1)
    KERN=$(sed -n 's/.*; recurrent products //p' "$TMP/charlm.err" | head -1)
    # FLOPs per character charlm executes (its summary: GFLOP/s over chars/s): fewer than the
    # model's nominal count when it folds the embedding into layer 0
    XFPC=$(grep '"summary"' "$dir/metrics.jsonl" | awk '{
        match($0, /"chars_per_s":[-0-9.e+]*/); c = substr($0, RSTART + 14, RLENGTH - 14)
        match($0, /"gflops":[-0-9.e+]*/); g = substr($0, RSTART + 9, RLENGTH - 9)
        printf "%.0f\n", g * 1e9 / c }')
    LOSS=$(grep '"train_loss"' "$dir/metrics.jsonl" | tail -1 | sed -n 's/.*"train_loss":\([-0-9.e+]*\).*/\1/p')
    # a run without validation has no val_loss record (grep's status 1 must not end the script)
    VLOSS=$({ grep '"val_loss"' "$dir/metrics.jsonl" || true; } | tail -1 \
        | sed -n 's/.*"val_loss":\([-0-9.e+]*\).*/\1/p')
}

# run_torch CELL H WINDOWS -> sets TPS (chars/s)
run_torch() {
    if ! "$PYTHON" "$ROOT/scripts/torch_ref.py" --corpus "$CORPUS" --cell "$1" --layers "$LAYERS" \
        --hidden "$2" --embed "$2" --streams "$STREAMS" --seq "$SEQ" --nproc "$NP" \
        --warmup "$WARMUP" --windows "$3" >"$TMP/torch.out" 2>"$TMP/torch.err"; then
        echo "bench.sh: torch_ref.py failed:" >&2; tail -5 "$TMP/torch.err" >&2; exit 1
    fi
    TPS=$(sed -n 's/^RESULT chars_per_s=\([0-9.]*\).*/\1/p' "$TMP/torch.out")
    [[ -n $TPS ]] || { echo "bench.sh: no RESULT from torch_ref.py" >&2; exit 1; }
}

# ---- header ----------------------------------------------------------------------------------
commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
if [[ -n $(git -C "$ROOT" status --porcelain -- src include CMakeLists.txt 2>/dev/null) ]]; then
    commit="$commit (+ uncommitted changes in src/include)"
fi
if [[ $QUICK == 1 ]]; then say "# charlm benchmark (QUICK smoke run: too short to quote)"
else say "# charlm benchmark"; fi
say "date:    $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
say "host:    $(uname -n), $(uname -sr)"
say "cpu:     $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cpus"
say "commit:  $commit, $("$CHARLM_BIN" --version 2>&1 | head -1), binary built $(date -u -r "$CHARLM" "+%Y-%m-%d %H:%M UTC")"
if [[ -n $BASE ]]; then
    base_path=$(repo_path "$BASE")
    [[ $base_path == /* ]] && base_path="$(basename "$BASE") (outside the repository)"
    say "base:    $base_path, $("$BASE_BIN" --version 2>&1 | head -1), built $(date -u -r "$BASE" "+%Y-%m-%d %H:%M UTC")"
fi
CORE=$(OPENBLAS_VERBOSE=2 "$SGEMM" 64 0 1 2>&1 | sed -n 's/^Core: *//p' | head -1)
say "blas:    OpenBLAS $CORE kernels (OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-(unset)})"
say "torch:   $("$PYTHON" -c 'import torch; print(torch.__version__)' 2>/dev/null)"
say "corpus:  $(repo_path "$CORPUS")"
say "setup:   $LAYERS layers, E = H, $STREAMS global streams, T = $SEQ, Adam, clip 5; -np $NP;" \
    "REPS=$REPS, reference warm-up $WARMUP windows, charlm model.precision=$PRECISION"
say "load:    $(cut -d' ' -f1-3 /proc/loadavg) (1/5/15 min load average at start)"

# ---- the works -------------------------------------------------------------------------------
# bench_works TITLE: every work REPS times each program, the sgemm peak before and after, and the
# table; run with the OPENBLAS_CORETYPE of the caller's environment. Sets LOSSES[work].
declare -A LOSSES
bench_works() {
    local title=$1 work cell h steps log windows rep cm tm fpc peak
    local SG1 SGN SGT SG1b SGNb SGTb
    local -A res
    say ""
    say "== $title"
    read -r SG1 SGN SGT < <(measure_sgemm)
    say "sgemm 2048^3 (start): 1 process ${SG1} GFLOP/s; $NP concurrent processes ${SGN} (sum);" \
        "1 process x $NP threads ${SGT}"
    for work in $WORKS; do
        read -r cell h steps log < <(work_spec "$work")
        windows=$((steps - log))
        c_list=() t_list=()
        for (( rep = 1; rep <= REPS; rep++ )); do
            run_charlm "$NP" 1 "$cell" "$h" "$steps" "$log"
            run_torch "$cell" "$h" "$windows"
            c_list+=("$CPS") t_list+=("$TPS")
            say "run $work rep $rep: charlm $CPS chars/s, torch $TPS chars/s; load $(load1);" \
                "charlm time: $SPLIT; memory: $MEM; recurrent products: $KERN"
        done
        LOSSES[$work]=$LOSS
        cm=$(printf '%s\n' "${c_list[@]}" | median)
        tm=$(printf '%s\n' "${t_list[@]}" | median)
        res[$work]="$cell $h $cm $tm $VOCAB $XFPC"
    done
    read -r SG1b SGNb SGTb < <(measure_sgemm)
    say "sgemm 2048^3 (end):   1 process ${SG1b} GFLOP/s; $NP concurrent processes ${SGNb} (sum);" \
        "1 process x $NP threads ${SGTb}"
    peak=$(awk -v a="$SGN" -v b="$SGNb" 'BEGIN { print (a > b ? a : b) }')
    say "peak for the fractions: ${peak} GFLOP/s (best of the two $NP-process sums)"
    say ""
    say "nominal GFLOP/s: 6 FLOPs per weight-matrix element per character, as the model is"
    say "defined and as the reference computes it; executed: what charlm's kernels ran (with the"
    say "embedding folded into layer 0, W_ih0's product is done per vocabulary entry, not per"
    say "character), and of_peak is executed over the peak above"
    say "$(printf '%-9s %11s %11s %7s %15s %15s %16s %8s' work charlm_c/s torch_c/s ratio \
        charlm_nominal torch_nominal charlm_executed of_peak)"
    for work in $WORKS; do
        read -r cell h cm tm vocab xfpc <<<"${res[$work]}"
        fpc=$(flops_per_char "$cell" "$h" "$h" "$vocab")
        say "$(awk -v w="$work" -v c="$cm" -v t="$tm" -v f="$fpc" -v x="$xfpc" -v p="$peak" 'BEGIN {
            printf "%-9s %11.0f %11.0f %6.2fx %15.1f %15.1f %16.1f %7.1f%%", w, c, t, c / t,
                   c * f * 1e-9, t * f * 1e-9, c * x * 1e-9, 100 * c * x * 1e-9 / p }')"
    done
}

if [[ $TABLE == 1 ]]; then
    bench_works "OpenBLAS $CORE kernels (OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-(unset)})"
fi
declare -A LOSSES_DEFAULT
for work in $WORKS; do LOSSES_DEFAULT[$work]=${LOSSES[$work]:-}; done

# OpenBLAS dispatches its kernels by CPU (OPENBLAS_CORETYPE overrides). When that dispatch is not
# an AVX-512 kernel on an AVX-512 CPU, measure everything again with OpenBLAS's AVX-512 kernels.
if [[ $TABLE == 1 && $AVX512 == 1 ]] && grep -qw avx512f /proc/cpuinfo &&
   [[ ! $CORE =~ SkylakeX|Cooperlake|SapphireRapids ]]; then
    OPENBLAS_CORETYPE=SKYLAKEX bench_works \
        "OpenBLAS AVX-512 kernels (OPENBLAS_CORETYPE=SKYLAKEX for charlm, the reference and sgemm)"
    say ""
    say "final training loss of the charlm runs, $CORE kernels vs AVX-512 kernels (the same"
    say "windows; they differ only by float rounding):"
    for work in $WORKS; do
        say "  $work: ${LOSSES_DEFAULT[$work]} vs ${LOSSES[$work]}"
    done
fi

# ---- charlm against charlm -------------------------------------------------------------------
# compare_charlm TITLE NAME_A BIN_A PREC_A NAME_B BIN_B PREC_B: charlm alone in two set-ups
# (binary, model.precision), alternating, REPS runs each per work, each ending with one validation
# (10% of the corpus held out): the median chars/s of both, B's over A's, and the two validation
# losses
compare_charlm() {
    local title=$1 na=$2 ba=$3 pa=$4 nb=$5 bb=$6 pb=$7 work cell h steps log rep am bm va vb ka
    say ""
    say "== $title (OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-(unset)}; alternating; 10% of the"
    say "corpus held out, one validation at the last step)"
    say "$(printf '%-9s %6s %11s %11s %7s %12s %12s' work steps "$na"_c/s "$nb"_c/s ratio \
        "$na"_val "$nb"_val)"
    local rows=() a_list b_list
    for work in $WORKS; do
        read -r cell h steps log < <(work_spec "$work")
        a_list=() b_list=()
        for (( rep = 1; rep <= REPS; rep++ )); do
            RUN_BIN=$ba run_charlm "$NP" 1 "$cell" "$h" "$steps" "$log" "$pa" 1
            a_list+=("$CPS") va=$VLOSS ka=$KERN
            RUN_BIN=$bb run_charlm "$NP" 1 "$cell" "$h" "$steps" "$log" "$pb" 1
            b_list+=("$CPS") vb=$VLOSS
            say "run $work rep $rep: $na ${a_list[-1]} chars/s (val $va; $ka), $nb $CPS" \
                "chars/s (val $vb; $KERN); load $(load1)"
        done
        am=$(printf '%s\n' "${a_list[@]}" | median)
        bm=$(printf '%s\n' "${b_list[@]}" | median)
        rows+=("$(awk -v w="$work" -v s="$steps" -v a="$am" -v b="$bm" -v x="$va" -v y="$vb" \
            'BEGIN { printf "%-9s %6d %11.0f %11.0f %6.2fx %12s %12s", w, s, a, b, b / a, x, y }')")
    done
    for row in "${rows[@]}"; do say "$row"; done
}

if [[ $BF16_CMP == 1 ]]; then
    compare_charlm "charlm model.precision fp32 against bf16" fp32 "$CHARLM_BIN" fp32 \
        bf16 "$CHARLM_BIN" bf16
fi
if [[ -n $BASE ]]; then
    compare_charlm "charlm: the base build against this one" base "$BASE_BIN" "$PRECISION" \
        this "$CHARLM_BIN" "$PRECISION"
fi

# ---- ranks vs threads --------------------------------------------------------------------------
if [[ $THREADS_CMP == 1 && $NP == 2 ]]; then
    read -r cell h steps log < <(work_spec lstm512)
    a_list=() b_list=()
    for (( rep = 1; rep <= REPS; rep++ )); do
        run_charlm 2 1 "$cell" "$h" "$steps" "$log"
        a_list+=("$CPS")
        run_charlm 1 2 "$cell" "$h" "$steps" "$log"
        b_list+=("$CPS")
        say "run lstm512 rep $rep: -np 2 x 1 thread ${a_list[-1]} chars/s," \
            "-np 1 x 2 threads $CPS chars/s; load $(load1)"
    done
    am=$(printf '%s\n' "${a_list[@]}" | median)
    bm=$(printf '%s\n' "${b_list[@]}" | median)
    say "$(awk -v a="$am" -v b="$bm" 'BEGIN { printf "lstm512 ranks vs threads: -np 2 x 1 thread %.0f chars/s, -np 1 x 2 threads %.0f chars/s (%.2fx)", a, b, a / b }')"
fi
# ---- the all-reduce alone ---------------------------------------------------------------------
# the gradient of each work summed by MPI_Allreduce over NP ranks (scripts/allreduce_bench.c), for
# the README's scaling section
ALLRED=$TMP/allreduce_bench
if mpicc -O2 -o "$ALLRED" "$ROOT/scripts/allreduce_bench.c" 2>"$TMP/mpicc.err"; then
    say ""
    say "gradient all-reduce alone, $NP ranks on this host (piece=0: one MPI_Allreduce in place;"
    say "piece=262144: MPI_Iallreduce pieces, 2 in flight, as charlm sums it):"
    for work in $WORKS; do
        read -r cell h _ _ < <(work_spec "$work")
        # parameters: as flops_per_char counts weights, plus the biases and the embedding
        case $cell in lstm) g=4 ;; gru) g=3 ;; *) g=1 ;; esac
        n=$(( g * h * (h + h) * LAYERS + 2 * g * h * LAYERS + 2 * VOCAB * h + VOCAB ))
        for piece in 0 262144; do # one MPI_Allreduce; charlm's pieces (src/dist.c)
            say "  $work: $("$MPIRUN" -np "$NP" "$ALLRED" "$n" 30 "$piece" | grep '^ALLREDUCE')"
        done
    done
else
    say "(mpicc failed: no all-reduce timing)"
fi
say "load:    $(cut -d' ' -f1-3 /proc/loadavg) (at end)"
say "raw output: $(repo_path "$OUT")"
