"""scripts/ttq_compare.sh on a tiny model and a budget of 2 s: charlm under its configuration's
train.time_limit, then scripts/torch_ref.py's quality mode for the same time, the table of both
final validation losses (each the last validation its run wrote) and the curves' PNG; the
PyTorch recipe taken from the configuration when none is given. Bad command lines and a
configuration without a time limit exit 2 with one line. Needs python3-torch (skipped without)."""
import json
import os
import re
import subprocess

import harness as h

COMPARE = os.path.join(h.SCRIPTS, "ttq_compare.sh")
TINY = """[data]
corpus = {corpus}
val_frac = 0.1
[model]
cell = lstm
layers = 1
hidden = 16
embed = 8
[train]
batch = 2
seq = 16
epochs = 0
time_limit = {limit}
[optim]
lr = 0.01
clip = 5
[eval]
every = 20
[run]
dir = {run}
"""


def compare(args):
    env = dict(os.environ, CHARLM_BIN=os.path.abspath(h.CHARLM), MPIEXEC=h.command([], np=1)[0])
    return subprocess.run(["bash", COMPARE] + args, capture_output=True, text=True, timeout=300,
                          env=env)


def last_val(path):
    vals = [json.loads(x) for x in open(path) if "val_loss" in x]
    return vals[-1] if vals else None


def main():
    h.torch_reference()  # skips without PyTorch
    w = h.tmpdir()
    corpus = h.write_text(w, 30000)
    config = os.path.join(w, "tiny.ini")
    with open(config, "w") as f:
        f.write(TINY.format(corpus=corpus, limit=2, run=os.path.join(w, "unused")))

    for name, extra in (("given", ["--", "--cell", "lstm", "--layers", "1", "--hidden", "16",
                                   "--embed", "8", "--streams", "4", "--seq", "16"]),
                        ("from the configuration", [])):
        out = os.path.join(w, "out-" + name.split()[0])
        p = compare(["--config", config, "--np", "2", "--out", out] + extra)
        if p.returncode != 0:
            h.fail(f"[{name}] exit {p.returncode}:\n{p.stdout}{p.stderr}")
        c = last_val(os.path.join(out, "charlm", "metrics.jsonl"))
        t = last_val(os.path.join(out, "torch-curve.jsonl"))
        rows = {m[0]: m[1:] for m in re.findall(r"^(charlm|pytorch)\s+([\d.]+)\s+(\d+)\s+([\d.]+)$",
                                                 p.stdout, re.M)}
        if set(rows) != {"charlm", "pytorch"} or c is None or t is None or \
                rows["charlm"][:2] != (f"{c['val_loss']:.4f}", str(c["step"])) or \
                rows["pytorch"][:2] != (f"{t['val_loss']:.4f}", str(t["step"])):
            h.problem(f"[{name}] table {rows} vs the runs' last validations {c}, {t}:\n{p.stdout}")
        if "elapsed_s" not in (c or {}):
            h.problem(f"[{name}] charlm's validation line has no elapsed_s: {c}")
        with open(os.path.join(out, "summary.txt")) as f:
            if f.read() != p.stdout:
                h.problem(f"[{name}] summary.txt is not the table printed")
        png = os.path.join(out, "curves.png")
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            print(f"[{name}] no plot checked: no matplotlib")
        else:
            if not os.path.exists(png) or open(png, "rb").read(8) != b"\x89PNG\r\n\x1a\n":
                h.problem(f"[{name}] no PNG at {png}: {p.stderr}")
        if name != "given" and "--hidden 16 --embed 8 --streams 4 --seq 16" not in p.stdout:
            h.problem(f"[{name}] the PyTorch recipe is not the configuration's model:\n{p.stdout}")
        print(f"ok   [{name}] charlm {rows.get('charlm')}, pytorch {rows.get('pytorch')}")

    no_limit = os.path.join(w, "nolimit.ini")
    with open(no_limit, "w") as f:
        f.write(TINY.format(corpus=corpus, limit=0, run="x"))
    for args, needle in ((["--np", "2"], "--config is required"),
                         (["--config", os.path.join(w, "none.ini")], "none.ini: cannot read"),
                         (["--config", config, "--np", "0"], "--np 0"),
                         (["--config", config, "--out", w], f"--out {w} exists"),
                         (["--config", no_limit], "train.time_limit is not set"),
                         (["--config", config, "--corpus", os.path.join(w, "no.txt")], "no.txt")):
        p = compare(args)
        if p.returncode != 2 or needle not in p.stderr or p.stderr.count("\n") != 2:
            h.problem(f"{args}: exit {p.returncode} (expected 2 and {needle!r}): {p.stderr!r}")
    if h.problems:
        h.fail(f"{len(h.problems)} problem(s)")
    print("ok   bad command lines exit 2")


if __name__ == "__main__":
    main()
