"""Checkpoint files, read with Debian's python3-h5py (skipped without it).

- A good checkpoint has the layout of src/README.md §4 / include/charlm/checkpoint.h: /model shapes
  from the /model attributes, /vocab the corpus characters, /state/h (layers, S, H), the history;
  the newest checkpoint.keep are kept and best.h5 is the one with the best validation; the h5py
  example of README.md runs against it and prints what it should.
- Format version 3: the root holds run_id (32 hex digits, the same in every checkpoint of a
  run), train_fingerprint, val_fingerprint and digest (16 hex digits each).
- The optimizer's buffers are named as PyTorch's state keys (format_version 2 and 3): Adam's
  /optimizer/exp_avg and exp_avg_sq, RMSprop's /optimizer/square_avg. Checkpoints of the older
  formats — 2 (version 3 without the attributes above) and 1 (also the buffers named m and v),
  made here with h5py — still inspect and resume, exactly, to the losses of the run that wrote
  them, for Adam and RMSprop.
- Bad files: truncated, a byte flipped inside a parameter dataset (caught by fletcher32), a
  missing dataset, an HDF5 file that is not a charlm checkpoint, format_version 4, an attribute
  changed without the digest (last_train_loss), /model's hidden attribute 32 -> 4194336 (a
  flipped bit; it asked for terabytes and aborted with "out of memory"), format_version 3 -> 2
  (which would turn the digest off). For each, `charlm inspect --verify` and `charlm train
  --resume FILE` exit 1 with one line naming the file and the dataset or attribute.
  `--resume auto` skips corrupt newest checkpoints with one warning each and continues, exactly,
  from the newest good one; it also skips, with one warning, a newest one that reads but cannot
  continue the run (a format-2 file whose optimizer buffers are gone: it verifies, as format 2
  has no digest).
- Bad places: a run.dir (or its checkpoints/) without write permission (as nobody when root),
  and a full disk while writing (a file-size limit; also a small tmpfs when it can be mounted):
  exit 1, one line, no .tmp left, no earlier checkpoint replaced or damaged."""
import hashlib
import os
import re
import shutil
import subprocess

import harness as h

try:
    import h5py
    import numpy as np
except ImportError:
    print("python3-h5py (and numpy) not available: skipped")
    raise SystemExit(h.SKIP)

HERE = os.path.dirname(os.path.abspath(__file__))
README = os.path.join(HERE, "..", "README.md")
LAYERS, HIDDEN, EMBED, B, T = 2, 32, 16, 2, 16
S = 2 * B
STEPS, EVERY = 20, 5
FORMAT_VERSION = 4
HEX_ATTRS = {"run_id": 32, "train_fingerprint": 16, "val_fingerprint": 16, "digest": 16}
# what format 4 adds to format 3: the run's seconds and the plateau state (and /ema, when on)
V4_ATTRS = ("elapsed_s", "lr_scale", "plateau_best", "plateau_bad", "plateau_stale")
MOMENTS = {"adam": ("exp_avg", "exp_avg_sq"), "rmsprop": ("square_avg",)}  # PyTorch's keys

problems = h.problems
problem = h.problem


def ck(run_dir, step):
    return os.path.join(run_dir, "checkpoints", f"ckpt-{step:08d}.h5")


def train_args(corpus, run_dir, steps=STEPS, extra=()):
    return ["train", "--corpus", corpus, "--cell", "lstm", "--layers", str(LAYERS), "--hidden",
            str(HIDDEN), "--embed", str(EMBED), "--dropout", "0.1", "--batch", str(B), "--seq",
            str(T), "--steps", str(steps), "--epochs", "0", "--log-every", "1", "--eval-every",
            str(EVERY), "--set", f"checkpoint.every={EVERY}", "--run-dir", run_dir] + list(extra)


def sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def one_error(p, what, code, want):
    """Checks p's exit code and its single 'charlm: error:' line, which must contain every
    string of want; returns the line."""
    errors = [l for l in p.stderr.splitlines() if l.startswith("charlm: error:")]
    bad = []
    if p.returncode != code:
        bad.append(f"exit code {p.returncode}, expected {code}")
    if len(errors) != 1:
        bad.append(f"{len(errors)} error lines, expected 1")
    for s in want:
        if errors and s not in errors[0]:
            bad.append(f"the error line does not name '{s}'")
    if bad:
        problem(f"[{what}] " + "; ".join(bad) + "\n  stderr: " + p.stderr.strip())
        return None
    print(f"ok   [{what}] {errors[0]}")
    return errors[0]


