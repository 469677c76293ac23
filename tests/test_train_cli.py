"""The smaller promises of `charlm train` and `charlm sample`: the end-of-run sample follows
sample.length and sample.temperature (at temperature 0 it is the greedy text `charlm sample` gives
from the last checkpoint); `charlm sample --seed` takes an integer exactly (2^53 + 1 is not 2^53,
the whole uint64 range is accepted) and refuses a fraction, an exponent or a sign with exit 2 and
one line; metrics.jsonl is kept aside as metrics.jsonl.N by a fresh start and cut back to the
checkpoint's step by a resume from an earlier checkpoint; a resume with another optimizer names
optim.kind with both kinds, one on a corpus whose vocabulary has as many characters as the
checkpoint's but not the same names the first that differs with its code point; `charlm sample`
refuses a fractional --top-k, --length or --count, and an invalid UTF-8 --prime-file is named with
its byte offset; several --config files are applied in order, a later one's keys winning."""
import json
import os

import harness as h

problems = h.problems
problem = h.problem


def train_args(corpus, run_dir, *extra):
    return ["train", "--corpus", corpus, "--cell", "gru", "--layers", "1", "--hidden", "24",
            "--embed", "8", "--batch", "4", "--seq", "16", "--steps", "20", "--log-every", "1",
            "--eval-every", "10", "--set", "checkpoint.every=10", "--run-dir", run_dir] + \
        list(extra)


def ckpt(run_dir, step):
    return os.path.join(run_dir, "checkpoints", f"ckpt-{step:08d}.h5")


def end_sample(corpus, w):
    run_dir = os.path.join(w, "sample-run")
    p = h.run(train_args(corpus, run_dir, "--set", "sample.length=37", "--set",
                         "sample.temperature=0"), check=True)
    if "charlm: sample at step 20 (temperature 0):" not in p.stderr:
        problem("the end-of-run sample does not announce temperature 0:\n" + p.stderr)
    text = p.stdout[:-1] if p.stdout.endswith("\n") else p.stdout
    if len(text) != 37:
        problem(f"the end-of-run sample has {len(text)} characters, sample.length is 37: {text!r}")
    greedy = h.run(["sample", ckpt(run_dir, 20), "--length", "37", "--temperature", "0"],
                   check=True).stdout
    if greedy != p.stdout:
        problem(f"the end-of-run sample at temperature 0 is not the greedy sample of the last "
                f"checkpoint:\n{p.stdout!r}\n{greedy!r}")
    return run_dir


def seeds(ck):
    def sample(seed):
        return h.run(["sample", ck, "--length", "200", "--seed", seed])

    a, b = sample(str(2 ** 53)), sample(str(2 ** 53 + 1))
    if a.returncode or b.returncode:
        problem(f"--seed 2^53 / 2^53+1: exit {a.returncode} / {b.returncode}: {a.stderr}{b.stderr}")
    elif a.stdout == b.stdout:
        problem("--seed 2^53 and 2^53+1 gave the same text (the seed went through a double)")
    top = sample(str(2 ** 64 - 1))
    if top.returncode != 0:
        problem(f"--seed 2^64-1: exit {top.returncode}: {top.stderr}")
    for bad in ("1.5", "1e3", "-1", "+3", "", "0x10", str(2 ** 64), "7 "):
        r = sample(bad)
        errors = [l for l in r.stderr.splitlines() if l.startswith("charlm: error:")]
        if r.returncode != 2 or len(errors) != 1 or "--seed" not in errors[0] or \
                "integer" not in errors[0]:
            problem(f"--seed {bad!r}: exit {r.returncode}, expected 2 with one line naming "
                    f"--seed and an integer: {r.stderr!r}")


def one_error(p, what, code, want):
    errors = [l for l in p.stderr.splitlines() if l.startswith("charlm: error:")]
    if p.returncode != code or len(errors) != 1 or any(x not in errors[0] for x in want):
        problem(f"{what}: exit {p.returncode}, expected {code} with one line naming {want}: "
                f"{p.stderr!r}")


def sample_options(ck, w):
    for opt in ("--top-k", "--length", "--count"):
        for bad in ("1.5", "2e1"):
            one_error(h.run(["sample", ck, opt, bad]), f"sample {opt} {bad}", 2,
                      [opt, bad, "integer"])
    prime = os.path.join(w, "prime.txt")
    with open(prime, "wb") as f:
        f.write(b"the \xc3 cat")
    one_error(h.run(["sample", ck, "--prime-file", prime]), "an invalid UTF-8 --prime-file", 1,
              ["--prime-file " + prime, "invalid UTF-8 at byte 4"])


