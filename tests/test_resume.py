"""Exact resume: N steps uninterrupted == K steps, stop, `--resume auto` to N, at the
same rank count bit for bit (train_loss and grad_norm of every step, val_loss of every validation
both runs made) — for rnn, lstm and gru with dropout and Adam, for lstm and gru with every
regularisation and architecture option on (locked, input and embedding-row dropout, DropConnect,
tying, layer normalisation: the masks are keyed by step), for SGD with momentum, and for lstm
with the moving average of the weights, the plateau schedule and early stopping on, and for
lstm and gru (with every option) at model.precision = bf16 — where
the resume crosses an epoch wrap and a validation. Resuming the -np 2 checkpoint with -np 1 and
twice the batch (the same S = P*B streams) stays within 1e-4 relative (bf16: 1e-3). A resume
that changes the model size, layer normalisation, the number of streams or the cell is refused
with exit code 1 and a line naming the key, and so are a missing --resume file and a fresh start in a run.dir that holds checkpoints;
none of them touches the run directory. A learning rate changed at resume is used and recorded.

Whose run and which data. `--resume OTHER/ckpt --run-dir RUN` is refused (exit 1, one line
naming both runs' ids, RUN untouched) when RUN holds another run's checkpoints — it would prune
them, re-point best.h5 and cut RUN's metrics — and accepted into an empty run.dir (which then
continues OTHER's run: the same run id) and from an older checkpoint of RUN's own run. A training
text of the same length and vocabulary but other content, or another validation text, is refused
naming both data fingerprints, unless data.allow_changed=true, which resumes with one warning."""
import os
import re
import shutil

import harness as h

B, T = 2, 16          # streams per rank at -np 2: S = 4
N, K = 30, 10         # windows/epoch is 16: the resume at 10 crosses the wrap at 16
EVAL, EVERY = 7, 4    # validations at 7, 14, 21, 28 (and at the end); checkpoints every 4

CASES = [  # name, extra args
    ("rnn-adam", ["--cell", "rnn"]),
    ("lstm-adam", ["--cell", "lstm"]),
    ("gru-adam", ["--cell", "gru"]),
    ("lstm-sgd", ["--cell", "lstm", "--optim", "sgd", "--set", "optim.momentum=0.9",
                  "--lr", "0.5"]),
    # the moving average (validated), the plateau state (every validation after the first is
    # a bad one), the early-stop count and a clip some steps reach, all in the checkpoint
    ("lstm-ema-plateau", ["--cell", "lstm", "--set", "optim.ema=0.9",
                          "--set", "optim.plateau_patience=1", "--set", "optim.plateau_factor=0.5",
                          "--set", "optim.plateau_threshold=0.9", "--set", "train.early_stop=9",
                          "--set", "optim.clip=0.5"]),
]
EVERY_OPTION = ["--embed", "32", "--set", "model.dropout_kind=locked", "--set",
                "model.dropout_input=0.1", "--set", "model.dropout_embed=0.1", "--set",
                "model.weight_drop=0.2", "--set", "model.tie=true", "--set",
                "model.layer_norm=true"]
CASES += [("lstm-every-option", ["--cell", "lstm"] + EVERY_OPTION),
          ("gru-every-option", ["--cell", "gru"] + EVERY_OPTION)]
# model.precision = bf16: every product of a window rounded to bfloat16 on this CPU's bf16 path;
# across rank counts within BF16_TOL, since the two runs' fp32-level differences now and then move
# a value across a bf16 rounding boundary (measured: up to 2.3e-4)
BF16, BF16_TOL = "model.precision=bf16", 1e-3
CASES += [("lstm-bf16", ["--cell", "lstm", "--set", BF16]),
          ("gru-bf16-every-option", ["--cell", "gru", "--set", BF16] + EVERY_OPTION)]

problems = h.problems
problem = h.problem


def rel(a, b):
    return abs(a - b) / max(abs(a), abs(b), 1e-30)


def train_args(corpus, run_dir, extra, steps, batch=B):
    return (["train", "--corpus", corpus, "--layers", "2", "--hidden", "32", "--embed", "16",
             "--dropout", "0.2", "--batch", str(batch), "--seq", str(T), "--steps", str(steps),
             "--epochs", "0", "--log-every", "1", "--eval-every", str(EVAL),
             "--set", f"checkpoint.every={EVERY}", "--run-dir", run_dir] + extra)


def ckpt_name(step):
    return f"ckpt-{step:08d}.h5"


