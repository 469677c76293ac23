"""Divergence keeps the last good state: a checkpoint that is finite, resumable, and from which a
sane learning rate trains — for rnn, lstm and gru.

- A fresh run with SGD at lr 1e38 and no clipping: its first update leaves parameters of about
  1e36, finite but beyond use (the next window's loss is NaN). charlm exits 4 with one line
  "training diverged at step N: ... the last good state is in PATH"; PATH is ckpt-(N-1), it
  verifies, every float in it is finite, metrics.jsonl holds steps 1..N-1 only, a resume with
  --lr 0.5 trains (loss falling, no divergence) and a sample from it is not one character
  repeated.
- Mid-run: a run of K steps at lr 0.5, resumed with --lr 1e38, diverges at step K+1 and rewrites
  ckpt-K with exactly what the first run's ckpt-K held (tensors, moments, state, history); resumed
  again with --lr 0.5 it reproduces, bit for bit, an uninterrupted run of K+M steps at lr 0.5.
- Divergence many steps into a run (SGD at about 4e19: parameters grow until a product of two
  overflows, at a step between 3 and 200): charlm goes back to a snapshot taken up to 32 steps
  earlier and trains the steps up to the last good one again. The checkpoint it writes holds,
  bit for bit, the parameters, moments, state and history of an uninterrupted run of that many
  steps (the same settings: the constant schedule does not depend on train.steps), for lstm and
  gru.
- An update that itself goes non-finite (lr 1e39 is infinite in float32; Adam, whose moments are
  checked too): "its update made parameters or optimizer moments non-finite", the checkpoint of
  the step before."""
import os
import re
import shutil

import harness as h

try:
    import h5py
    import numpy as np
except ImportError:
    print("python3-h5py (and numpy) not available: skipped")
    raise SystemExit(h.SKIP)

K, M = 6, 6
problems = h.problems
problem = h.problem


def args(corpus, run_dir, cell, steps, extra=()):
    return ["train", "--corpus", corpus, "--cell", cell, "--layers", "1", "--hidden", "32",
            "--embed", "16", "--batch", "2", "--seq", "16", "--steps", str(steps), "--epochs",
            "0", "--optim", "sgd", "--set", "optim.momentum=0", "--set", "optim.clip=0",
            "--log-every", "1", "--eval-every", str(steps), "--set", "checkpoint.every=0",
            "--run-dir", run_dir] + list(extra)


def ck(run_dir, step):
    return os.path.join(run_dir, "checkpoints", f"ckpt-{step:08d}.h5")


def diverges(what, p, run_dir, kind):
    """p exited 4 with the one divergence line of `kind` naming ckpt-(N-1); returns N or None."""
    errors = [l for l in p.stderr.splitlines() if l.startswith("charlm: error:")]
    phrase = {"after": "after its update the loss of step",
              "update": "its update made parameters or optimizer moments non-finite"}[kind]
    m = re.search(r"training diverged at step (\d+): .* the last good state is in (\S+)$",
                  errors[0] if errors else "")
    if p.returncode != 4 or len(errors) != 1 or not m:
        problem(f"[{what}] exit {p.returncode}, expected 4 and one line 'training diverged at "
                f"step N: {phrase} ... the last good state is in PATH':\n{p.stderr}")
        return None
    if phrase not in errors[0]:
        problem(f"[{what}] the error line does not say '{phrase}': {errors[0]}")
    step, path = int(m.group(1)), m.group(2)
    if os.path.realpath(path) != os.path.realpath(ck(run_dir, step - 1)):
        problem(f"[{what}] diverged at step {step}, the last good state should be "
                f"{ck(run_dir, step - 1)}, the message names {path}")
        return None
    return step


