"""charlm prepare survives what a cluster does to a long write, as checkpoints do: a full disk (a
small tmpfs, at several sizes so that the space runs out at the start, in the middle and at the
end), a file-size limit (RLIMIT_FSIZE, where the kernel would send SIGXFSZ), and a stop signal
(TERM, INT, HUP) at a random moment. Each gives one line naming the file and the cause, exit 1
(5 for a signal), no OUT.h5.tmp left, the input untouched, and an earlier prepared corpus at OUT
kept as it was; the sizes that fit give a corpus that trains.

The whole test runs in a private mount namespace (it re-runs itself under unshare -m), so that its
tmpfs mounts go with it whatever happens."""
import errno
import hashlib
import os
import random
import resource
import signal
import subprocess
import sys
import time

import harness as h

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "tinyshakespeare.txt")
INSIDE = "CHARLM_TEST_PREPARE_FAULTS_INSIDE"


def sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def copies(work, n, name):
    path = os.path.join(work, name)
    with open(DATA, "rb") as src, open(path, "wb") as out:
        text = src.read()
        for _ in range(n):
            out.write(text)
    return path


def leftovers(directory):
    return [f for f in os.listdir(directory) if f.endswith(".tmp")]


def check_failed(p, what, out, code, needles, text, text_sha, old_sha=None):
    """p failed as it should: exit code, one error line holding every needle, no .tmp, the input
    and an earlier OUT (old_sha; None: there was none) as they were."""
    n = len(h.problems)
    errors = [l for l in p.stderr.splitlines() if l.startswith("charlm: error:")]
    if p.returncode != code or len(errors) != 1 or not all(s in errors[0] for s in needles):
        h.problem(f"{what}: exit {p.returncode}, expected {code} and one error line with "
                  f"{needles}: {p.stderr[-2000:]!r}")
    if p.returncode < 0 or "Segmentation fault" in p.stderr:
        h.problem(f"{what}: crashed: {p.stderr[-2000:]!r}")
    if leftovers(os.path.dirname(out)):
        h.problem(f"{what}: left {leftovers(os.path.dirname(out))}")
    if sha(text) != text_sha:
        h.problem(f"{what}: the input {text} changed")
    if old_sha is None and os.path.exists(out):
        h.problem(f"{what}: {out} exists after the failure")
    if old_sha is not None and (not os.path.exists(out) or sha(out) != old_sha):
        h.problem(f"{what}: the earlier prepared corpus {out} was not kept as it was")
    if len(h.problems) == n:
        print(f"ok   {what}: {errors[0]}")


def trains(corpus, work, what):
    p = h.run(["train", "--corpus", corpus, "--hidden", "8", "--embed", "8", "--batch", "2",
               "--seq", "8", "--steps", "2", "--eval-every", "0",
               "--run-dir", os.path.join(work, "run-" + str(random.random()))])
    if p.returncode != 0:
        h.problem(f"{what}: the prepared corpus does not train: {p.stderr[-1000:]!r}")


def full_disk(work, text):
    """tmpfs of several sizes: from room for nothing to room for all."""
    full = os.path.join(work, "full.h5")
    h.run(["prepare", text, "-o", full], check=True)
    size_kib = os.path.getsize(full) // 1024
    text_sha = sha(text)
    failures = replaced = 0
    for frac in (0.05, 0.3, 0.6, 0.9, 1.0, 1.3, 2.5, 4.0, 8.0):
        kib = max(64, int(size_kib * frac))
        mnt = os.path.join(work, f"tmpfs-{kib}")
        os.makedirs(mnt)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={kib}k", "tmpfs", mnt], check=True)
        try:
            out = os.path.join(mnt, "out.h5")
            p = h.run(["prepare", text, "-o", out])
            what = f"full disk: a tmpfs of {kib} KiB for a corpus of {size_kib} KiB"
            if p.returncode == 0:
                if leftovers(mnt):
                    h.problem(f"{what}: left {leftovers(mnt)}")
                trains(out, work, what)
                print(f"ok   {what}: prepared")
                # replacing it where there is no room for a second copy keeps the first
                if frac < 3:
                    replaced += 1
                    old = sha(out)
                    p = h.run(["prepare", text, "-o", out])
                    check_failed(p, what + ", replacing the corpus it holds", out, 1,
                                 [out, "No space left on device", "was not written"], text,
                                 text_sha, old)
            else:
                failures += 1
                check_failed(p, what, out, 1, [out, "No space left on device"], text, text_sha)
        finally:
            subprocess.run(["umount", mnt], check=True)
    if failures == 0 or replaced == 0:
        h.problem(f"full disk: {failures} tmpfs sizes made prepare fail, {replaced} kept room "
                  "for a corpus but not for a second: both must happen")