def check_resumed(p, run_dir, step, what):
    """p (a finished charlm train) really continued from run_dir's checkpoint at `step`."""
    want = os.path.join(run_dir, "checkpoints", ckpt_name(step))
    m = re.search(r"charlm: resuming from (\S+) at step (\d+)", p.stderr)
    if p.returncode != 0:
        problem(f"{what}: exit code {p.returncode}\n{p.stderr}")
    elif not m or os.path.realpath(m.group(1)) != os.path.realpath(want) or int(m.group(2)) != step:
        problem(f"{what}: expected 'charlm: resuming from {want} at step {step}' on stderr, got:\n"
                + p.stderr)
    if re.search(r"^step 1/", p.stderr, re.M):
        problem(f"{what}: the resumed run printed steps before {step + 1} (it started over)")
    if os.path.exists(os.path.join(run_dir, "metrics.jsonl.1")):
        problem(f"{what}: metrics.jsonl was moved aside as for a fresh start")


def compare(ref, got, what, exact, after=0, tol=1e-4):
    """Compares the metrics of two run dirs: every train line (step > after) and the validations
    at the steps both have, bit for bit (exact) or within tol relative. Returns the worst
    relative difference."""
    (t1, v1), (t2, v2) = h.metrics(ref), h.metrics(got)
    s1, s2 = [m["step"] for m in t1], [m["step"] for m in t2]
    if s1 != list(range(1, N + 1)) or s2 != list(range(1, N + 1)):
        problem(f"{what}: train lines at steps {s1} and {s2}, expected 1..{N} once each")
        return float("inf")
    worst, bad = 0.0, 0
    for a, b in zip(t1, t2):
        if a["step"] <= after:
            continue
        for key in ("train_loss", "grad_norm", "lr"):
            e = rel(a[key], b[key])
            worst = max(worst, e)
            if (a[key] != b[key]) if exact else e > tol:
                bad += 1
                if bad <= 5:
                    print(f"  {what} step {a['step']} {key}: {a[key]!r} vs {b[key]!r}")
        if exact and (a["grad_norm_layers"], a["clipped"]) != (b["grad_norm_layers"], b["clipped"]):
            bad += 1
            print(f"  {what} step {a['step']}: gradient norms of the parts or clipped differ")
    val1 = {m["step"]: m["val_loss"] for m in v1}
    val2 = {m["step"]: m["val_loss"] for m in v2}
    common = sorted(set(val1) & set(val2))
    need = [s for s in range(EVAL, N + 1, EVAL) if s > K] + [N]
    if any(s not in common for s in need):
        problem(f"{what}: validations at {sorted(val1)} and {sorted(val2)}: expected both to "
                f"have {need}")
    for s in common:
        e = rel(val1[s], val2[s])
        worst = max(worst, e)
        if (val1[s] != val2[s]) if exact else e > tol:
            bad += 1
            print(f"  {what} validation at step {s}: {val1[s]!r} vs {val2[s]!r}")
    if bad:
        problem(f"{what}: {bad} differences (worst relative {worst:.3e}), expected "
                + ("none" if exact else f"all within {tol:g}"))
    # equal numbers prove nothing unless training moved them
    if not t1[-1]["train_loss"] < t1[0]["train_loss"] - 0.05:
        problem(f"{what}: the loss did not fall ({t1[0]['train_loss']} -> {t1[-1]['train_loss']})")
    return worst


def snapshot(run_dir):
    """What a refused command must leave unchanged: every file's name and content."""
    out = {}
    for root, _, files in os.walk(run_dir):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, run_dir)] = f.read()
    return out


def refused(what, args, np, want, run_dir):
    before = snapshot(run_dir)
    p = h.run(args, np=np, timeout=300)
    errors = [l for l in p.stderr.splitlines() if l.startswith("charlm: error:")]
    bad = []
    if p.returncode != 1:
        bad.append(f"exit code {p.returncode}, expected 1")
    if len(errors) != 1:
        bad.append(f"{len(errors)} error lines, expected 1")
    for s in want:
        if errors and s not in errors[0]:
            bad.append(f"error line does not name '{s}'")
    if snapshot(run_dir) != before:
        bad.append(f"{run_dir} was modified")
    if bad:
        problem(f"refusal [{what}]: " + "; ".join(bad) + "\n  stderr: " + p.stderr.strip())
    else:
        print(f"ok   refusal [{what}]: {errors[0]}")


def run_id(path):
    p = h.run(["inspect", path])
    m = re.search(r"^run id\s+([0-9a-f]{32})$", p.stdout, re.M)
    return m.group(1) if m else None


