"""Weight averaging, the plateau schedule, early stopping, the time-based schedule and the
per-layer gradient norms (README "Schedules and weight averaging").

- optim.ema: with optim.ema_start = 2 the /ema of every checkpoint equals /model up to step 2, and
  from then on ema_k = d * ema_(k-1) + (1 - d) * params_k (float32, a checkpoint at every step,
  read with python3-h5py); `charlm eval` and `charlm sample` use it, `--weights raw` the
  parameters (different numbers; the same where the average equals the parameters); with
  optim.ema = 0 there is no /ema.
- optim.plateau_*: a threshold no validation can meet makes every validation after the first a
  bad one: with patience 1 the lr of every logged step is lr * factor^(bad validations before it),
  with patience 2 it falls at every second one.
- optim_plateau (through tests/plateau_steps.c) against torch's ReduceLROnPlateau (mode min,
  relative threshold, no cooldown; charlm's patience N is torch's N - 1) on sequences of losses
  with ties, small and large improvements: the same lr factor after every validation (python3-
  torch; skipped without it); early_stop N stops exactly at the N-th stale validation.
- train.early_stop = 2 with that threshold ends the run at the third validation: exit 0, "early
  stop" on stderr and as the summary's "stop", the last checkpoint at that step, best.h5 the
  checkpoint of the lowest validation among them.
- Resume, bit for bit with all of these on: 12 steps == 6, stop, --resume auto to 12 (train loss,
  gradient norm and its parts, lr, validation losses, the stop reason and the final /ema). The run
  stops early exactly at step 12 only if the count of stale validations was carried over.
- optim.schedule_over = time: every logged lr is the cosine of the logged progress; the run ends
  by "time limit" with progress >= 1; the checkpoint records the run's seconds (elapsed_s). A run
  stopped by train.steps and resumed continues from the checkpoint's seconds: the first progress
  after the resume is at least elapsed_s / time_limit, and the lr follows it; a run whose
  budget is used up resumes to "nothing to do", training nothing. (A wall-clock
  schedule cannot be compared bit for bit across a resume: the clock differs.) Refused with
  exit 1 and one line: schedule_over = time without train.time_limit, the plateau or early stop
  without eval.every, optim.ema = 1.
- grad_norm_layers: the embedding, each layer and the decoder; their root sum of squares is
  grad_norm; "clipped" is grad_norm > optim.clip on every line.
- Divergence with the average and the plateau schedule on (SGD at about 4e19, no clip, as
  test_diverge; validations every 2 steps, each after the first lowering the lr by 0.9): the run
  goes back to its snapshot and trains the steps again at the learning rates they had; /model
  and /ema of the checkpoint it writes are, bit for bit, those of an uninterrupted run of as many
  steps.
- A checkpoint of format 3 (tests/data/ckpt-format3.h5, written by charlm before format 4)
  inspects and resumes to the losses of an uninterrupted run (within 1e-4: it was written on
  another machine, perhaps)."""
import json
import math
import os
import re
import subprocess

import harness as h

try:
    import h5py
    import numpy as np
except ImportError:
    h5py = None

problem = h.problem
HERE = os.path.dirname(os.path.abspath(__file__))
TINY = os.path.join(HERE, "data", "tinyshakespeare.txt")


def base(corpus, run_dir, steps, extra=()):
    return (["train", "--corpus", corpus, "--layers", "2", "--hidden", "24", "--embed", "8",
             "--dropout", "0.1", "--batch", "2", "--seq", "16", "--steps", str(steps),
             "--epochs", "0", "--log-every", "1", "--run-dir", run_dir] + list(extra))


def lines(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(l) for l in f]


def ckpt(run_dir, step):
    return os.path.join(run_dir, "checkpoints", f"ckpt-{step:08d}.h5")


def eval_loss(path, text, weights=None):
    args = ["eval", path, text, "--json"] + (["--weights", weights] if weights else [])
    p = h.run(args)
    if p.returncode != 0:
        problem(f"eval {path}: exit {p.returncode}: {p.stderr}")
        return None
    return json.loads(p.stdout)["loss"]


def sample(path, weights=None):
    p = h.run(["sample", path, "--length", "80", "--seed", "3"] +
              (["--weights", weights] if weights else []))
    return p.stdout if p.returncode == 0 else None