def finite_and_verified(what, path, step):
    v = h.run(["inspect", "--verify", path])
    if v.returncode != 0 or not re.search(rf"^step\s+{step}$", v.stdout, re.M):
        problem(f"[{what}] inspect --verify {path}: exit {v.returncode}\n{v.stdout}{v.stderr}")
    bad = []
    with h5py.File(path, "r") as f:
        f.visititems(lambda n, o: bad.append(n) if isinstance(o, h5py.Dataset) and
                     o.dtype.kind == "f" and not np.isfinite(o[()]).all() else None)
        biggest = max(float(np.abs(d[()]).max()) for d in f["model"].values())
    if bad:
        problem(f"[{what}] non-finite values in {path}: {bad}")
    return biggest


def fresh(corpus, work, cell):
    what = f"{cell}, fresh run at lr 1e38"
    run_dir = os.path.join(work, f"fresh-{cell}")
    p = h.run(args(corpus, run_dir, cell, 50, ["--lr", "1e38"]), np=2)
    step = diverges(what, p, run_dir, "after")
    if step is None:
        return
    good = ck(run_dir, step - 1)
    biggest = finite_and_verified(what, good, step - 1)
    train, _ = h.metrics(run_dir)
    if [t["step"] for t in train] != list(range(1, step)):
        problem(f"[{what}] metrics.jsonl holds steps {[t['step'] for t in train]}, expected "
                f"1..{step - 1}")
    n0 = len(problems)
    p = h.run(args(corpus, run_dir, cell, step - 1 + 30, ["--lr", "0.5", "--resume", "auto"]),
              np=2)
    train, _ = h.metrics(run_dir)
    losses = [t["train_loss"] for t in train if t["step"] >= step]
    if p.returncode != 0 or len(losses) != 30 or not all(np.isfinite(losses)) or \
            not np.mean(losses[-5:]) < losses[0] - 0.3:
        problem(f"[{what}] resumed from {good} with --lr 0.5: exit {p.returncode}, losses "
                f"{losses[:3]}...{losses[-3:]} (expected 30, finite, falling):\n{p.stderr}")
    s = h.run(["sample", good, "--length", "60", "--seed", "3"])
    text = s.stdout.strip()
    if s.returncode != 0 or len(set(text)) < 5:
        problem(f"[{what}] a sample from {good} is {text!r} (exit {s.returncode})")
    if len(problems) == n0:
        print(f"ok   [{what}] exit 4 at step {step}; {os.path.basename(good)} verifies, finite "
              f"(largest |weight| {biggest:.3g}); resumed at lr 0.5 the loss falls "
              f"{losses[0]:.3f} -> {losses[-1]:.3f}; sample {text[:30]!r}")


def datasets(path):
    with h5py.File(path, "r") as f:
        out = {}
        f.visititems(lambda n, o: out.__setitem__(n, o[()].tobytes())
                     if isinstance(o, h5py.Dataset) else None)
        return out


def mid_run(corpus, work, cell):
    what = f"{cell}, lr 1e38 from step {K}"
    full, run_dir = os.path.join(work, f"full-{cell}"), os.path.join(work, f"mid-{cell}")
    h.run(args(corpus, full, cell, K + M, ["--lr", "0.5"]), np=2, check=True)
    h.run(args(corpus, run_dir, cell, K, ["--lr", "0.5"]), np=2, check=True)
    before = datasets(ck(run_dir, K))
    p = h.run(args(corpus, run_dir, cell, K + M, ["--lr", "1e38", "--resume", "auto"]), np=2)
    step = diverges(what, p, run_dir, "after")
    if step is None:
        return
    n0 = len(problems)
    if step != K + 1:
        problem(f"[{what}] diverged at step {step}, expected {K + 1}")
    after = datasets(ck(run_dir, K))
    differ = sorted(n for n in set(before) | set(after) if before.get(n) != after.get(n))
    if differ:
        problem(f"[{what}] the rewritten {ck(run_dir, K)} differs from the one the run wrote at "
                f"step {K} in {differ}")
    p = h.run(args(corpus, run_dir, cell, K + M, ["--lr", "0.5", "--resume", "auto"]), np=2)
    (t0, v0), (t1, v1) = h.metrics(full), h.metrics(run_dir)
    key = [(t["step"], t["train_loss"], t["grad_norm"]) for t in t0]
    if p.returncode != 0 or key != [(t["step"], t["train_loss"], t["grad_norm"]) for t in t1] \
            or (v0[-1]["step"], v0[-1]["val_loss"]) != (v1[-1]["step"], v1[-1]["val_loss"]):
        problem(f"[{what}] resumed again at lr 0.5 (exit {p.returncode}), the run differs from an "
                f"uninterrupted one:\n{t0}\n{t1}\n{p.stderr}")
    if len(problems) == n0:
        print(f"ok   [{what}] exit 4 at step {step}; ckpt-{K} rewritten with the same contents; "
              f"resumed at lr 0.5 it is the uninterrupted run, bit for bit")


