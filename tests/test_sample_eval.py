"""`charlm sample` and `charlm eval` on a small model trained here on text with Korean and
accented characters: reproducible bytes, greedy and top-k agreement, Unicode primes, unknown
characters (error naming the code point, or skipped), eval's JSON and its split across ranks, and
samples printed during training (sample.every)."""
import json
import os
import subprocess

import harness as h


def main():
    w = h.tmpdir()
    corpus = h.write_text(w, 40000)
    run = os.path.join(w, "run")
    p = h.run(["train", "--corpus", corpus, "--cell", "gru", "--layers", "2", "--hidden", "48",
               "--embed", "16", "--batch", "8", "--seq", "32", "--steps", "60", "--lr", "0.01",
               "--eval-every", "30", "--set", "sample.every=30", "--set", "sample.length=50",
               "--run-dir", run], np=2, check=True)
    bad = []
    if p.stderr.count("charlm: sample at step") != 3:  # steps 30, 60 and the end
        bad.append("training did not print a sample at each validation:\n" + p.stderr)
    ckpt = os.path.join(run, "checkpoints", "ckpt-00000060.h5")

    def sample(*args, code=0):
        r = h.run(["sample", ckpt] + list(args))
        if r.returncode != code:
            bad.append(f"sample {args}: exit {r.returncode}, expected {code}: {r.stderr}")
        return r

    a = sample("--prime", "한국어 ", "--length", "300", "--seed", "7").stdout
    b = sample("--prime", "한국어 ", "--length", "300", "--seed", "7").stdout
    c = sample("--prime", "한국어 ", "--length", "300", "--seed", "8").stdout
    if a != b:
        bad.append("the same seed gave different text")
    if a == c:
        bad.append("different seeds gave the same 300 characters")
    if not a.startswith("한국어 ") or len(a) < 300:
        bad.append(f"sample does not start with its prime or is short: {a[:40]!r}")
    greedy = sample("--prime", "The ", "--length", "80", "--temperature", "0").stdout
    top1 = sample("--prime", "The ", "--length", "80", "--top-k", "1", "--seed", "3").stdout
    if greedy != top1:
        bad.append(f"top-k 1 differs from greedy:\n{greedy!r}\n{top1!r}")
    nucleus = sample("--prime", "The ", "--length", "80", "--top-p", "1e-6", "--seed", "4").stdout
    if nucleus != greedy:
        bad.append("top-p near 0 differs from greedy")
    two = sample("--length", "40", "--count", "2", "--seed", "5").stdout
    if len(two.split("\n\n")) < 2:
        bad.append(f"--count 2 did not give two samples: {two!r}")
    r = sample("--prime", "café ж", code=1)
    if "U+0436" not in r.stderr or r.stderr.count("charlm: error:") != 1:
        bad.append(f"unknown prime character not named with its code point: {r.stderr!r}")
    r = sample("--prime", "the ж cat", "--unknown", "skip", "--length", "10")
    if not r.stdout.startswith("the ж cat"):
        bad.append(f"--unknown skip: {r.stdout!r}")

    text = os.path.join(w, "eval.txt")
    with open(text, "w", encoding="utf-8") as f:
        f.write(h.synthetic_text(6000, seed=9))
    one = json.loads(h.run(["eval", ckpt, text, "--json"], check=True).stdout)
    two = json.loads(h.run(["eval", ckpt, text, "--json"], np=2, check=True).stdout)
    if one["predictions"] != 5999 or two["predictions"] != 5999 or one["chars"] != 6000:
        bad.append(f"eval counts: {one} {two}")
    if not (abs(one["bpc"] - one["loss"] / 0.6931471805599453) < 1e-6 and
            abs(one["perplexity"] - 2.718281828459045 ** one["loss"]) < 1e-4 * one["perplexity"]):
        bad.append(f"eval bpc/perplexity inconsistent: {one}")
    # two ranks start the second half from a zero state: close, not equal
    if abs(one["loss"] - two["loss"]) > 0.02 * one["loss"]:
        bad.append(f"eval -np 2 far from -np 1: {one['loss']} vs {two['loss']}")
    train_val = h.metrics(run)[1][-1]["val_loss"]
    if not one["loss"] < 3.0:
        bad.append(f"eval loss {one['loss']} on text like the training text is not below 3")
    strange = os.path.join(w, "strange.txt")
    with open(strange, "w", encoding="utf-8") as f:
        f.write("the cat ж sat\n")
    r = h.run(["eval", ckpt, strange])
    if r.returncode != 1 or "U+0436" not in r.stderr:
        bad.append(f"eval unknown character: exit {r.returncode}: {r.stderr!r}")
    r = h.run(["eval", ckpt, strange, "--unknown", "skip", "--json"])
    if r.returncode != 0 or json.loads(r.stdout)["predictions"] != 12:
        bad.append(f"eval --unknown skip: {r.returncode} {r.stdout!r} {r.stderr!r}")
    # too many streams is bad input (exit 1, one line with the bytes), not an abort (exit 70);
    # under a 2 GiB address space, which a sanitizer build cannot start in (it reserves
    # terabytes of shadow memory): there the case is skipped, and says so
    if "libasan" in subprocess.run(["ldd", h.CHARLM], capture_output=True, text=True).stdout:
        print("skipped eval --batch 500000 under ulimit -v: an AddressSanitizer build")
    else:
        r = h.run(["eval", ckpt, text, "--batch", "500000"],
                  prefix=["prlimit", "--as=2147483648", "--"])
        if r.returncode != 1 or "eval: --batch 500000: not enough memory" not in r.stderr or \
                "RLIMIT_AS" not in r.stderr or len(r.stderr.strip().splitlines()) != 1:
            bad.append(f"eval --batch 500000 under a 2 GiB address space: exit {r.returncode}: "
                       f"{r.stderr!r}")
    r = h.run(["eval", ckpt, text, "--batch", "10000000"])
    if r.returncode != 2 or "expected an integer in [1, 1048576]" not in r.stderr:
        bad.append(f"eval --batch 10000000: exit {r.returncode}: {r.stderr!r}")
    print(f"eval: -np 1 {one['loss']:.6f}, -np 2 {two['loss']:.6f} nats/char "
          f"(training validation {train_val:.6f})")
    if bad:
        h.fail("\n".join(bad))


if __name__ == "__main__":
    main()
