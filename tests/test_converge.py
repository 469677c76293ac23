"""A real corpus, a run of at most 60 seconds (train.time_limit stops it): the validation loss
must fall below 2.5 nats/char. tinyshakespeare from ../shared/data when present, else Debian's
fortunes (installed by scripts/setup.sh); skipped (77) when neither exists."""
import os
import sys

import harness as h

LIMIT = 45  # seconds of training; start-up and the final validation fit in the rest of 60


def main():
    shared = os.environ.get("CHARLM_SHARED_DATA", "")
    candidates = [os.path.join(shared, "tinyshakespeare.txt")] if shared else []
    candidates.append("/usr/share/games/fortunes")
    corpus = next((c for c in candidates if os.path.exists(c)), None)
    if corpus is None:
        print("no corpus: neither tinyshakespeare.txt nor /usr/share/games/fortunes")
        sys.exit(h.SKIP)
    d = os.path.join(h.tmpdir(), "run")
    p = h.run(["train", "--corpus", corpus, "--cell", "lstm", "--layers", "1", "--hidden", "128",
               "--embed", "32", "--batch", "16", "--seq", "64", "--lr", "0.004",
               "--time-limit", str(LIMIT), "--epochs", "1", "--eval-every", "0",
               "--log-every", "50", "--run-dir", d], np=2, timeout=120, check=True)
    train, val = h.metrics(d)
    elapsed = train[-1]["elapsed_s"]
    print(f"{corpus}: {train[-1]['step']} steps in {elapsed:.1f} s, "
          f"validation loss {val[-1]['val_loss']:.4f} nats/char")
    if elapsed > 60:
        h.fail(f"training took {elapsed:.1f} s (> 60)")
    if not val or not val[-1]["val_loss"] < 2.5:
        h.fail(f"validation loss {val[-1]['val_loss'] if val else None} is not below 2.5")
    if "charlm: sample at step" not in p.stderr or len(p.stdout.strip()) < 100:
        h.fail("no sample printed at the end")


if __name__ == "__main__":
    main()
