"""A stop signal while a corpus loads ends the load: the text loader polls for it at every block
it reads, so SIGTERM to a run that is still scanning a huge corpus exits 5 ("stopped by SIGTERM
during start-up: nothing was written") within moments, not after the whole scan.

The corpus is a sparse file: 8 KiB of text, then zero bytes (U+0000, valid UTF-8) up to 32 GiB.
It costs no disk space, but a full scan decodes 32 GiB — tens of seconds — so an exit within a few
seconds of the signal shows that the scan was cut short. -np 1 (SIGTERM), and -np 2 with SIGUSR1 to
mpiexec, which forwards it to every rank and exits with their status (as the batch script stops
a job; on SIGTERM Open MPI's mpiexec ends the job itself and exits 1): both leave, with one line. (A signal to one rank alone is acted on when the others reach the next agreement of
start-up, after their own scan.)"""
import os
import signal
import subprocess
import time

import harness as h

SIZE = 32 << 30
BOUND_S = 8.0  # from the signal to the exit; a full scan takes several times longer


def one(tmp, np):
    corpus = os.path.join(tmp, "huge.txt")
    run_dir = os.path.join(tmp, f"run-np{np}")
    args = ["train", "--corpus", corpus, "--hidden", "8", "--embed", "4", "--steps", "5",
            "--run-dir", run_dir]
    p = h.Background(h.command(args, np))
    time.sleep(1.5)  # past MPI_Init, into the scan
    if p.poll() is not None:
        out, err = p.communicate()
        h.fail(f"-np {np}: charlm ended before the signal (exit {p.returncode}): {err.strip()}")
    t0 = time.monotonic()
    sig = signal.SIGUSR1 if np else signal.SIGTERM
    os.kill(p.pid, sig)  # charlm itself, or mpiexec, which forwards it to the ranks
    try:
        out, err = p.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        h.fail(f"-np {np}: still running 120 s after {sig.name}")
    dt = time.monotonic() - t0
    lines = [l for l in err.splitlines() if l.startswith("charlm:")]
    print(f"-np {np}: exit {p.returncode} {dt:.2f} s after {sig.name}: {lines}")
    if p.returncode != 5:
        h.problem(f"-np {np}: exit {p.returncode}, expected 5: {err.strip()}")
    if len(lines) != 1 or f"stopped by {sig.name} during start-up" not in lines[0]:
        h.problem(f"-np {np}: expected one 'stopped by {sig.name} during start-up' line: {lines}")
    if dt > BOUND_S:
        h.problem(f"-np {np}: exit {dt:.1f} s after the signal: the load was not cut short")
    if os.path.exists(run_dir):
        h.problem(f"-np {np}: the run directory was created: {os.listdir(run_dir)}")


def main():
    tmp = h.tmpdir()
    corpus = os.path.join(tmp, "huge.txt")
    with open(corpus, "wb") as f:
        f.write((h.synthetic_text(8192).encode("utf-8") * 2)[:8192])
        f.truncate(SIZE)
    one(tmp, None)
    one(tmp, 2)
    if h.problems:
        h.fail(f"{len(h.problems)} check(s) failed")
    print("test_load_stop: ok")


if __name__ == "__main__":
    main()