def verifies(path):
    return h.run(["inspect", "--verify", path]).returncode == 0


# ---- the good checkpoint, read as the README shows -------------------------------------------

def check_moments(f, path, kind, want):
    """The /optimizer of open checkpoint f holds kind's buffers, each with the shapes want."""
    opt = f["optimizer"]
    if opt.attrs["kind"] != kind.encode() or sorted(opt) != sorted(MOMENTS[kind]):
        problem(f"{path}: /optimizer of kind {opt.attrs['kind']!r} holds {sorted(opt)}, expected "
                f"{kind}'s {sorted(MOMENTS[kind])}")
        return
    for mom in MOMENTS[kind]:
        g = {n: d.shape for n, d in opt[mom].items()}
        if g != want:
            problem(f"{path}: /optimizer/{mom} shapes {g}, expected {want}")


def check_layout(path, text):
    gates = 4  # lstm
    with h5py.File(path, "r") as f:
        a = f.attrs
        if a["format"] != b"charlm" or a["format_version"] != FORMAT_VERSION or \
                a["step"] != STEPS:
            problem(f"{path}: root attributes format={a['format']!r} format_version="
                    f"{a['format_version']} step={a['step']}")
        if a["streams"] != S or a["world_size"] != 2 or a["seq"] != T:
            problem(f"{path}: streams {a['streams']}, world_size {a['world_size']}, seq {a['seq']}")
        for name, digits in HEX_ATTRS.items():
            v = a.get(name, b"").decode()
            if len(v) != digits or v.strip("0123456789abcdef"):
                problem(f"{path}: attribute {name} = {v!r}, expected {digits} hex digits")
        m = f["model"].attrs
        V = int(m["vocab_size"])
        if (m["cell"], m["layers"], m["hidden"], m["embed"]) != (b"lstm", LAYERS, HIDDEN, EMBED):
            problem(f"{path}: /model attributes {dict(m)}")
        vocab = "".join(chr(c) for c in f["vocab"][:])
        if vocab != "".join(sorted(set(text))) or len(vocab) != V:
            problem(f"{path}: /vocab {vocab!r} is not the {V} sorted characters of the corpus")
        want = {"embedding.weight": (V, EMBED), "decoder.weight": (V, HIDDEN), "decoder.bias": (V,)}
        for l in range(LAYERS):
            want[f"rnn.weight_ih_l{l}"] = (gates * HIDDEN, EMBED if l == 0 else HIDDEN)
            want[f"rnn.weight_hh_l{l}"] = (gates * HIDDEN, HIDDEN)
            want[f"rnn.bias_ih_l{l}"] = want[f"rnn.bias_hh_l{l}"] = (gates * HIDDEN,)
        got = {n: d.shape for n, d in f["model"].items()}
        if got != want:
            problem(f"{path}: /model shapes {got}, expected {want}")
        check_moments(f, path, "adam", want)
        if f["optimizer"].attrs["step"] != STEPS:
            problem(f"{path}: /optimizer attributes {dict(f['optimizer'].attrs)}")
        for st in ("state/h", "state/c"):
            if f[st].shape != (LAYERS, S, HIDDEN) or f[st].dtype != np.float32:
                problem(f"{path}: /{st} is {f[st].dtype} {f[st].shape}, expected float32 "
                        f"{(LAYERS, S, HIDDEN)}")
            if not np.abs(f[st][()]).max() > 0:
                problem(f"{path}: /{st} is all zero: the carried state was not saved")
        if f["state/cursor"][0] != a["cursor"] or f["state/cursor"].attrs["epoch"] != a["epoch"]:
            problem(f"{path}: /state/cursor disagrees with the root attributes")
        unfiltered = []
        f.visititems(lambda n, o: unfiltered.append(n) if isinstance(o, h5py.Dataset) and
                     not (o.chunks and o.fletcher32) else None)
        if unfiltered:
            problem(f"{path}: datasets not chunked with fletcher32: {unfiltered}")
        hist = f["metrics/train"][()]
        train, val = h.metrics(os.path.dirname(os.path.dirname(path)))
        if hist.shape != (STEPS, 3) or list(hist[:, 0]) != list(range(1, STEPS + 1)) or \
                any(abs(r[1] - t["train_loss"]) > 1e-7 * abs(r[1]) for r, t in zip(hist, train)):
            problem(f"{path}: /metrics/train {hist.shape} does not match metrics.jsonl")
        vh = f["metrics/val"][()]
        if [int(s) for s in vh[:, 0]] != [v["step"] for v in val]:
            problem(f"{path}: /metrics/val steps {vh[:, 0]} vs metrics.jsonl "
                    f"{[v['step'] for v in val]}")
    print(f"ok   layout of {os.path.basename(path)}: {len(want)} tensors, vocabulary {V}, "
          f"state (layers, S, H) = {(LAYERS, S, HIDDEN)}")
    return want, vocab


