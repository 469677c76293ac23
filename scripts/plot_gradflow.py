#!/usr/bin/python3
"""Plots the gradient flow that `charlm gradflow CKPT --corpus TEXT --json FILE` measured: the
mean norm ||dL_t/dh_{t-k}|| of the gradient of one step's loss with respect to the hidden state k
steps earlier, against k, on a logarithmic axis. Several files go on one figure side by side,
one panel per file (the RNN, LSTM and GRU of the README), each with a curve per layer and a
dashed line at the window length the model was trained with (train_seq): back-propagation
during training never reached further back.

Usage:
    /usr/bin/python3 scripts/plot_gradflow.py FILE.json [FILE.json...] [-o OUT.png]
                                              [--title TEXT] [--dpi N] [--relative]

--relative divides each curve by its value at k = 0, so that the rates of decay compare
directly. The figure goes to OUT.png (default gradflow.png). A file that is not a gradflow JSON
is one error line naming it, exit 1.

Needs matplotlib (Debian's python3-matplotlib); draws without a display (Agg)."""
import argparse
import json
import math
import sys

KEYS = ("cell", "layers", "hidden", "train_seq", "max_lag", "norm")


def read_flow(path):
    """The parsed JSON of one gradflow file, checked: a dict with KEYS, norm a list of `layers`
    lists of max_lag + 1 numbers. Raises ValueError naming what is wrong."""
    with open(path, encoding="utf-8") as f:
        try:
            g = json.load(f)
        except ValueError as e:
            raise ValueError(f"{path}: not JSON ({e})") from None
    missing = [k for k in KEYS if not isinstance(g, dict) or k not in g]
    if missing:
        raise ValueError(f"{path}: not the JSON of charlm gradflow (no {', '.join(missing)})")
    if len(g["norm"]) != g["layers"] or any(len(r) != g["max_lag"] + 1 for r in g["norm"]):
        raise ValueError(f"{path}: norm is not layers x (max_lag + 1) = "
                         f"{g['layers']} x {g['max_lag'] + 1}")
    return g


def plot(flows, out, title=None, dpi=120, relative=False):
    """Draws flows (read_flow results) side by side into out (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(flows), figsize=(4.2 * len(flows), 3.6), sharey=True,
                             squeeze=False)
    for ax, g in zip(axes[0], flows):
        ks = list(range(g["max_lag"] + 1))
        for layer, row in enumerate(g["norm"]):
            base = row[0] if relative and row[0] > 0 else 1.0
            # a gradient that underflowed float32 is left out, not drawn at a made-up floor
            ys = [v / base if v > 0 else math.nan for v in row]
            ax.semilogy(ks, ys, label=f"layer {layer}")
        ax.axvline(g["train_seq"], color="grey", linestyle="--", linewidth=1,
                   label=f"train.seq = {g['train_seq']}")
        ax.set_title(f"{g['cell'].upper()} {g['layers']}x{g['hidden']}")
        ax.set_xlabel("k (steps back)")
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=8)
    ylabel = r"$\Vert \partial L_t / \partial h_{t-k} \Vert$"
    axes[0][0].set_ylabel(ylabel + (" / (k = 0)" if relative else ""))
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=dpi)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("files", nargs="+", metavar="FILE.json")
    p.add_argument("-o", "--out", default="gradflow.png")
    p.add_argument("--title")
    p.add_argument("--dpi", type=int, default=120)
    p.add_argument("--relative", action="store_true")
    a = p.parse_args(argv)
    try:
        flows = [read_flow(f) for f in a.files]
    except (OSError, ValueError) as e:
        print(f"plot_gradflow: {e}", file=sys.stderr)
        return 1
    plot(flows, a.out, a.title, a.dpi, a.relative)
    print(a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
