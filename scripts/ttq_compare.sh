#!/usr/bin/env bash
# Time to quality, side by side in one run: charlm trained with a configuration under its
# train.time_limit, then PyTorch DDP (scripts/torch_ref.py's quality mode) on the same corpus,
# split (the last data.val_frac held out, scored whole) and cores for the same training time;
# prints both final validation losses and plots val loss against wall time.
#
#   scripts/ttq_compare.sh --config configs/tinyshakespeare-10min.ini \
#       [--corpus FILE] [--np 2] [--out DIR] [-- TORCH_REF_ARGS...]
#
# charlm: mpiexec -np NP charlm train --config CONFIG --run-dir OUT/charlm [--corpus FILE]
#   (the run's own time limit; its wall time, start-up and final validation included, is
#   measured here and printed).
# PyTorch: torch_ref.py --corpus FILE --nproc NP --time-limit L --val-frac F
#   --curve OUT/torch-curve.jsonl TORCH_REF_ARGS, where L and F are the configuration's
#   train.time_limit and data.val_frac (the last value of a key wins, as in charlm; a single
#   configuration file, without --set). TORCH_REF_ARGS choose the PyTorch recipe (model,
#   --dropout, --schedule, --lr ...; default: the model's shape, batch, window, lr and clip
#   from the configuration, which must then name them, no dropout, cosine over the time).
# Fair to both: PyTorch gets the OpenBLAS kernels charlm chose (OPENBLAS_CORETYPE from
# `charlm --version`, unless set already: Debian's OpenBLAS may fall back to SSE3 kernels on a
# CPU it does not know, which charlm corrects for itself) and validates as often as the charlm
# run did (train.time_limit / (its validations), so that both spend alike on scoring).
# Writes OUT/summary.txt (the table) and OUT/curves.png (scripts/plot_metrics.py --x time
# --val-only; needs python3-matplotlib). Environment: CHARLM_BIN (default build/charlm),
# MPIEXEC (default mpiexec), PYTHON (default /usr/bin/python3).
# Exit status: 0 when both trainings finished, 1 when one failed, 2 for a bad command line.
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/blas_kernels.sh
. "$here/blas_kernels.sh"
repo=$(dirname "$here")
say() { echo "ttq_compare.sh: $*" >&2; }
usage() {
    say "$1"
    say "usage: ttq_compare.sh --config FILE [--corpus FILE] [--np N] [--out DIR] [-- ARGS]"
    exit 2
}

config="" corpus="" np=2 out="" torch_args=()
while (($#)); do
    case "$1" in
        --config | --corpus | --np | --out)
            (($# >= 2)) || usage "$1 needs a value"
            case "$1" in
                --config) config="$2" ;; --corpus) corpus="$2" ;;
                --np) np="$2" ;; --out) out="$2" ;;
            esac
            shift 2 ;;
        --) shift; torch_args=("$@"); break ;;
        *) usage "unknown argument $1" ;;
    esac
done
[[ -n "$config" ]] || usage "--config is required"
[[ -r "$config" ]] || usage "--config $config: cannot read it"
[[ "$np" =~ ^[1-9][0-9]*$ ]] || usage "--np $np: expected a positive integer"
out="${out:-runs/ttq-$(date -u +%Y%m%dT%H%MZ)}"
[[ ! -e "$out" ]] || usage "--out $out exists already"
charlm="${CHARLM_BIN:-$repo/build/charlm}"
[[ -x "$charlm" ]] || charlm=$(command -v charlm) || usage "no charlm binary (set CHARLM_BIN)"
mpiexec="${MPIEXEC:-mpiexec}"
python="${PYTHON:-/usr/bin/python3}"