def other_run(corpus, work, base):
    """A checkpoint of run A resumed into run B's directory, an empty one, and B's own."""
    a, b, empty = (os.path.join(work, x) for x in ("run-a", "run-b", "run-empty"))
    shutil.copytree(os.path.join(work, "refusals"), a)
    h.run(train_args(corpus, b, base + ["--set", "train.seed=99"], K + 2), np=2, check=True)
    a8 = os.path.join(a, "checkpoints", ckpt_name(8))
    ida, idb = run_id(a8), run_id(os.path.join(b, "checkpoints", ckpt_name(K + 2)))
    if not ida or not idb or ida == idb:
        problem(f"run ids: A {ida}, B {idb}: expected two different ones")
    refused("a checkpoint of another run into run.dir B",
            train_args(corpus, b, base + ["--resume", a8], N), 2,
            ["cannot resume from", a8, b, "another run", str(ida), str(idb)], b)
    p = h.run(train_args(corpus, empty, base + ["--resume", a8], K + 2), np=2)
    got = os.path.join(empty, "checkpoints", ckpt_name(K + 2))
    if p.returncode != 0 or not os.path.exists(got) or run_id(got) != ida:
        problem(f"resume of A's {a8} into an empty run.dir: exit {p.returncode}, its checkpoint "
                f"has run id {os.path.exists(got) and run_id(got)}, A's is {ida}\n{p.stderr}")
    b8 = os.path.join(b, "checkpoints", ckpt_name(8))
    p = h.run(train_args(corpus, b, base + ["--resume", b8], K + 2), np=2)
    if p.returncode != 0 or f"resuming from {b8} at step 8" not in p.stderr:
        problem(f"resume of B's own older {b8} into B: exit {p.returncode}\n{p.stderr}")
    elif not [x for x in problems if "run" in x]:
        print(f"ok   another run's checkpoint into an empty run.dir continues run {ida}; B's own "
              "older checkpoint into B is taken")