def test_ema(corpus, work):
    run = os.path.join(work, "ema")
    d, start, steps = 0.75, 2, 6
    h.run(base(corpus, run, steps, ["--set", f"optim.ema={d}", "--set", f"optim.ema_start={start}",
                                    "--set", "checkpoint.every=1", "--set", "checkpoint.keep=10"]),
          check=True)
    if h5py is None:
        print("skip the /ema checks: python3-h5py not available")
    else:
        prev, bad = None, []
        for k in range(1, steps + 1):
            with h5py.File(ckpt(run, k), "r") as f:
                if "ema" not in f:
                    bad.append(f"step {k}: no /ema")
                    continue
                for name in f["model"]:
                    p, e = f["model"][name][()], f["ema"][name][()]
                    if k <= start:
                        want = p
                        ok = np.array_equal(e, want)
                    else:
                        want = np.float32(d) * prev[name] + np.float32(1 - d) * p
                        ok = np.allclose(e, want, rtol=1e-6, atol=1e-7)
                    if not ok:
                        bad.append(f"step {k} {name}: max |ema - want| "
                                   f"{np.max(np.abs(e - want)):.3g}")
                prev = {name: f["ema"][name][()] for name in f["ema"]}
                if k == steps and np.array_equal(prev[name], f["model"][name][()]):
                    bad.append(f"step {k}: /ema equals /model: the average proves nothing")
        if bad:
            problem("optim.ema: " + "; ".join(bad[:6]))
        else:
            print(f"ok   /ema of steps 1..{steps}: the parameters up to step {start}, then the "
                  f"average with decay {d}")
    # eval and sample take the average unless --weights raw
    text = os.path.join(work, "text.txt")
    with open(text, "w", encoding="utf-8") as f:
        f.write(h.synthetic_text(3000, seed=5))
    same = eval_loss(ckpt(run, start), text), eval_loss(ckpt(run, start), text, "raw")
    last = (eval_loss(ckpt(run, steps), text), eval_loss(ckpt(run, steps), text, "ema"),
            eval_loss(ckpt(run, steps), text, "raw"))
    if None in same + last:
        return
    if same[0] != same[1] or last[0] != last[1] or last[0] == last[2]:
        problem(f"eval: at step {start} (average = parameters) {same}, at step {steps} default, "
                f"ema, raw: {last}; expected equal, then default = ema != raw")
    s_ema, s_raw = sample(ckpt(run, steps)), sample(ckpt(run, steps), "raw")
    if s_ema is None or s_raw is None or s_ema == s_raw:
        problem("sample: --weights raw gave the same text as the average (or failed)")
    p = h.run(["eval", ckpt(run, steps), text, "--weights", "mean"])
    if p.returncode != 2 or "--weights mean" not in p.stderr:
        problem(f"eval --weights mean: exit {p.returncode}, {p.stderr.strip()}")
    # off: no /ema, and eval's default is the parameters
    off = os.path.join(work, "ema-off")
    h.run(base(corpus, off, 3), check=True)
    if h5py is not None:
        with h5py.File(ckpt(off, 3), "r") as f:
            if "ema" in f:
                problem("optim.ema = 0 wrote /ema")
    if eval_loss(ckpt(off, 3), text) != eval_loss(ckpt(off, 3), text, "raw"):
        problem("without /ema eval's default differs from --weights raw")
    print(f"ok   eval and sample use the average, --weights raw the parameters: {last}")