def replayed(corpus, work, cell):
    """A run that diverges after some steps; its checkpoint against an uninterrupted run."""
    for lr in ("4e19", "6e19", "1e20", "3e20"):
        what = f"{cell}, lr {lr}"
        run_dir = os.path.join(work, f"late-{cell}-{lr}")
        p = h.run(args(corpus, run_dir, cell, 200, ["--lr", lr]), np=2)
        if p.returncode == 4:
            break
    step = diverges(what, p, run_dir, "after")
    if step is None:
        return
    if step < 3:
        print(f"note [{what}] diverged at step {step}: too early to train steps again")
        return
    n0 = len(problems)
    good = step - 1
    ref = os.path.join(work, f"late-{cell}-ref")
    h.run(args(corpus, ref, cell, good, ["--lr", lr]), np=2, check=True)
    got, want = datasets(ck(run_dir, good)), datasets(ck(ref, good))
    differ = sorted(n for n in set(got) | set(want) if got.get(n) != want.get(n) and
                    n != "metrics/val")  # the uninterrupted run validates at its end
    if differ:
        problem(f"[{what}] {ck(run_dir, good)} differs from an uninterrupted run of {good} steps "
                f"in {differ}")
    finite_and_verified(what, ck(run_dir, good), good)
    if len(problems) == n0:
        print(f"ok   [{what}] exit 4 at step {step}; ckpt-{good}, trained again from the snapshot "
              f"at step {good // 32 * 32 if good >= 32 else 0}, is an uninterrupted run's, bit for "
              "bit")


def update_goes_inf(corpus, work):
    what = "lstm, adam at lr 1e39 (infinite in float32)"
    run_dir = os.path.join(work, "inf-update")
    a = args(corpus, run_dir, "lstm", 20, ["--optim", "adam", "--lr", "1e39"])
    p = h.run(a, np=2)
    step = diverges(what, p, run_dir, "update")
    if step is None:
        return
    good = ck(run_dir, step - 1)
    n0 = len(problems)
    finite_and_verified(what, good, step - 1)
    with h5py.File(good, "r") as f:
        if sorted(f["optimizer"]) != ["exp_avg", "exp_avg_sq"]:
            problem(f"[{what}] {good} holds the buffers {sorted(f['optimizer'])}")
    if len(problems) == n0:
        print(f"ok   [{what}] exit 4 at step {step}; {os.path.basename(good)} verifies and is "
              "finite, moments included")


def main():
    work = h.tmpdir()
    corpus = os.path.join(work, "corpus.txt")
    with open(corpus, "w", encoding="utf-8") as f:
        f.write(h.synthetic_text(50000))
    for cell in ("rnn", "lstm", "gru"):
        fresh(corpus, work, cell)
        mid_run(corpus, work, cell)
    for cell in ("lstm", "gru"):
        replayed(corpus, work, cell)
    update_goes_inf(corpus, work)
    if problems:
        h.fail(f"{len(problems)} problem(s)")
    print("all divergence checks passed")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