def file_size_limit(work, text):
    text_sha = sha(text)
    full = os.path.join(work, "full.h5")
    size = os.path.getsize(full)
    for frac in (0.01, 0.5, 0.95):
        limit = int(size * frac)
        out = os.path.join(work, f"limited-{frac}.h5")

        def limit_fsize(limit=limit):
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
        # PMIx's shared-memory store cannot start under a small file-size limit: Open MPI's
        # singleton start-up would fail before charlm runs
        env = dict(os.environ, PMIX_MCA_gds="hash")
        p = subprocess.run(h.command(["prepare", text, "-o", out]), capture_output=True,
                           text=True, timeout=300, env=env, preexec_fn=limit_fsize,
                           stdin=subprocess.DEVNULL)
        check_failed(p, f"RLIMIT_FSIZE of {limit} bytes for a corpus of {size}", out, 1,
                     [out, os.strerror(errno.EFBIG)], text, text_sha)


def signals(work):
    """A stop signal at a random moment of a prepare of 45 MB (about 3 s here)."""
    big = copies(work, 40, "big.txt")
    big_sha = sha(big)
    rng = random.Random(int(os.environ.get("CHARLM_TEST_SEED", "0")) or None)
    stopped = 0
    for i in range(8):
        sig = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)[i % 3]
        out = os.path.join(work, f"stopped-{i}.h5")
        delay = rng.uniform(0, 1.5) if i % 2 else rng.uniform(0, 0.01)
        q = h.Background(h.command(["prepare", big, "-o", out]))
        # the delay counts from charlm's main (before it the loader runs, and a signal kills):
        # a short one lands in the re-execution that picks OpenBLAS's kernels, or in MPI_Init
        t0 = time.time()
        while not h.takes_stop_signals(q.pid) and q.poll() is None and time.time() < t0 + 30:
            time.sleep(0.0005)
        time.sleep(delay)
        q.send_signal(sig)
        if sig == signal.SIGINT:
            q.send_signal(sig)  # Ctrl-C twice
        stdout, stderr = q.communicate(timeout=300)
        p = subprocess.CompletedProcess(q.args, q.returncode, stdout, stderr)
        what = f"{signal.Signals(sig).name} after {delay:.2f} s"
        if p.returncode == 0:
            print(f"note {what}: prepare had finished")
            os.remove(out)
            continue
        stopped += 1
        check_failed(p, what, out, 5, [f"stopped by {signal.Signals(sig).name}", out], big,
                     big_sha)
    if stopped == 0:
        h.problem("signals: no signal arrived while prepare ran")


def main():
    if os.environ.get(INSIDE) != "1":
        if os.geteuid() != 0 or subprocess.run(["unshare", "-m", "true"],
                                               capture_output=True).returncode != 0:
            print("test_prepare_faults: needs root and a private mount namespace (unshare -m) "
                  "for its tmpfs: skipped")
            sys.exit(h.SKIP)
        p = subprocess.run(["unshare", "-m", "--propagation", "private", sys.executable,
                            os.path.abspath(__file__)], env=dict(os.environ, **{INSIDE: "1"}))
        sys.exit(p.returncode)
    work = h.tmpdir()
    text = copies(work, 2, "text.txt")
    full_disk(work, text)
    file_size_limit(work, text)
    signals(work)
    if h.problems:
        h.fail(f"{len(h.problems)} check(s) failed")
    print("test_prepare_faults: ok")


if __name__ == "__main__":
    main()