def expect_lr(train, val, lr0, factor, patience, what):
    """Every train line's lr is lr0 * factor^(reductions by the validations before it), each
    validation after the first being a bad one."""
    vsteps = sorted(m["step"] for m in val)
    bad = 0
    for m in train:
        nbad = max(0, sum(1 for s in vsteps if s < m["step"]) - 1)
        want = lr0 * factor ** (nbad // patience)
        if not math.isclose(m["lr"], want, rel_tol=1e-7):
            bad += 1
            if bad <= 3:
                print(f"  {what} step {m['step']}: lr {m['lr']}, expected {want}")
    if bad:
        problem(f"{what}: {bad} learning rates off the plateau schedule")
    elif train[-1]["lr"] >= lr0 * factor:
        problem(f"{what}: the lr never fell ({train[-1]['lr']})")
    else:
        print(f"ok   {what}: lr {lr0} -> {train[-1]['lr']} at validations {vsteps}")


def test_plateau(corpus, work):
    for patience in (1, 2):
        run = os.path.join(work, f"plateau{patience}")
        h.run(base(corpus, run, 12, ["--eval-every", "2", "--lr", "0.004",
                                     "--set", f"optim.plateau_patience={patience}",
                                     "--set", "optim.plateau_factor=0.5",
                                     "--set", "optim.plateau_threshold=0.9"]), check=True)
        train, val = h.metrics(run)
        expect_lr(train, val, 0.004, 0.5, patience, f"plateau patience {patience}")
    # off: the lr stays
    run = os.path.join(work, "plateau-off")
    h.run(base(corpus, run, 6, ["--eval-every", "2", "--set", "optim.plateau_threshold=0.9"]),
          check=True)
    if any(m["lr"] != 0.002 for m in h.metrics(run)[0]):
        problem("optim.plateau_patience = 0 changed the lr")


def test_plateau_torch():
    steps = os.environ.get("CHARLM_PLATEAU_STEPS", "build/tests/plateau_steps")
    losses = [3.0, 2.9, 2.9, 2.95, 2.89, 2.7, 2.71, 2.7, 2.6999, 2.72, 2.5, 2.6, 2.6, 2.6, 2.4,
              2.41, 2.42, 2.43, 2.44, 2.45]
    cases = [(1, 0.25, 0.0), (2, 0.5, 0.0), (3, 0.1, 0.0), (1, 0.25, 0.01), (2, 0.5, 1e-4)]
    try:
        import torch
    except ImportError:
        torch = None
        print("skip ReduceLROnPlateau: python3-torch not available")
    for patience, factor, threshold in cases:
        p = subprocess.run([steps, str(patience), str(factor), str(threshold), "4"] +
                           [repr(x) for x in losses], capture_output=True, text=True)
        if p.returncode != 0:
            problem(f"plateau_steps: exit {p.returncode}: {p.stderr}")
            return
        got = [(float(a), int(b)) for a, b in (l.split() for l in p.stdout.splitlines())]
        # the early stop: at the 4th validation in a row without improvement, counted from the
        # last improvement (a reduction does not reset it)
        best, stale, want_stop = math.inf, 0, []
        for x in losses:
            if x < best * (1 - threshold):
                best, stale = x, 0
            else:
                stale += 1
            want_stop.append(int(stale >= 4))
        if [s for _, s in got] != want_stop:
            problem(f"early stop (patience {patience}, threshold {threshold}): "
                    f"{[s for _, s in got]} vs {want_stop}")
        if torch is None:
            continue
        opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt, mode="min", factor=factor, patience=patience - 1, threshold=threshold,
            threshold_mode="rel", cooldown=0, min_lr=0.0, eps=0.0)
        want = []
        for x in losses:
            sched.step(x)
            want.append(opt.param_groups[0]["lr"])
        scales = [s for s, _ in got]
        if any(not math.isclose(a, b, rel_tol=1e-12) for a, b in zip(scales, want)):
            problem(f"ReduceLROnPlateau (patience {patience} - 1, factor {factor}, threshold "
                    f"{threshold}): charlm {scales}\n  torch {want}")
        elif len(set(scales)) < 2:
            problem(f"ReduceLROnPlateau case {patience, factor, threshold}: never reduced")
        else:
            print(f"ok   optim_plateau = ReduceLROnPlateau(patience={patience - 1}, factor="
                  f"{factor}, threshold={threshold}): {len(losses)} validations, scale -> "
                  f"{scales[-1]:.3g}")


def test_early_stop(corpus, work):
    run = os.path.join(work, "early")
    p = h.run(base(corpus, run, 40, ["--eval-every", "3", "--set", "train.early_stop=2",
                                     "--set", "optim.plateau_threshold=0.9",
                                     "--set", "checkpoint.every=3"]))
    train, val = h.metrics(run)
    s = h.summary(run) or {}
    got = ckpt(run, 9)
    best = os.path.join(run, "checkpoints", "best.h5")
    losses = {m["step"]: m["val_loss"] for m in val}
    want_best = min(losses, key=losses.get) if losses else None
    if p.returncode != 0 or "charlm: early stop at step 9" not in p.stderr:
        problem(f"early stop: exit {p.returncode}, stderr:\n{p.stderr}")
    elif sorted(losses) != [3, 6, 9] or train[-1]["step"] != 9 or s.get("stop") != "early stop":
        problem(f"early stop: validations {sorted(losses)}, last step {train[-1]['step']}, "
                f"summary stop {s.get('stop')!r}; expected 3, 6, 9, 9, 'early stop'")
    elif not os.path.exists(got) or not os.path.samefile(best, ckpt(run, want_best)):
        problem(f"early stop: no {got}, or best.h5 is not the checkpoint of step {want_best}")
    else:
        print(f"ok   train.early_stop = 2: stopped at step 9 (exit 0, summary 'early stop'), "
              f"best.h5 = step {want_best}")


