#!/bin/sh
# The gradient-flow figure of the README (scripts/gradflow-demo.png): an RNN, an LSTM and a GRU of the same
# size trained on the same text for the same number of windows, then `charlm gradflow` on the
# same held-out text, plotted by scripts/plot_gradflow.py.
#   scripts/gradflow_demo.sh [OUT_DIR]     (default: gradflow-demo)
# Needs Debian's python3-matplotlib (/usr/bin/python3). Environment: CHARLM (default
# build/charlm), STEPS (default 600), CORPUS (default tests/data/tinyshakespeare.txt).
# A model already trained in OUT_DIR is kept; the measurements and the figure are redone.
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CHARLM=${CHARLM:-$ROOT/build/charlm}
CORPUS=${CORPUS:-$ROOT/tests/data/tinyshakespeare.txt}
STEPS=${STEPS:-600}
OUT=${1:-gradflow-demo}
mkdir -p "$OUT"
# the last 100,000 characters are the validation split of training (data.val_frac = 0.1 of
# 1.1 MB) and the text measured
tail -c 100000 "$CORPUS" > "$OUT/heldout.txt"
for cell in rnn lstm gru; do
    if [ ! -f "$OUT/run-$cell/checkpoints/ckpt-$(printf %08d "$STEPS").h5" ]; then
        "$CHARLM" train --corpus "$CORPUS" --cell "$cell" --layers 2 --hidden 128 --embed 32 \
            --dropout 0 --batch 32 --seq 64 --steps "$STEPS" --lr 0.003 --seed 1 \
            --eval-every "$STEPS" --set sample.every=0 --run-dir "$OUT/run-$cell" >/dev/null
    fi
    "$CHARLM" gradflow "$OUT/run-$cell/checkpoints/ckpt-$(printf %08d "$STEPS").h5" \
        --corpus "$OUT/heldout.txt" --max-lag 192 --batch 16 --windows 16 \
        --json "$OUT/gradflow-$cell.json" > "$OUT/gradflow-$cell.txt"
done
/usr/bin/python3 "$ROOT/scripts/plot_gradflow.py" "$OUT/gradflow-rnn.json" "$OUT/gradflow-lstm.json" \
    "$OUT/gradflow-gru.json" -o "$OUT/gradflow.png"
echo "$OUT/gradflow.png"