def check_rotation_and_best(run_dir):
    d = os.path.join(run_dir, "checkpoints")
    names = sorted(os.listdir(d))
    ids = set()
    for n in names:
        with h5py.File(os.path.join(d, n), "r") as f:
            ids.add(f.attrs["run_id"])
    if len(ids) != 1:
        problem(f"the checkpoints of {run_dir} carry the run ids {ids}, expected one")
    kept = [ck(run_dir, s) for s in range(STEPS - 2 * EVERY, STEPS + 1, EVERY)]  # keep = 3
    if names != sorted([os.path.basename(p) for p in kept] + ["best.h5"]):
        problem(f"{d} holds {names}: expected the newest 3 checkpoints and best.h5")
    _, val = h.metrics(run_dir)
    at = {v["step"]: v["val_loss"] for v in val if v["step"] % EVERY == 0}
    best_step = min(at, key=at.get)
    best = os.path.join(d, "best.h5")
    with h5py.File(best, "r") as f:
        step = int(f.attrs["step"])
    if step != best_step:
        problem(f"best.h5 is the checkpoint of step {step}, the best validation was at {best_step} "
                f"({at})")
    elif best_step % EVERY == 0 and os.path.exists(ck(run_dir, best_step)) and \
            not os.path.samefile(best, ck(run_dir, best_step)):
        problem(f"best.h5 is not a hard link to {ck(run_dir, best_step)}")
    else:
        print(f"ok   rotation keeps {len(kept)} checkpoints; best.h5 = step {step} "
              f"(validation {at[step]})")


def readme_example(path, want, vocab):
    with open(README, encoding="utf-8") as f:
        blocks = [b for b in re.findall(r"```python\n(.*?)```", f.read(), re.S) if "h5py.File" in b]
    if len(blocks) != 1:
        problem(f"{README} should hold exactly one ```python block reading h5py, has {len(blocks)}")
        return
    script = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(path))), "example.py")
    with open(script, "w", encoding="utf-8") as f:
        f.write(blocks[0])
    p = subprocess.run(["/usr/bin/python3", script, path], capture_output=True, text=True,
                       timeout=120)
    out = p.stdout
    expect = [f"format {FORMAT_VERSION} step {STEPS} epoch",
              f"lstm {LAYERS} layers x {HIDDEN} hidden, embed {EMBED}",
              f"{len(vocab)} characters: {vocab!r}", f"state/h {(LAYERS, S, HIDDEN)} val loss"]
    expect += [f"{name:22} float32 {shape}" for name, shape in want.items()]
    missing = [e for e in expect if e not in out]
    if p.returncode != 0 or missing:
        problem(f"the README's h5py example: exit {p.returncode}, output lacks {missing}:\n"
                + out + p.stderr)
    else:
        print(f"ok   the README's h5py example ({len(blocks[0].splitlines())} lines) prints:\n  "
              + out.strip().replace("\n", "\n  "))


# ---- the optimizer's buffers, and format versions 1 and 2 ------------------------------------

def to_version(path, version):
    """Rewrites the checkpoint at path as format_version 2 had it (no run id, fingerprints or
    digest, nor what format 4 adds) or 1 (also the buffers named m and v). Format 3 has a digest,
    which h5py cannot make: test_ema_sched resumes a checkpoint that format 3 wrote."""
    with h5py.File(path, "r+") as f:
        for name in V4_ATTRS:
            del f.attrs[name]
        if "ema" in f:
            del f["ema"]
        for name in HEX_ATTRS:
            del f.attrs[name]
        opt = f["optimizer"]
        if version == 1:
            for new, old in zip(MOMENTS[opt.attrs["kind"].decode()], ("m", "v")):
                opt.move(new, old)
        f.attrs["format_version"] = np.int64(version)


