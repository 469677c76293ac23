"""A real corpus, a run of at most 60 seconds (train.time_limit stops it): the validation loss
must fall below 2.5 nats/char. The corpus is tinyshakespeare, shipped in tests/data."""
import os

import harness as h

LIMIT = 45  # seconds of training; start-up and the final validation fit in the rest of 60
CORPUS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "tinyshakespeare.txt")


def main():
    d = os.path.join(h.tmpdir(), "run")
    p = h.run(["train", "--corpus", CORPUS, "--cell", "lstm", "--layers", "1", "--hidden", "128",
               "--embed", "32", "--batch", "16", "--seq", "64", "--lr", "0.004",
               "--time-limit", str(LIMIT), "--epochs", "1", "--eval-every", "0",
               "--log-every", "50", "--run-dir", d], np=2, timeout=120, check=True)
    train, val = h.metrics(d)
    elapsed = train[-1]["elapsed_s"]
    print(f"{os.path.basename(CORPUS)}: {train[-1]['step']} steps in {elapsed:.1f} s, "
          f"validation loss {val[-1]['val_loss']:.4f} nats/char")
    if elapsed > 60:
        h.fail(f"training took {elapsed:.1f} s (> 60)")
    if not val or not val[-1]["val_loss"] < 2.5:
        h.fail(f"validation loss {val[-1]['val_loss'] if val else None} is not below 2.5")
    if "charlm: sample at step" not in p.stderr or len(p.stdout.strip()) < 100:
        h.fail("no sample printed at the end")


if __name__ == "__main__":
    main()
