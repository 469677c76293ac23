"""Every single-bit flip of a checkpoint is detected, or provably changes nothing that is read.

A small LSTM checkpoint (Adam's two buffers, the cell state, both histories) is damaged one bit
at a time, FLIPS distinct bits drawn at random (seeded), and each copy is read as `inspect
--verify` and every resume read it (tests/ckpt_flips.c, one child process per flip): the read
must fail with a message (detected), or succeed with every value it hands back — attributes,
configuration, vocabulary, tensors, moments, state, histories — equal to the original's, bit
for bit (so a resumed run is the same run). None may change what is read unnoticed, and none may
crash, abort or ask for absurd memory (a flipped size attribute aborted with "out of memory").

fletcher32 covers the datasets' chunks only; HDF5's metadata is covered by the checkpoint's
digest (format 3). Negative control: the same checkpoint rewritten as format 2 (no digest, as
charlm wrote it before), with fewer flips, must show flips that change what is read unnoticed —
the test can see what it is looking for."""
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

FLIPS_BIN = os.environ.get("CHARLM_CKPT_FLIPS", "build/tests/ckpt_flips")
FLIPS, CONTROL = 4000, 2000
V3_ATTRS = ("run_id", "train_fingerprint", "val_fingerprint", "digest")


def flips(path, work, seed, count):
    p = subprocess.run([FLIPS_BIN, path, work, str(seed), str(count)], capture_output=True,
                       text=True, timeout=900)
    m = re.search(r"^flips (\d+) detected (\d+) same (\d+) changed (\d+) aborted (\d+) "
                  r"\(by the digest (\d+)\)$", p.stdout, re.M)
    if not m or p.returncode not in (0, 1):
        h.fail(f"ckpt_flips {path}: exit {p.returncode}\n{p.stdout}{p.stderr}")
    return dict(zip(("flips", "detected", "same", "changed", "aborted", "by_digest"),
                    map(int, m.groups()))), p.stdout


def main():
    work = h.tmpdir()
    corpus = h.write_text(work, 600)
    run_dir = os.path.join(work, "run")
    h.run(["train", "--corpus", corpus, "--cell", "lstm", "--layers", "1", "--hidden", "4",
           "--embed", "2", "--batch", "2", "--seq", "4", "--steps", "6", "--epochs", "0",
           "--log-every", "1", "--eval-every", "3", "--set", "checkpoint.every=3",
           "--run-dir", run_dir], check=True)
    ck = os.path.join(run_dir, "checkpoints", "ckpt-00000006.h5")
    size = os.path.getsize(ck)

    counts, out = flips(ck, work, 1, FLIPS)
    bad = [l for l in out.splitlines() if l.startswith(("CHANGED", "ABORTED"))]
    with h5py.File(ck, "r") as f:
        version = int(f.attrs["format_version"])
    print(f"format {version}, {size} bytes ({8 * size} bits): {counts}")
    for line in out.splitlines():
        if line.startswith("detected"):
            print("  " + line)
    if counts["changed"] or counts["aborted"] or counts["flips"] != FLIPS or \
            counts["detected"] + counts["same"] != FLIPS:
        h.problem(f"{counts['changed']} flips changed what is read unnoticed, "
                  f"{counts['aborted']} aborted the reading:\n" + "\n".join(bad))

    control = os.path.join(work, "version2.h5")
    shutil.copy(ck, control)
    with h5py.File(control, "r+") as f:
        for name in V3_ATTRS:
            del f.attrs[name]
        f.attrs["format_version"] = np.int64(2)
    c2, _ = flips(control, work, 2, CONTROL)
    print(f"control, the same checkpoint as format 2 (fletcher32 only): {c2}")
    if not c2["changed"]:
        h.problem("the format-2 control shows no flip that changes what is read: the test "
                  "would not see one in format 3 either")
    if h.problems:
        h.fail(f"{len(h.problems)} problem(s)")
    print(f"ok   all {FLIPS} flips detected ({counts['detected']}, {counts['by_digest']} of them "
          f"by the digest alone) or without effect on what is read ({counts['same']}); format 2 "
          f"lets {c2['changed']} of {CONTROL} through")


if __name__ == "__main__":
    main()