def old_version_resumes(corpus, ref_run, work, kind, steps, want, version):
    """ref_run's checkpoint before the last, rewritten as format_version `version` and the last
    one removed: `inspect --verify` reads it and `--resume auto` continues from it to ref_run's
    losses exactly, writing format_version 3 again."""
    what = f"format_version {version}, {kind}"
    run_dir = os.path.join(work, f"version{version}-{kind}")
    shutil.copytree(ref_run, run_dir)  # copies: best.h5 is no longer a link into ref_run
    start = steps - EVERY
    old, last = ck(run_dir, start), ck(run_dir, steps)
    os.remove(last)
    to_version(old, version)
    bad = []
    p = h.run(["inspect", "--verify", old])
    if p.returncode != 0 or not re.search(rf"^format_version\s+{version}$", p.stdout, re.M):
        bad.append(f"`inspect --verify {old}`: exit {p.returncode}\n{p.stdout}{p.stderr}")
    p = h.run(train_args(corpus, run_dir, steps=steps, extra=["--optim", kind, "--resume", "auto"]),
              np=2)
    if p.returncode != 0 or f"charlm: resuming from {old} at step {start}" not in p.stderr or \
            "warning" in p.stderr:
        bad.append(f"did not resume from {old} (exit {p.returncode}):\n{p.stderr.strip()}")
    elif not same_metrics(ref_run, run_dir, steps):
        bad.append("the continued run's metrics differ from the original run's")
    else:
        with h5py.File(last, "r") as f:
            if f.attrs["format_version"] != FORMAT_VERSION:
                bad.append(f"{last} has format_version {f.attrs['format_version']}")
            check_moments(f, last, kind, want)
    if bad:
        problem(f"[{what}] " + "; ".join(bad))
    else:
        renamed = ", ".join(f"{new} -> {old}" for new, old in zip(MOMENTS[kind], "mv"))
        print(f"ok   [{what}] ({renamed if version == 1 else 'no run id, fingerprints, digest'}) "
              f"inspected, resumed from step {start} to the original losses")


def moment_names(corpus, good_run, want, work):
    """RMSprop's one buffer is /optimizer/square_avg (not m); checkpoints of format_version 1,
    Adam's and RMSprop's, and of format_version 2 still resume exactly."""
    rms_run = os.path.join(work, "rmsprop")
    steps = 2 * EVERY
    h.run(train_args(corpus, rms_run, steps=steps, extra=["--optim", "rmsprop"]), np=2, check=True)
    n0 = len(problems)
    with h5py.File(ck(rms_run, steps), "r") as f:
        check_moments(f, ck(rms_run, steps), "rmsprop", want)
    if len(problems) == n0:
        print(f"ok   buffers: adam's /optimizer/{' and '.join(MOMENTS['adam'])}, rmsprop's "
              f"/optimizer/{MOMENTS['rmsprop'][0]}, shaped like /model")
    old_version_resumes(corpus, good_run, work, "adam", STEPS, want, 1)
    old_version_resumes(corpus, rms_run, work, "rmsprop", steps, want, 1)
    old_version_resumes(corpus, good_run, work, "adam", STEPS, want, 2)


# ---- bad files -------------------------------------------------------------------------------