def test_resume(corpus, work):
    n0 = len(h.problems)
    extra = ["--eval-every", "2", "--set", "optim.ema=0.8", "--set", "optim.plateau_patience=1",
             "--set", "optim.plateau_factor=0.5", "--set", "optim.plateau_threshold=0.02",
             "--set", "train.early_stop=5", "--set", "checkpoint.every=3",
             "--set", "optim.clip=0.45"]
    ref, res = os.path.join(work, "resume-ref"), os.path.join(work, "resume")
    h.run(base(corpus, ref, 30, extra), check=True)
    s = h.summary(ref) or {}
    n = max(m["step"] for m in h.metrics(ref)[0])
    if s.get("stop") != "early stop" or n < 8:
        problem(f"resume: the reference ended at step {n} by {s.get('stop')!r}; expected an "
                "early stop after step 8 (the test needs state carried over)")
        return
    k = 6
    h.run(base(corpus, res, k, extra), check=True)
    p = h.run(base(corpus, res, 30, extra + ["--resume", "auto"]))
    if p.returncode != 0 or "resuming from" not in p.stderr:
        problem(f"resume: exit {p.returncode}\n{p.stderr}")
        return
    a = [l for l in lines(ref) if "summary" not in l]
    b = [l for l in lines(res) if "summary" not in l]
    keys = ("train_loss", "grad_norm", "grad_norm_layers", "clipped", "lr", "val_loss")
    diff = [(x["step"], key) for x, y in zip(a, b) for key in keys if x.get(key) != y.get(key)]
    sb = h.summary(res) or {}
    if len(a) != len(b) or diff or sb.get("stop") != "early stop":
        problem(f"resume: {len(a)} and {len(b)} lines, differences at {diff[:6]}, stop "
                f"{sb.get('stop')!r}")
    elif h5py is not None:
        with h5py.File(ckpt(ref, n), "r") as f, h5py.File(ckpt(res, n), "r") as g:
            same = all(np.array_equal(f["ema"][t][()], g["ema"][t][()]) for t in f["ema"])
            attrs = [x for x in ("lr_scale", "plateau_best", "plateau_bad", "plateau_stale")
                     if f.attrs[x] != g.attrs[x]]
        if not same or attrs:
            problem(f"resume: the final /ema equal: {same}; attributes that differ: {attrs}")
    if not any(l.get("clipped") for l in a) or all(l.get("clipped", True) for l in a):
        problem("resume: the gradient was clipped at every step or never: 'clipped' untested")
    if len(h.problems) == n0:
        print(f"ok   resume at {k} to the early stop at {n} with the average, plateau, early "
              f"stop and clip: bit for bit ({len(a)} lines)")


def cosine(lr, p):
    return 0.5 * lr * (1 + math.cos(math.pi * min(max(p, 0.0), 1.0)))


