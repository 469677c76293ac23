#!/usr/bin/python3
"""Plots charlm training runs: training and validation loss against the step (top panel) and
the training speed in characters per second (bottom panel), from each run's metrics.jsonl.
Several runs go on one figure, one colour each, labelled by the run directory's name.

Usage:
    /usr/bin/python3 scripts/plot_metrics.py RUN_DIR [RUN_DIR...] [-o OUT.png]
                                             [--x step|time] [--val-only] [--label NAME ...]
                                             [--title TEXT] [--dpi N]

RUN_DIR is a run directory (run.dir of `charlm train`) or a metrics.jsonl file, or the --curve
file of scripts/torch_ref.py's quality mode (validations only: {"seconds", "step", "val_loss"}).
The figure goes to OUT.png; by default to RUN_DIR/metrics.png for one run, ./metrics.png for
several. --x time plots against the run's wall time (minutes) instead of the step: a validation
at its own elapsed_s (seconds for a torch_ref curve), else at its step's training line.
--val-only draws the validation curves alone; --label names the runs in the legend (one per
RUN_DIR, in order; default the directory names).

metrics.jsonl: one JSON object per line; training lines carry step, train_loss and chars_per_s
(and elapsed_s), validation lines step and val_loss (and elapsed_s); the end-of-run summary ("summary": true)
is left out. When a run was resumed from an older checkpoint its redone steps appear twice: the
later line wins. A line that does not parse (a run still writing) is skipped.

Needs matplotlib (Debian's python3-matplotlib); draws without a display (Agg)."""
import argparse
import json
import math
import os
import sys


def read_metrics(path):
    """(train, val, skipped) of a metrics.jsonl: train a list of (step, train_loss, chars_per_s,
    elapsed_s), val a list of (step, val_loss, elapsed_s or nan), both sorted by step, the later
    line winning for a repeated step; skipped = lines that did not parse."""
    train, val, skipped = {}, {}, 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                m = json.loads(line)
            except ValueError:
                skipped += 1
                continue
            if not isinstance(m, dict) or m.get("summary") or "step" not in m:
                continue
            step = m["step"]
            if "val_loss" in m:
                val[step] = (step, m["val_loss"],
                              m.get("elapsed_s", m.get("seconds", math.nan)))
            elif "train_loss" in m:
                train[step] = (step, m["train_loss"], m.get("chars_per_s", math.nan),
                               m.get("elapsed_s", math.nan))
    return [train[s] for s in sorted(train)], [val[s] for s in sorted(val)], skipped


def metrics_path(arg):
    return arg if os.path.isfile(arg) else os.path.join(arg, "metrics.jsonl")


def labels(args):
    """Run names for the legend: the directory names, or the paths where names repeat."""
    dirs = [os.path.normpath(os.path.dirname(a) if os.path.isfile(a) else a) for a in args]
    names = [os.path.basename(os.path.abspath(d)) for d in dirs]
    return [d if names.count(n) > 1 else n for d, n in zip(dirs, names)]


def interp(x, xs, ys):
    """Linear interpolation of (xs, ys) at x (xs increasing), clamped at the ends."""
    if not xs:
        return math.nan
    if x <= xs[0]:
        return ys[0]
    for i in range(1, len(xs)):
        if x <= xs[i]:
            f = (x - xs[i - 1]) / (xs[i] - xs[i - 1])
            return ys[i - 1] + f * (ys[i] - ys[i - 1])
    return ys[-1]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directory or metrics.jsonl")
    ap.add_argument("-o", "--output", help="PNG to write (default RUN_DIR/metrics.png, or "
                    "./metrics.png for several runs)")
    ap.add_argument("--x", choices=("step", "time"), default="step",
                    help="x axis: training step (default) or elapsed minutes")
    ap.add_argument("--val-only", action="store_true", help="only the validation curves")
    ap.add_argument("--label", action="append", help="a run's name in the legend (repeat)")
    ap.add_argument("--title", help="figure title")
    ap.add_argument("--dpi", type=int, default=120)
    a = ap.parse_args(argv)
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        sys.stderr.write(f"plot_metrics.py: {e} (install python3-matplotlib and run with "
                         "/usr/bin/python3)\n")
        return 1

    if a.label and len(a.label) != len(a.runs):
        sys.stderr.write(f"plot_metrics.py: {len(a.label)} --label for {len(a.runs)} runs\n")
        return 2
    runs = []
    for arg, name in zip(a.runs, a.label or labels(a.runs)):
        path = metrics_path(arg)
        try:
            train, val, skipped = read_metrics(path)
        except OSError as e:
            sys.stderr.write(f"plot_metrics.py: {path}: {e.strerror}\n")
            return 1
        if skipped:
            sys.stderr.write(f"plot_metrics.py: {path}: skipped {skipped} line(s) that do not "
                             "parse\n")
        if not train and not val:
            sys.stderr.write(f"plot_metrics.py: {path}: no training or validation records\n")
            return 1
        runs.append((name, train, val))

    if a.val_only:
        fig, ax_loss = plt.subplots(figsize=(9, 5))
        ax_speed = ax_loss  # the x label goes on the one panel
    else:
        fig, (ax_loss, ax_speed) = plt.subplots(2, 1, sharex=True, figsize=(9, 7),
                                                gridspec_kw={"height_ratios": [2.2, 1]})
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (name, train, val) in enumerate(runs):
        color = colors[i % len(colors)]
        t_step = [r[0] for r in train]
        t_min = [r[3] / 60.0 for r in train]
        if a.x == "time":
            tx = t_min
            vx = [e / 60.0 if math.isfinite(e) else interp(s, t_step, t_min) for s, _, e in val]
        else:
            tx, vx = t_step, [s for s, _, _ in val]
        if train and not a.val_only:
            ax_loss.plot(tx, [r[1] for r in train], color=color, lw=1.0, alpha=0.8,
                         label=f"{name} train")
            ax_speed.plot(tx, [r[2] for r in train], color=color, lw=1.0, label=name)
        if val:
            ax_loss.plot(vx, [v for _, v, _ in val], color=color, lw=2.0, ls="--", marker="o",
                         ms=4, label=f"{name} validation")
    ax_loss.set_ylabel("loss (nats/char)")
    ax_loss.grid(True, alpha=0.3)
    ax_loss.legend(fontsize="small")
    ax_speed.set_xlabel("wall time of the run (min)" if a.x == "time" else "step")
    if not a.val_only:
        ax_speed.set_ylabel("chars/s")
        ax_speed.grid(True, alpha=0.3)
        ax_speed.set_ylim(bottom=0)
        if len(runs) > 1:
            ax_speed.legend(fontsize="small")
    fig.suptitle(a.title or "charlm: " + ", ".join(name for name, _, _ in runs))
    fig.tight_layout()

    out = a.output or (os.path.join(os.path.dirname(metrics_path(a.runs[0])), "metrics.png")
                       if len(runs) == 1 else "metrics.png")
    try:
        fig.savefig(out, dpi=a.dpi)
    except OSError as e:
        sys.stderr.write(f"plot_metrics.py: {out}: {e.strerror}\n")
        return 1
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