# ini KEY DEFAULT: the value of section.key in the configuration (the last one wins)
ini() {
    local section="${1%%.*}" key="${1#*.}"
    awk -v s="$section" -v k="$key" -v d="$2" '
        /^[ \t]*[;#]/ { next }
        /^[ \t]*\[/ { gsub(/[][ \t]/, ""); cur = $0; next }
        cur == s && index($0, "=") {
            name = substr($0, 1, index($0, "=") - 1); gsub(/[ \t]/, "", name)
            if (name == k) { v = substr($0, index($0, "=") + 1); gsub(/^[ \t]+|[ \t]+$/, "", v); d = v }
        }
        END { print d }' "$config"
}
limit=$(ini train.time_limit 0)
val_frac=$(ini data.val_frac 0.1)
[[ "$limit" != 0 ]] || usage "$config: train.time_limit is not set: nothing bounds the time"
corpus="${corpus:-$(ini data.corpus "")}"
[[ -r "$corpus" ]] || usage "corpus '$corpus': cannot read it (--corpus, or data.corpus)"
if ((${#torch_args[@]} == 0)); then
    torch_args=(--cell "$(ini model.cell lstm)" --layers "$(ini model.layers 2)"
                --hidden "$(ini model.hidden 512)" --embed "$(ini model.embed 64)"
                --streams $(($(ini train.batch 32) * np)) --seq "$(ini train.seq 64)"
                --lr "$(ini optim.lr 0.002)" --clip "$(ini optim.clip 5)"
                --dropout 0 --schedule cosine)
fi

mkdir -p "$out" || exit 1
status=0
say "charlm: $config, $np rank(s), time limit $limit s -> $out/charlm"
t0=$(date +%s.%N)
"$mpiexec" -np "$np" "$charlm" train --config "$config" --corpus "$corpus" \
    --run-dir "$out/charlm" >"$out/charlm.log" 2>&1 || { say "charlm failed: $out/charlm.log"; status=1; }
t1=$(date +%s.%N)
export OPENBLAS_CORETYPE="${OPENBLAS_CORETYPE:-$(charlm_blas_kernels "$charlm")}"
nval=$(grep -c '"val_loss"' "$out/charlm/metrics.jsonl" 2>/dev/null) || nval=0
every=$(awk -v l="$limit" -v n="$nval" 'BEGIN { print (n > 1 ? l / n : l + 1) }')
say "PyTorch DDP (OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-unset}, validating every $every s): ${torch_args[*]}"
"$python" "$here/torch_ref.py" --corpus "$corpus" --nproc "$np" --time-limit "$limit" \
    --val-frac "$val_frac" --eval-every-s "$every" --curve "$out/torch-curve.jsonl" \
    "${torch_args[@]}" >"$out/torch.log" 2>&1 || { say "torch_ref.py failed: $out/torch.log"; status=1; }
t2=$(date +%s.%N)

"$python" - "$here" "$out" "$t0" "$t1" "$t2" "$limit" "$config" "${torch_args[*]}" <<'EOF' |
import os, re, sys
here, out, t0, t1, t2, limit, config, targs = sys.argv[1:]
sys.path.insert(0, here)
from plot_metrics import read_metrics  # reads charlm's metrics.jsonl and torch_ref's curve
def last_val(path):
    """(step, val_loss) of the run's last validation, or None."""
    try:
        val = read_metrics(path)[1]
    except OSError:
        return None
    return val[-1][:2] if val else None
c = last_val(os.path.join(out, "charlm", "metrics.jsonl"))
t = last_val(os.path.join(out, "torch-curve.jsonl"))
res = re.search(r"RESULT .*", open(os.path.join(out, "torch.log")).read())
print(f"# time to quality, side by side: {config}, train.time_limit {limit} s")
print(f"# PyTorch recipe: {targs}")
print(f"{'':8} {'val loss':>9} {'steps':>6} {'wall s':>7}")
for name, v, wall in (("charlm", c, float(t1) - float(t0)), ("pytorch", t, float(t2) - float(t1))):
    loss = f"{v[1]:.4f}" if v else "-"
    print(f"{name:8} {loss:>9} {v[0] if v else '-':>6} {wall:7.1f}")
if res:
    print(f"# torch_ref: {res.group(0)}")
EOF
tee "$out/summary.txt"
"$python" "$here/plot_metrics.py" "$out/charlm" "$out/torch-curve.jsonl" --x time --val-only \
    --label "charlm $(basename "$config")" --label "PyTorch DDP" \
    --title "validation loss against wall time, $np cores" -o "$out/curves.png" >/dev/null ||
    say "no plot (python3-matplotlib?)"
exit "$status"