def test_time(corpus, work):
    n0 = len(h.problems)
    lr, limit = 0.002, 3.0
    timed = ["--set", "optim.schedule=cosine", "--set", "optim.schedule_over=time"]
    run = os.path.join(work, "time")
    h.run(base(corpus, run, 0, timed + ["--time-limit", str(limit), "--log-every", "5"]),
          check=True)
    train, _ = h.metrics(run)
    s = h.summary(run) or {}
    bad = [m["step"] for m in train if not math.isclose(m["lr"], cosine(lr, m["progress"]),
                                                        rel_tol=1e-6, abs_tol=1e-12)]
    prog = [m["progress"] for m in train]
    if bad or prog != sorted(prog) or prog[-1] < 1 or s.get("stop") != "time limit":
        problem(f"time schedule: lr off the cosine of progress at steps {bad[:5]}, progress "
                f"{prog[:3]}..{prog[-1:]}, stop {s.get('stop')!r}")
    elif h5py is not None:
        with h5py.File(ckpt(run, train[-1]["step"]), "r") as f:
            if not f.attrs["elapsed_s"] >= limit:
                problem(f"time schedule: elapsed_s {f.attrs['elapsed_s']} < {limit}")
    # its budget used up, a resume has nothing to train: one end record, how it ended
    n_lines = len(lines(run))
    p = h.run(base(corpus, run, 0, timed + ["--time-limit", str(limit), "--resume", "auto"]))
    new = lines(run)[n_lines:]
    if p.returncode != 0 or "nothing to do: the run has used its train.time_limit" not in \
            p.stderr or len(new) != 1 or not new[0].get("summary") or \
            new[0].get("stop") != "time limit" or new[0].get("exit") != 0:
        problem(f"resuming a run whose time budget is used: exit {p.returncode}, "
                f"{len(lines(run)) - n_lines} new metrics lines\n{p.stderr}")
    if len(h.problems) == n0:
        print(f"ok   schedule over time: {len(train)} lines, lr = cosine(progress), progress "
              f"{prog[0]:.3f} .. {prog[-1]:.3f}, stop 'time limit'")
    # stopped by train.steps and resumed: the progress goes on from the checkpoint's seconds
    res = os.path.join(work, "time-resume")
    big = ["--time-limit", "1000"]
    h.run(base(corpus, res, 20, timed + big), check=True)
    if h5py is None:
        return
    with h5py.File(ckpt(res, 20), "r") as f:
        e = float(f.attrs["elapsed_s"])
    h.run(base(corpus, res, 30, timed + big + ["--resume", "auto"]), check=True)
    after = [m for m in h.metrics(res)[0] if m["step"] > 20]
    first = after[0]
    if not (e > 0 and first["progress"] >= e / 1000 and
            math.isclose(first["lr"], cosine(lr, first["progress"]), rel_tol=1e-6)):
        problem(f"time schedule resumed: elapsed_s {e}, first progress after the resume "
                f"{first['progress']} (expected >= {e / 1000}), lr {first['lr']}")
    else:
        print(f"ok   resumed at step 20 with {e:.3f} s recorded: progress goes on from "
              f"{first['progress']:.6f}")
    for extra, want in ((timed, "optim.schedule_over = time needs train.time_limit"),
                        (["--set", "optim.plateau_patience=1"], "need eval.every >= 1"),
                        (["--set", "train.early_stop=3"], "need eval.every >= 1"),
                        (["--set", "optim.ema=1"], "optim.ema = 1: must be a number in [0, 1)")):
        bad_dir = os.path.join(work, "refused")
        p = h.run(base(corpus, bad_dir, 5, extra))
        errors = [l for l in p.stderr.splitlines() if l.startswith("charlm: error:")]
        if p.returncode != 1 or len(errors) != 1 or want not in errors[0] or \
                os.path.exists(bad_dir):
            problem(f"{' '.join(extra)}: exit {p.returncode}, expected 1 and one line naming "
                    f"'{want}', nothing written:\n{p.stderr}")


def test_layer_norms(corpus, work):
    # a tied decoder's weight is the embedding's: its part is the bias alone, and the layers' parts
    # hold their layer-normalisation gains too
    tied = ["--embed", "24", "--set", "model.tie=true", "--set", "model.layer_norm=true"]
    for clip, extra in ((0.05, []), (0, []), (0, tied)):
        run = os.path.join(work, f"norms{clip}{'-tied' if extra else ''}")
        h.run(base(corpus, run, 5, ["--set", f"optim.clip={clip}"] + extra), check=True)
        train, _ = h.metrics(run)
        bad = []
        for m in train:
            parts = m.get("grad_norm_layers") or []
            total = math.sqrt(sum(x * x for x in parts))
            if len(parts) != 4 or not math.isclose(total, m["grad_norm"], rel_tol=1e-5):
                bad.append(f"step {m['step']}: {parts} vs {m['grad_norm']}")
            if m.get("clipped") != (clip > 0 and m["grad_norm"] > clip):
                bad.append(f"step {m['step']}: clipped {m.get('clipped')}, norm {m['grad_norm']}")
        if bad:
            problem(f"grad_norm_layers (clip {clip} {extra}): " + "; ".join(bad[:4]))
        else:
            print(f"ok   grad_norm_layers: 4 parts whose root sum of squares is grad_norm; "
                  f"clipped {sorted(set(m['clipped'] for m in train))} at clip {clip}")