def changed_data(corpus, work, base):
    """The same length and vocabulary, other content: refused unless data.allow_changed."""
    with open(corpus, encoding="utf-8") as f:
        text = f.read()
    ntrain = len(text) - int(len(text) * 0.1)  # data.val_frac's default split
    def swapped(i):  # two different neighbouring characters from position i on, exchanged
        while text[i] == text[i + 1]:
            i += 1
        return text[:i] + text[i + 1] + text[i] + text[i + 2:]
    cases = [("training", swapped(ntrain // 2)), ("validation", swapped(ntrain + 20))]
    run_dir = os.path.join(work, "changed-data")
    shutil.copytree(os.path.join(work, "refusals"), run_dir)
    ck = os.path.join(run_dir, "checkpoints", ckpt_name(K))
    for what, new in cases:
        path = os.path.join(work, f"corpus-{what}.txt")
        with open(path, "w", encoding="utf-8") as f:
            f.write(new)
        extra = base + ["--corpus", path, "--resume", "auto"]
        refused(f"other {what} text of the same length and vocabulary",
                train_args(corpus, run_dir, extra, N), 2,
                ["cannot resume from", ck, f"the {what} data differs", "fingerprint",
                 "data.allow_changed=true"], run_dir)
    p = h.run(train_args(corpus, run_dir, extra + ["--set", "data.allow_changed=true"], K + 2),
              np=2)
    warn = [l for l in p.stderr.splitlines() if l.startswith("charlm: warning:")]
    if p.returncode != 0 or len(warn) != 1 or "validation data differs" not in warn[0] or \
            f"resuming from {ck}" not in p.stderr:
        problem(f"data.allow_changed=true: exit {p.returncode}, expected 0, a resume from {ck} "
                f"and one warning:\n{p.stderr}")
    else:
        print(f"ok   data.allow_changed=true resumes: {warn[0]}")


def main():
    work = h.tmpdir()
    corpus = os.path.join(work, "corpus.txt")
    with open(corpus, "w", encoding="utf-8") as f:
        f.write(h.synthetic_text(1200))  # 1080 training chars: 16 windows of 4 x 16 per epoch
    for name, extra in CASES:
        full, part, other = (os.path.join(work, f"{name}-{x}") for x in ("full", "part", "np1"))
        p = h.run(train_args(corpus, full, extra, N), np=2, check=True)
        m = re.search(r"(\d+) windows/epoch", p.stderr)
        if not m or not K < int(m.group(1)) < N:
            problem(f"{name}: expected between {K} and {N} windows per epoch so that the resume "
                    f"crosses an epoch wrap: {m and m.group(0)}")
        h.run(train_args(corpus, part, extra, K), np=2, check=True)
        ck = os.path.join(part, "checkpoints", ckpt_name(K))
        if not os.path.exists(ck):
            problem(f"{name}: no checkpoint {ck} after {K} steps")
            continue
        shutil.copytree(part, other)
        if name == "lstm-adam":
            refusals = os.path.join(work, "refusals")
            shutil.copytree(part, refusals)
            lr_dir = os.path.join(work, "lr-change")
            shutil.copytree(part, lr_dir)
        n0 = len(problems)
        p = h.run(train_args(corpus, part, extra + ["--resume", "auto"], N), np=2)
        check_resumed(p, part, K, f"{name} -np 2 resume")
        compare(full, part, f"{name}: -np 2 uninterrupted vs -np 2 resumed at {K}", exact=True)
        p = h.run(train_args(corpus, other, extra + ["--resume", "auto"], N, batch=2 * B), np=1)
        check_resumed(p, other, K, f"{name} -np 1 resume")
        worst = compare(full, other, f"{name}: -np 2 uninterrupted vs -np 1 x {2 * B} resumed",
                        exact=False, after=K, tol=BF16_TOL if BF16 in extra else 1e-4)
        if len(problems) == n0:
            print(f"ok   {name}: resumed at {K} with -np 2 bit-identical to the uninterrupted run; "
                  f"with -np 1 x {2 * B} worst relative difference {worst:.2e}")

    # refusals: a different model, number of streams or cell; a missing file; a fresh start
    base = ["--cell", "lstm"]
    ck = os.path.join(refusals, "checkpoints", ckpt_name(K))
    refused("different hidden", train_args(corpus, refusals, base + ["--hidden", "64",
            "--resume", "auto"], N), 2, ["cannot resume from", ck, "model.hidden", "64", "32"],
            refusals)
    refused("layer normalisation on", train_args(corpus, refusals, base + ["--set",
            "model.layer_norm=true", "--resume", "auto"], N), 2,
            ["cannot resume from", ck, "model.layer_norm", "true", "false"], refusals)
    refused("different S", train_args(corpus, refusals, base + ["--resume", "auto"], N), 1,
            ["cannot resume from", ck, "train.batch", "4"], refusals)
    refused("different cell", train_args(corpus, refusals, base + ["--cell", "gru", "--resume",
            ck], N), 2, ["cannot resume from", ck, "model.cell", "gru", "lstm"], refusals)
    missing = os.path.join(work, "nonexistent.h5")
    refused("missing --resume file", train_args(corpus, refusals, base + ["--resume", missing], N),
            2, [missing], refusals)
    refused("fresh start over checkpoints", train_args(corpus, refusals, base, N), 2,
            [refusals, "--resume auto"], refusals)

    # the learning rate may change at resume: it is used, logged and recorded
    p = h.run(train_args(corpus, lr_dir, base + ["--lr", "0.001", "--resume", "auto"], N), np=2)
    check_resumed(p, lr_dir, K, "resume with --lr 0.001")
    full = os.path.join(work, "lstm-adam-full")
    (tf, _), (tl, _) = h.metrics(full), h.metrics(lr_dir)
    if [m["step"] for m in tl] != list(range(1, N + 1)):
        problem(f"--lr at resume: train lines at steps {[m['step'] for m in tl]}")
    else:
        lrs = [(m["step"], m["lr"]) for m in tl]
        if any(lr != (0.002 if s <= K else 0.001) for s, lr in lrs):
            problem(f"--lr at resume: expected lr 0.002 up to step {K}, 0.001 after: {lrs}")
        # step K+1 is computed from the restored state, step K+2 after the first new-lr update
        if tl[K]["train_loss"] != tf[K]["train_loss"]:
            problem(f"--lr at resume: loss at step {K + 1} {tl[K]['train_loss']} differs from the "
                    f"uninterrupted {tf[K]['train_loss']} (the restored state is not the same)")
        if tl[K + 1]["train_loss"] == tf[K + 1]["train_loss"]:
            problem(f"--lr at resume: loss at step {K + 2} is unchanged: the new lr was not used")
    with open(os.path.join(lr_dir, "config.ini")) as f:
        cfg = f.read()
    if not re.search(r"^lr = 0\.001$", cfg, re.M):
        problem("--lr at resume: config.ini does not record lr = 0.001:\n" + cfg)
    last = os.path.join(lr_dir, "checkpoints", ckpt_name(N))
    p = h.run(["inspect", last])
    if p.returncode != 0 or not re.search(r"^optimizer\s+adam, step \d+, lr 0\.001$", p.stdout,
                                          re.M) or not re.search(r"^lr = 0\.001$", p.stdout, re.M):
        problem(f"--lr at resume: `charlm inspect {last}` does not show lr 0.001:\n"
                + p.stdout + p.stderr)
    other_run(corpus, work, base)
    changed_data(corpus, work, base)
    if problems:
        h.fail(f"{len(problems)} problem(s)")
    print("all resume checks passed")
    shutil.rmtree(work, ignore_errors=True)  # checkpoints add up; kept when a check fails


if __name__ == "__main__":
    main()