def flip_byte(path, dataset):
    """Flips one byte in the middle of chunk 0 of dataset (its raw bytes in the file)."""
    with h5py.File(path, "r") as f:
        ds = f[dataset]
        if ds.chunks:
            info = ds.id.get_chunk_info(0)
            offset, size = info.byte_offset, info.size
        else:
            offset, size = ds.id.get_offset(), ds.id.get_storage_size()
    with open(path, "r+b") as f:
        f.seek(offset + size // 2)
        b = f.read(1)
        f.seek(offset + size // 2)
        f.write(bytes([b[0] ^ 0x5A]))
    # the corruption is real: h5py's own read of that dataset now fails its checksum
    try:
        with h5py.File(path, "r") as f:
            f[dataset][()]
    except OSError:
        return
    problem(f"flipping a byte of {dataset} in {path} went unnoticed by h5py")


def make_bad_files(good, d):
    os.makedirs(d)
    bad = {}
    p = bad["truncated"] = os.path.join(d, "truncated.h5")
    with open(good, "rb") as f:
        data = f.read()
    with open(p, "wb") as f:
        f.write(data[:len(data) // 2])
    p = bad["flipped byte"] = os.path.join(d, "flipped.h5")
    shutil.copy(good, p)
    flip_byte(p, "model/decoder.weight")
    p = bad["missing dataset"] = os.path.join(d, "missing.h5")
    shutil.copy(good, p)
    with h5py.File(p, "r+") as f:
        del f["model/decoder.bias"]
    p = bad["not a checkpoint"] = os.path.join(d, "foreign.h5")
    with h5py.File(p, "w") as f:
        f["data"] = np.arange(100, dtype=np.float32)
        f.attrs["step"] = 5
    p = bad["format_version 4"] = os.path.join(d, "version4.h5")
    shutil.copy(good, p)
    with h5py.File(p, "r+") as f:
        f.attrs["format_version"] = np.int64(FORMAT_VERSION + 1)
    p = bad["attribute changed"] = os.path.join(d, "changed.h5")
    shutil.copy(good, p)
    with h5py.File(p, "r+") as f:
        f.attrs["last_train_loss"] = f.attrs["last_train_loss"] * (1 + 2 ** -40)
    p = bad["hidden 4194336"] = os.path.join(d, "hidden.h5")
    shutil.copy(good, p)
    set_hidden(p)
    p = bad["format_version 2 with a digest"] = os.path.join(d, "downgraded.h5")
    shutil.copy(good, p)
    with h5py.File(p, "r+") as f:
        f.attrs["format_version"] = np.int64(2)
    return bad


def set_hidden(path):
    """/model's hidden attribute 32 -> 4194336: bit 22 flipped, as a damaged disk would."""
    with h5py.File(path, "r+") as f:
        f["model"].attrs["hidden"] = np.int64(HIDDEN ^ (1 << 22))


WANT = {  # what the error line must name besides the file
    "truncated": [],
    "flipped byte": ["model/decoder.weight"],
    "missing dataset": ["model/decoder.bias"],
    "not a checkpoint": ["format"],
    "format_version 4": ["format_version", "4"],
    "attribute changed": ["digest", "corrupt"],
    "hidden 4194336": ["hidden 4194336", "corrupt"],
    "format_version 2 with a digest": ["format_version 2", "run_id", "corrupt"],
}


def bad_files(corpus, good, work):
    bad = make_bad_files(good, os.path.join(work, "bad"))
    for name, path in bad.items():
        one_error(h.run(["inspect", "--verify", path]), f"inspect --verify: {name}", 1,
                  [path] + WANT[name])
        run_dir = os.path.join(work, "resume-" + name.replace(" ", "-"))
        p = h.run(train_args(corpus, run_dir, extra=["--resume", path]), np=2)
        one_error(p, f"--resume: {name}", 1, [path] + WANT[name])
        if os.path.exists(run_dir):
            problem(f"[--resume: {name}] left {run_dir} behind")


def same_metrics(ref_run, run_dir, steps):
    """Whether run_dir's metrics.jsonl has a train line for each of the steps 1..steps with
    ref_run's train_loss and grad_norm, and ref_run's last validation."""
    (t0, v0), (t1, v1) = h.metrics(ref_run), h.metrics(run_dir)
    return [t["step"] for t in t1] == list(range(1, steps + 1)) and \
        all(a["train_loss"] == b["train_loss"] and a["grad_norm"] == b["grad_norm"]
            for a, b in zip(t0, t1)) and \
        (v0[-1]["step"], v0[-1]["val_loss"]) == (v1[-1]["step"], v1[-1]["val_loss"])


def truncate(path):
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


def version2_without_moments(path):
    """A format-2 checkpoint whose optimizer buffers are gone (as a flipped bit in a group name
    can do): it verifies, format 2 having no digest, and cannot continue an Adam run."""
    to_version(path, 2)
    with h5py.File(path, "r+") as f:
        for name in MOMENTS["adam"]:
            del f["optimizer"][name]


AUTO_CASES = {  # the damage done to the newest checkpoints, newest first: (function, warning)
    "corrupt checkpoints": [(truncate, "cannot open checkpoint"),
                            (lambda p: flip_byte(p, "model/decoder.weight"),
                             "model/decoder.weight")],
    "hidden 4194336": [(set_hidden, "hidden 4194336")],
    "a checkpoint that cannot continue the run": [
        (version2_without_moments, "the optimizer keeps 2 moment buffers, the checkpoint 0")],
}


def resume_auto_skips(corpus, good_run, work, name):
    """The newest checkpoints damaged as AUTO_CASES[name] says: --resume auto warns once about
    each, naming what is wrong, and continues from the next, reproducing the original run
    exactly; the damaged files are rewritten."""
    damage = AUTO_CASES[name]
    run_dir = os.path.join(work, "auto-" + name.replace(" ", "-"))
    shutil.copytree(good_run, run_dir)
    paths = [ck(run_dir, STEPS - i * EVERY) for i in range(len(damage) + 1)]
    for path, (hurt, _) in zip(paths, damage):
        hurt(path)
    p = h.run(train_args(corpus, run_dir, extra=["--resume", "auto"]), np=2)
    warnings = [l for l in p.stderr.splitlines() if l.startswith("charlm: warning:")]
    bad = []
    if p.returncode != 0:
        bad.append(f"exit code {p.returncode}")
    if len(warnings) != len(damage) or any(
            not w.startswith(f"charlm: warning: skipping {path}") or want not in w
            for w, path, (_, want) in zip(warnings, paths, damage)):
        bad.append("expected one warning each for " + ", ".join(
            f"{path} naming '{want}'" for path, (_, want) in zip(paths, damage)) +
            f", got {warnings}")
    start = STEPS - len(damage) * EVERY
    if f"charlm: resuming from {paths[-1]} at step {start}" not in p.stderr:
        bad.append(f"it did not resume from {paths[-1]}")
    if not same_metrics(good_run, run_dir, STEPS):
        bad.append("the continued run's metrics differ from the original run's")
    for path in paths[:-1]:
        if not verifies(path):
            bad.append(f"{path} was not rewritten by the continued run")
    if bad:
        problem(f"[--resume auto over {name}] " + "; ".join(bad) + "\n  stderr: "
                + p.stderr.strip())
    else:
        print(f"ok   [--resume auto over {name}] " + "\n     ".join(warnings) +
              f"\n     resumed from step {start}, same losses as the original run")


# ---- bad places ------------------------------------------------------------------------------

def as_nobody(work):
    if os.geteuid() != 0:
        return []
    if not shutil.which("setpriv"):
        h.fail("setpriv (util-linux) is needed to test an unwritable run.dir as root")
    return ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "env", "HOME=" + work]


def unwritable(corpus, work):
    prefix = as_nobody(work)
    # run.dir exists (root's, 755; our own 555 when not root): nothing can be created in it
    run_dir = os.path.join(work, "readonly-run")
    os.mkdir(run_dir)
    os.chmod(run_dir, 0o755 if prefix else 0o555)
    for np_ in (None, 2):
        p = h.run(train_args(corpus, run_dir), np=np_, prefix=prefix)
        one_error(p, f"run.dir not writable{' -np 2' if np_ else ''}", 1,
                  [run_dir, "ermission denied"])
        if os.listdir(run_dir):
            problem(f"[run.dir not writable] files appeared in {run_dir}: {os.listdir(run_dir)}")
    # run.dir writable, its checkpoints/ not: training runs, the first checkpoint fails
    run_dir = os.path.join(work, "readonly-ckpt")
    os.makedirs(os.path.join(run_dir, "checkpoints"))
    os.chmod(run_dir, 0o777)
    os.chmod(os.path.join(run_dir, "checkpoints"), 0o755 if prefix else 0o555)
    p = h.run(train_args(corpus, run_dir), np=2, prefix=prefix)
    one_error(p, "checkpoints/ not writable -np 2", 1,
              ["cannot write checkpoint", ck(run_dir, EVERY), "ermission denied"])
    left = os.listdir(os.path.join(run_dir, "checkpoints"))
    if left:
        problem(f"[checkpoints/ not writable] files in it: {left}")


def full_disk_checks(what, p, run_dir, failing, before):
    """After a run that could not write `failing`: one line, no .tmp, every earlier file intact."""
    n0 = len(problems)
    one_error(p, what, 1, ["cannot write checkpoint", failing] +
              (["File too large"] if "limit" in what else ["No space left on device"]))
    d = os.path.join(run_dir, "checkpoints")
    tmp = [n for n in os.listdir(d) if n.endswith(".tmp")]
    if tmp:
        problem(f"[{what}] left {tmp} behind")
    for path, digest in before.items():
        if not os.path.exists(path) or sha(path) != digest:
            problem(f"[{what}] {path} was replaced or changed")
        elif not verifies(path):
            problem(f"[{what}] {path} no longer verifies")
    if before and len(problems) == n0:
        print(f"     {len(before)} earlier checkpoint(s) unchanged and verified, no .tmp left")


def file_size_limit(corpus, good_run, work):
    """Resumed from the checkpoint before the newest under RLIMIT_FSIZE of half a checkpoint: the
    rewrite of the newest fails with EFBIG, and the existing file of that name stays whole."""
    run_dir = os.path.join(work, "fsize")
    shutil.copytree(good_run, run_dir)
    d = os.path.join(run_dir, "checkpoints")
    before = {os.path.join(d, n): sha(os.path.join(d, n)) for n in os.listdir(d)}
    size = os.path.getsize(ck(run_dir, STEPS))
    kib = max(size // 2 // 1024, 8)
    # The limit would also hit Open MPI's own shared-memory files, created before charlm ignores
    # SIGXFSZ: a single rank (the same S = 1 x 4 streams) without PMIx's shared-memory store.
    prefix = ["env", "PMIX_MCA_gds=hash", "bash", "-c", f'ulimit -f {kib} && exec "$0" "$@"']
    start = STEPS - EVERY
    p = h.run(train_args(corpus, run_dir, extra=["--batch", str(S), "--resume",
                                                 ck(run_dir, start)]), prefix=prefix)
    if f"resuming from {ck(run_dir, start)}" not in p.stderr:
        problem(f"[file-size limit] did not resume from {ck(run_dir, start)}:\n{p.stderr}")
    print(f"     (checkpoints of {size} bytes, limit {kib} KiB)")
    full_disk_checks(f"file-size limit of {kib} KiB", p, run_dir, ck(run_dir, STEPS), before)


def tmpfs_full(corpus, good_size, work):
    """A run.dir on a tmpfs with room for one checkpoint: the second fails with ENOSPC."""
    mnt = os.path.join(work, "tmpfs")
    os.mkdir(mnt)
    size_kib = good_size * 3 // 2 // 1024
    m = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kib}k", "tmpfs", mnt],
                       capture_output=True, text=True)
    if m.returncode != 0:
        print(f"note [tmpfs] cannot mount a tmpfs here ({m.stderr.strip()}): the full disk is "
              "tested with the file-size limit only")
        return
    try:
        run_dir = os.path.join(mnt, "run")
        p = h.run(train_args(corpus, run_dir, steps=3 * EVERY), np=2)
        first = ck(run_dir, EVERY)
        before = {first: sha(first)} if os.path.exists(first) else {}
        if not before:
            problem(f"[tmpfs] the first checkpoint {first} was not written")
        print(f"     (tmpfs of {size_kib} KiB, checkpoints of {good_size} bytes)")
        full_disk_checks(f"full tmpfs of {size_kib} KiB", p, run_dir, ck(run_dir, 2 * EVERY),
                         before)
    finally:
        subprocess.run(["umount", "-l", mnt], capture_output=True)


def main():
    work = h.tmpdir()
    os.chmod(work, 0o755)  # the unwritable-run.dir cases run as nobody when root
    corpus = os.path.join(work, "corpus.txt")
    text = h.synthetic_text(1200)
    with open(corpus, "w", encoding="utf-8") as f:
        f.write(text)
    good_run = os.path.join(work, "good")
    h.run(train_args(corpus, good_run), np=2, check=True)
    good = ck(good_run, STEPS)
    p = h.run(["inspect", "--verify", good])
    if p.returncode != 0 or "checksums good" not in p.stdout:
        h.fail(f"the good checkpoint {good} does not verify:\n{p.stdout}{p.stderr}")
    want, vocab = check_layout(good, text)
    check_rotation_and_best(good_run)
    readme_example(good, want, vocab)
    moment_names(corpus, good_run, want, work)
    bad_files(corpus, good, work)
    for name in AUTO_CASES:
        resume_auto_skips(corpus, good_run, work, name)
    unwritable(corpus, work)
    file_size_limit(corpus, good_run, work)
    if os.geteuid() == 0:
        tmpfs_full(corpus, os.path.getsize(good), work)
    if problems:
        h.fail(f"{len(problems)} problem(s)")
    print("all checkpoint file checks passed")
    shutil.rmtree(work, ignore_errors=True)  # checkpoints add up; kept when a check fails


if __name__ == "__main__":
    main()