def test_diverge(corpus, work):
    def args(run_dir, steps, lr):
        return ["train", "--corpus", corpus, "--layers", "1", "--hidden", "32", "--embed", "16",
                "--batch", "2", "--seq", "16", "--steps", str(steps), "--epochs", "0", "--optim",
                "sgd", "--set", "optim.momentum=0", "--set", "optim.clip=0", "--lr", lr,
                "--set", "optim.ema=0.5", "--log-every", "1", "--set", "checkpoint.every=0",
                "--eval-every", "2", "--set", "optim.plateau_patience=1",
                "--set", "optim.plateau_factor=0.9", "--set", "optim.plateau_threshold=0.9",
                "--run-dir", run_dir]
    for lr in ("4e19", "6e19", "1e20", "3e20"):
        run = os.path.join(work, f"diverge-{lr}")
        p = h.run(args(run, 200, lr))
        m = re.search(r"training diverged at step (\d+)", p.stderr)
        if p.returncode not in (0, 4):  # 70: the replay did not train the steps as before
            problem(f"lr {lr}: exit {p.returncode}\n{p.stderr[-2000:]}")
            return
        if p.returncode == 4 and m and int(m.group(1)) >= 3:
            break
    else:
        print("note: no divergence late enough to train steps again: skipped")
        return
    good = int(m.group(1)) - 1
    ref = os.path.join(work, "diverge-ref")
    h.run(args(ref, good, lr), check=True)
    if h5py is None:
        return
    with h5py.File(ckpt(run, good), "r") as f, h5py.File(ckpt(ref, good), "r") as g:
        differ = [f"{grp}/{t}" for grp in ("model", "ema") for t in g[grp]
                  if not np.array_equal(f[grp][t][()], g[grp][t][()])]
        scale = f.attrs["lr_scale"]
    replayed = good - good // 32 * 32
    if differ:
        problem(f"divergence at step {good + 1}: ckpt-{good} differs from an uninterrupted "
                f"run's in {differ}")
    elif replayed < 5 or scale == 1:
        print(f"note: divergence at step {good + 1}, {replayed} steps trained again, lr scale "
              f"{scale}: no plateau reduction among them")
    else:
        print(f"ok   divergence at step {good + 1} with the average and the plateau (lr scale "
              f"{scale:.3g}): ckpt-{good}, {replayed} steps trained again, is an uninterrupted "
              "run's, bit for bit")


def test_format3(work):
    """The shipped checkpoint of format 3: 4 steps of lstm 1x16 on tinyshakespeare."""
    fixture = os.path.join(HERE, "data", "ckpt-format3.h5")
    args = ["--cell", "lstm", "--layers", "1", "--hidden", "16", "--embed", "8", "--dropout",
            "0.1", "--batch", "2", "--seq", "16", "--epochs", "0", "--log-every", "1",
            "--eval-every", "2", "--set", "checkpoint.every=2", "--set", "data.val_frac=0.01",
            "--corpus", TINY, "--steps", "8"]
    p = h.run(["inspect", "--verify", fixture])
    if p.returncode != 0 or not re.search(r"^format_version\s+3$", p.stdout, re.M):
        problem(f"inspect --verify {fixture}: exit {p.returncode}\n{p.stdout}{p.stderr}")
        return
    ref, res = os.path.join(work, "v3-ref"), os.path.join(work, "v3-resumed")
    h.run(["train", "--run-dir", ref] + args, check=True)
    p = h.run(["train", "--run-dir", res, "--resume", fixture] + args)
    if p.returncode != 0:
        problem(f"resume from {fixture}: exit {p.returncode}\n{p.stderr}")
        return
    a = {m["step"]: m for m in h.metrics(ref)[0]}
    b = {m["step"]: m for m in h.metrics(res)[0]}
    worst = max(abs(a[s][k] - b[s][k]) / abs(a[s][k]) for s in range(5, 9)
                for k in ("train_loss", "grad_norm"))
    if sorted(b) != [5, 6, 7, 8] or worst > 1e-4:
        problem(f"resume from {fixture}: steps {sorted(b)}, worst relative difference {worst}")
    else:
        print(f"ok   a format-3 checkpoint inspects and resumes (steps 5..8 within {worst:.1e})")


def main():
    work = h.tmpdir()
    corpus = h.write_text(work, 40000)
    test_ema(corpus, work)
    test_plateau(corpus, work)
    test_plateau_torch()
    test_early_stop(corpus, work)
    test_resume(corpus, work)
    test_time(corpus, work)
    test_layer_norms(corpus, work)
    test_diverge(corpus, work)
    test_format3(work)
    if h.problems:
        h.fail(f"{len(h.problems)} problem(s)")


if __name__ == "__main__":
    main()
