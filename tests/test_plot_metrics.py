"""scripts/plot_metrics.py: two fake run directories (metrics.jsonl with training, validation and
summary records, a step redone after a resume and a truncated last line) plotted on one figure,
one run alone (default output RUN_DIR/metrics.png), against time, and the errors. Needs
Debian's python3-matplotlib (/usr/bin/python3); exit 77 (skipped) without."""
import json
import math
import os
import subprocess
import sys

import harness as h

SCRIPTS = h.SCRIPTS
PLOT = os.path.join(SCRIPTS, "plot_metrics.py")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

try:
    import matplotlib  # noqa: F401
except ImportError as e:
    print(f"skipped: {e} (needs Debian's python3-matplotlib, /usr/bin/python3)")
    sys.exit(h.SKIP)
sys.path.insert(0, SCRIPTS)
import plot_metrics  # noqa: E402


def fake_run(path, steps, speed, val_every, resume_at=None):
    os.makedirs(path)
    lines = []
    for s in range(10, steps + 1, 10):
        loss = 1.2 + 3.0 * math.exp(-s / 150.0) + 0.05 * math.sin(s)
        lines.append({"step": s, "epoch": 0, "train_loss": loss, "lr": 0.002, "grad_norm": 0.4,
                      "chars_per_s": speed * (1 + 0.05 * math.cos(s)), "elapsed_s": s * 0.1})
        if s % val_every == 0:
            lines.append({"step": s, "val_loss": loss + 0.1, "val_bpc": (loss + 0.1) / 0.693})
        if s == resume_at:  # the run stopped later and resumed from here: steps redone
            lines.append({"step": s + 10, "epoch": 0, "train_loss": 99.0, "chars_per_s": speed,
                          "elapsed_s": 1.0})
    lines.append({"step": steps, "summary": True, "chars_per_s": speed, "elapsed_s": steps * 0.1})
    with open(os.path.join(path, "metrics.jsonl"), "w") as f:
        f.write("".join(json.dumps(m) + "\n" for m in lines))
    return path


def plot(*args):
    return subprocess.run([sys.executable, PLOT] + list(args), capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=120)


def check_png(path, what, bad, min_kb=15):
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        bad.append(f"{what}: {path}: {e}")
        return
    if not data.startswith(PNG_SIGNATURE) or len(data) < min_kb * 1024:
        bad.append(f"{what}: {path} is not a PNG of at least {min_kb} KB ({len(data)} bytes, "
                   f"starts {data[:8]!r})")
    else:
        print(f"{what}: {path}: {len(data)} bytes")


def main():
    w = h.tmpdir()
    a = fake_run(os.path.join(w, "lstm-small"), 400, 30000.0, 100, resume_at=200)
    b = fake_run(os.path.join(w, "gru-small"), 300, 45000.0, 50)
    with open(os.path.join(b, "metrics.jsonl"), "a") as f:
        f.write('{"step": 310, "train_lo')  # a run still writing
    bad = []

    train, val, skipped = plot_metrics.read_metrics(os.path.join(a, "metrics.jsonl"))
    if len(train) != 40 or len(val) != 4 or skipped != 0:
        bad.append(f"read_metrics: {len(train)} train, {len(val)} val, {skipped} skipped; "
                   "expected 40, 4, 0")
    if any(r[1] == 99.0 for r in train) or [r[0] for r in train] != sorted(r[0] for r in train):
        bad.append("read_metrics: a redone step did not take the later line, or steps unsorted")
    if plot_metrics.read_metrics(os.path.join(b, "metrics.jsonl"))[2] != 1:
        bad.append("read_metrics: the truncated line was not counted as skipped")
    if plot_metrics.labels([a, b + "/"]) != ["lstm-small", "gru-small"]:
        bad.append(f"labels: {plot_metrics.labels([a, b + '/'])}")

    out = os.path.join(w, "both.png")
    p = plot(a, b, "-o", out)
    if p.returncode != 0:
        bad.append(f"two runs: exit {p.returncode}: {p.stderr}")
    if "skipped 1 line" not in p.stderr:
        bad.append(f"the truncated line was not reported: {p.stderr!r}")
    check_png(out, "two runs", bad)

    p = plot(a)
    if p.returncode != 0 or p.stdout.strip() != os.path.join(a, "metrics.png"):
        bad.append(f"one run: exit {p.returncode}, printed {p.stdout!r}: {p.stderr}")
    check_png(os.path.join(a, "metrics.png"), "one run, default output", bad)

    out = os.path.join(w, "time.png")
    p = plot(os.path.join(a, "metrics.jsonl"), b, "--x", "time", "--title", "test", "-o", out)
    if p.returncode != 0:
        bad.append(f"--x time: exit {p.returncode}: {p.stderr}")
    check_png(out, "--x time", bad)

    # a validation's own wall time: elapsed_s of charlm's line, seconds of a torch_ref curve
    curve = os.path.join(w, "torch-curve.jsonl")
    with open(curve, "w") as f:
        f.write("".join(json.dumps({"seconds": 30.0 * k, "step": 40 * k, "val_loss": 3.0 / k,
                                    "lr": 0.002}) + "\n" for k in (1, 2, 3)))
    with open(os.path.join(b, "metrics.jsonl"), "a") as f:
        f.write('\n{"step": 320, "val_loss": 1.3, "val_bpc": 1.9, "elapsed_s": 77.5}\n')
    tv, cv = plot_metrics.read_metrics(curve), plot_metrics.read_metrics(
        os.path.join(b, "metrics.jsonl"))
    if tv[1] != [(40, 3.0, 30.0), (80, 1.5, 60.0), (120, 1.0, 90.0)] or tv[0] or \
            cv[1][-1] != (320, 1.3, 77.5) or not math.isnan(cv[1][0][2]):
        bad.append(f"read_metrics: validation times {tv[1]}, {cv[1][-1]}, {cv[1][0]}")
    out = os.path.join(w, "curves.png")
    p = plot(b, curve, "--x", "time", "--val-only", "--label", "charlm", "--label", "torch",
             "-o", out)
    if p.returncode != 0:
        bad.append(f"--val-only with a torch_ref curve: exit {p.returncode}: {p.stderr}")
    check_png(out, "--val-only with a torch_ref curve", bad)
    p = plot(b, curve, "--label", "one", "-o", os.path.join(w, "z.png"))
    if p.returncode != 2 or "1 --label for 2 runs" not in p.stderr:
        bad.append(f"one --label for two runs: exit {p.returncode}: {p.stderr!r}")

    p = plot(os.path.join(w, "missing"), "-o", os.path.join(w, "x.png"))
    if p.returncode != 1 or "missing" not in p.stderr or os.path.exists(os.path.join(w, "x.png")):
        bad.append(f"missing run directory: exit {p.returncode}: {p.stderr!r}")
    empty = os.path.join(w, "empty")
    os.makedirs(empty)
    open(os.path.join(empty, "metrics.jsonl"), "w").close()
    p = plot(empty, "-o", os.path.join(w, "y.png"))
    if p.returncode != 1 or "no training or validation records" not in p.stderr:
        bad.append(f"empty metrics: exit {p.returncode}: {p.stderr!r}")
    if bad:
        h.fail("\n".join(bad))


if __name__ == "__main__":
    main()