def vocabulary(corpus, ck, w):
    # as many distinct characters as the checkpoint's corpus, one of them another
    text = open(corpus, encoding="utf-8").read()
    other = os.path.join(w, "other.txt")
    with open(other, "w", encoding="utf-8") as f:
        f.write(text.replace("w", "@"))
    p = h.run(train_args(other, os.path.join(w, "vocab-run"), "--resume", ck))
    one_error(p, "a resume on a vocabulary of the same size", 1,
              ["differs from the checkpoint's", "'@' (U+0040) is in the corpus only"])
    with open(other, "w", encoding="utf-8") as f:
        f.write(text.replace("w", "a"))
    p = h.run(train_args(other, os.path.join(w, "vocab-run"), "--resume", ck))
    one_error(p, "a resume on a smaller vocabulary", 1, ["'w' (U+0077) is in the checkpoint only"])


def configs(corpus, w):
    a, b = os.path.join(w, "a.ini"), os.path.join(w, "b.ini")
    with open(a, "w") as f:
        f.write("[model]\nhidden = 20\nembed = 6\n[train]\nseq = 12\n")
    with open(b, "w") as f:
        f.write("[model]\nhidden = 28\n")
    run_dir = os.path.join(w, "configs-run")
    h.run(["train", "--corpus", corpus, "--config", a, "-c", b, "--set", "train.seq=10",
           "--steps", "2", "--layers", "1", "--batch", "2", "--run-dir", run_dir], check=True)
    text = open(os.path.join(run_dir, "config.ini")).read()
    for want in ("hidden = 28\n", "embed = 6\n", "seq = 10\n"):
        if want not in text:
            problem(f"--config a.ini -c b.ini --set train.seq=10: config.ini lacks {want!r}")


def metrics_file(corpus, w):
    run_dir = os.path.join(w, "metrics-run")
    os.makedirs(run_dir)
    for name, text in (("metrics.jsonl", "old\n"), ("metrics.jsonl.1", "older\n")):
        with open(os.path.join(run_dir, name), "w") as f:
            f.write(text)
    h.run(train_args(corpus, run_dir), check=True)
    with open(os.path.join(run_dir, "metrics.jsonl.2")) as f:
        if f.read() != "old\n":
            problem("a fresh start did not keep the earlier metrics.jsonl as metrics.jsonl.2")
    with open(os.path.join(run_dir, "metrics.jsonl.1")) as f:
        if f.read() != "older\n":
            problem("a fresh start touched metrics.jsonl.1")
    first = open(os.path.join(run_dir, "metrics.jsonl")).read()
    # resuming from step 10 drops lines 11..20 and the summary, and writes them again
    h.run(train_args(corpus, run_dir, "--resume", ckpt(run_dir, 10)), check=True)
    train, val = h.metrics(run_dir)
    if [m["step"] for m in train] != list(range(1, 21)) or [m["step"] for m in val] != [10, 20]:
        problem(f"after a resume at 10: train steps {[m['step'] for m in train]}, validations "
                f"{[m['step'] for m in val]}")
    lines = open(os.path.join(run_dir, "metrics.jsonl")).read().splitlines()
    if sum('"summary":true' in l for l in lines) != 1:
        problem("after a resume at 10 metrics.jsonl does not hold exactly one summary")
    a = [l for l in first.splitlines() if '"summary"' not in l]
    b = [l for l in lines if '"summary"' not in l]
    # everything but the clocks (speed and wall time, on train lines and validations)
    strip = lambda ls: [{k: v for k, v in json.loads(l).items()
                         if k not in ("chars_per_s", "elapsed_s")} for l in ls]
    if strip(a) != strip(b):
        problem("the resumed run's metrics differ from the uninterrupted run's")
    if os.path.exists(os.path.join(run_dir, "metrics.jsonl.3")):
        problem("a resume moved metrics.jsonl aside")


def optim_kind(corpus, ck, w):
    run_dir = os.path.join(w, "optim-run")
    p = h.run(train_args(corpus, run_dir, "--optim", "sgd", "--resume", ck))
    want = "optim.kind = sgd differs from the checkpoint's adam"
    if p.returncode != 1 or want not in p.stderr:
        problem(f"resume with another optimizer: exit {p.returncode}, expected 1 and "
                f"'{want}': {p.stderr!r}")


def main():
    w = h.tmpdir()
    corpus = h.write_text(w, 20000)
    run_dir = end_sample(corpus, w)
    seeds(ckpt(run_dir, 20))
    metrics_file(corpus, w)
    optim_kind(corpus, ckpt(run_dir, 20), w)
    sample_options(ckpt(run_dir, 20), w)
    vocabulary(corpus, ckpt(run_dir, 20), w)
    configs(corpus, w)
    if problems:
        h.fail("\n".join(problems))
    print("ok")


if __name__ == "__main__":
    main()
