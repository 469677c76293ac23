"""`charlm eval --dynamic` (dynamic evaluation, src/README.md §3): a model trained on one text
(synthetic sentences) evaluated on another (a passage of tinyshakespeare, lowercased, twice):

  - adaptation: the dynamic loss of the second copy is far below its static loss and below the
    dynamic loss of the first copy (the weights carry what the first copy taught them);
  - no look-ahead: the first window's dynamic loss equals its static loss exactly (no step is
    taken before a window is scored), and two texts that differ only from position p on give
    exactly the same window losses, static and dynamic, for every window that ends before p
    (and different ones for the window holding p: the comparison can fail);
  - --dynamic-lr 0 gives the static loss exactly; the static loss of a dynamic run is plain
    eval's (other windows: to 1e-5);
  - -np 2 adapts each rank's piece on its own, still below the static loss;
  - bad options: exit 2 and one line naming the option."""
import json
import os

import harness as h

HERE = os.path.dirname(os.path.abspath(__file__))
SHAKESPEARE = os.path.join(HERE, "data", "tinyshakespeare.txt")
SEQ = 32


def main():
    w = h.tmpdir()
    corpus = h.write_text(w, 40000)
    run = os.path.join(w, "run")
    h.run(["train", "--corpus", corpus, "--cell", "gru", "--layers", "1", "--hidden", "64",
           "--embed", "16", "--batch", "8", "--seq", "32", "--steps", "150", "--lr", "0.01",
           "--seed", "2", "--eval-every", "0", "--set", "sample.every=0", "--run-dir", run],
          check=True)
    ckpt = os.path.join(run, "checkpoints", "ckpt-00000150.h5")
    with open(SHAKESPEARE, encoding="utf-8") as f:
        passage = f.read()[5000:7000].lower()
    # characters the synthetic text does not have (capitals, ',', ':', ...) are dropped
    text = os.path.join(w, "twice.txt")
    with open(text, "w", encoding="utf-8") as f:
        f.write(passage + passage)
    bad = []

    def ev(path, *extra, np=None):
        r = h.run(["eval", ckpt, path, "--unknown", "skip"] + list(extra), np=np)
        if r.returncode != 0:
            bad.append(f"eval {path} {extra}: exit {r.returncode}: {r.stderr}")
            return None
        return json.loads(r.stdout) if "--json" in extra else r

    plain = ev(text, "--json")
    d = ev(text, "--json", "--dynamic", "--dynamic-lr", "0.3", "--per-window")
    if plain is None or d is None:
        h.fail("; ".join(bad))
    s, y = d["window_static"], d["window_dynamic"]
    n = len(s) // 2
    st2, dy1, dy2 = sum(s[n:]) / (len(s) - n), sum(y[:n]) / n, sum(y[n:]) / (len(y) - n)
    print(f"static {d['loss']:.4f}, dynamic {d['dynamic']['loss']:.4f} nats/char; second copy: "
          f"static {st2:.4f}, dynamic {dy2:.4f}; dynamic first copy {dy1:.4f}")
    if len(s) != (d["predictions"] + SEQ - 1) // SEQ or d["dynamic"]["seq"] != SEQ:
        bad.append(f"{len(s)} windows for {d['predictions']} predictions")
    if not dy2 < st2 - 1.0:
        bad.append(f"the second copy is not much better dynamically: {dy2} vs static {st2}")
    if not dy2 < dy1 - 0.2:
        bad.append(f"the second copy is not better than the first dynamically: {dy2} vs {dy1}")
    if not d["dynamic"]["loss"] < d["loss"]:
        bad.append(f"dynamic {d['dynamic']['loss']} not below static {d['loss']}")
    if y[0] != s[0]:
        bad.append(f"the first window was not scored before a step: {y[0]!r} != {s[0]!r}")
    if not abs(d["loss"] - plain["loss"]) < 1e-5 * plain["loss"]:
        bad.append(f"the static loss of --dynamic {d['loss']} is not eval's {plain['loss']}")

    # two texts (every character known to the model) equal up to position p, then different
    x = h.synthetic_text(3000, seed=9)
    ends = ("".join(sorted(x[-600:])), "".join(sorted(x[-600:], reverse=True)))
    p = len(x) - 600
    runs = []
    for i, end in enumerate(ends):
        path = os.path.join(w, f"end{i}.txt")
        with open(path, "w", encoding="utf-8") as f:
            f.write(x[:p] + end)
        runs.append(ev(path, "--json", "--dynamic", "--dynamic-lr", "0.3", "--per-window"))
    if None not in runs:
        a, b = runs
        # window k scores the targets k*T+1 .. k*T+T: those before p hold no changed character
        before = [k for k in range(len(a["window_static"])) if (k + 1) * SEQ < p]
        same = all(a[key][k] == b[key][k] for k in before
                   for key in ("window_static", "window_dynamic"))
        print(f"texts equal up to {p}: windows 0..{before[-1]} of {len(a['window_static'])} "
              f"equal: {same}")
        if not same:
            bad.append("changing the text after position p changed a loss scored before p")
        if a["window_dynamic"][len(before)] == b["window_dynamic"][len(before)]:
            bad.append("the window holding position p did not change with the text")

    z = ev(text, "--json", "--dynamic", "--dynamic-lr", "0")
    if z is not None and z["dynamic"]["loss"] != z["loss"]:
        bad.append(f"--dynamic-lr 0: dynamic {z['dynamic']['loss']} != static {z['loss']}")
    two = ev(text, "--json", "--dynamic", "--dynamic-lr", "0.3", np=2)
    # (a character dropped by --unknown skip where the pieces meet loses one prediction)
    if two is not None and not (two["dynamic"]["loss"] < two["loss"] - 0.5 and
                                abs(two["predictions"] - d["predictions"]) <= 1):
        bad.append(f"-np 2: {two}")
    r = ev(text, "--dynamic", "--dynamic-decay", "0.01")
    if r is not None and ("dynamic loss" not in r.stdout or "decay 0.01" not in r.stdout):
        bad.append(f"text output: {r.stdout!r}")

    for args, needle in ((["--dynamic", "--dynamic-lr", "-1"], "--dynamic-lr -1"),
                         (["--dynamic", "--dynamic-lr", "nan"], "--dynamic-lr nan"),
                         (["--dynamic", "--dynamic-decay", "2"], "--dynamic-decay 2"),
                         (["--dynamic", "--dynamic-seq", "0"], "--dynamic-seq 0"),
                         (["--per-window"], "--per-window needs --dynamic")):
        msg = h.refused(["eval", ckpt, text] + args, 2, needle)
        if msg:
            bad.append(msg)

    if bad:
        h.fail("\n".join(bad))
    print("ok")


if __name__ == "__main__":
    main()
