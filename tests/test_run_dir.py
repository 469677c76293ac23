"""One training per run.dir: while a run trains, a second one in the same directory (fresh or
--resume auto, directly or under mpiexec) is refused with exit 1 and one line naming the holder's
host and pid, and touches nothing in the directory; after the first is killed with SIGKILL (its
lock file left behind, the kernel's lock released), a new run takes the directory over and says
so; a lock file naming a process of this host that is gone is taken over too; a run that ends
releases the lock (the file goes)."""
import os
import signal
import socket
import subprocess
import time

import harness as h

problems = h.problems
problem = h.problem


def train_args(corpus, run_dir, *extra):
    return ["train", "--corpus", corpus, "--cell", "rnn", "--layers", "1", "--hidden", "16",
            "--embed", "8", "--batch", "2", "--seq", "16", "--log-every", "1",
            "--set", "checkpoint.every=5", "--run-dir", run_dir] + list(extra)


def snapshot(run_dir):
    """The files of run_dir (not checkpoints/, which the first run keeps rotating) with their
    inodes and, but for the growing metrics.jsonl, their content."""
    out = {}
    for name in os.listdir(run_dir):
        path = os.path.join(run_dir, name)
        if os.path.isfile(path):
            with open(path, "rb") as f:
                data = f.read() if name != "metrics.jsonl" else b""
            out[name] = (os.stat(path).st_ino, data)
    return out


def one_error(p, what, want):
    errors = [l for l in p.stderr.splitlines() if l.startswith("charlm: error:")]
    if p.returncode != 1 or len(errors) != 1 or any(x not in errors[0] for x in want):
        problem(f"{what}: exit {p.returncode}, expected 1 with one line naming {want}: "
                f"{p.stderr!r}")
    else:
        print(f"ok   {what}: {errors[0]}")


def start(args, log, np=None):
    """Starts a run in the background, its stderr into the file log (a pipe nobody reads would
    fill and stop it)."""
    with open(log, "w") as err:
        proc = subprocess.Popen(h.command(args, np), stdout=subprocess.DEVNULL, stderr=err,
                                stdin=subprocess.DEVNULL)
    proc.log = log
    return proc


def log_of(proc):
    with open(proc.log) as f:
        return f.read()


def wait_for(path, proc, seconds=60):
    """Waits until path exists (the first run is training); fails if proc ends first."""
    end = time.time() + seconds
    while not os.path.exists(path):
        if proc.poll() is not None:
            h.fail(f"the first run ended (exit {proc.returncode}) before {path} appeared: "
                   f"{log_of(proc)}")
        if time.time() > end:
            h.fail(f"{path} did not appear in {seconds} s")
        time.sleep(0.1)


def holder(run_dir):
    """(host, pid) that run_dir/lock names, or None."""
    try:
        with open(os.path.join(run_dir, "lock")) as f:
            host, pid = f.read().split()
        return host, int(pid)
    except (OSError, ValueError):
        return None


def second_runs(corpus, run_dir, first, label):
    """While `first` trains in run_dir: fresh and --resume auto, direct and -np 2, all refused."""
    want = [f"run.dir {run_dir} is in use", os.path.join(run_dir, "lock")]
    if holder(run_dir):
        want.append("host %s, pid %d" % holder(run_dir))
    else:
        problem(f"[{label}] {run_dir}/lock names no holder while the first run trains")
    for np in (None, 2):
        for extra in ([], ["--resume", "auto"]):
            before = snapshot(run_dir)
            p = h.run(train_args(corpus, run_dir, "--steps", "3", *extra), np=np, timeout=120)
            what = f"[{label}] a second run{' ' + ' '.join(extra) if extra else ''}" \
                   f"{' -np 2' if np else ''}"
            one_error(p, what, want)
            after = snapshot(run_dir)
            # the first run may have written a checkpoint meanwhile: compare what was there
            changed = [k for k in before if after.get(k) != before[k]]
            new = [k for k in after if k not in before]
            if changed or new:
                problem(f"{what} touched {changed + new} in {run_dir}")
            if first.poll() is not None:
                problem(f"[{label}] the first run ended while the second was refused: exit "
                        f"{first.returncode}: {log_of(first)}")


def main():
    w = h.tmpdir()
    corpus = h.write_text(w, 30000)
    myhost = socket.gethostname()

    # a first run, killed with SIGKILL after the second runs were refused
    run_dir = os.path.join(w, "run")
    first = start(train_args(corpus, run_dir, "--steps", "1000000", "--time-limit", "120"),
                  os.path.join(w, "first.log"))
    try:
        wait_for(os.path.join(run_dir, "metrics.jsonl"), first)
        if holder(run_dir) != (myhost, first.pid):
            problem(f"the lock names {holder(run_dir)}, the first run is {myhost} {first.pid}")
        second_runs(corpus, run_dir, first, "first run direct")
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    if not os.path.exists(os.path.join(run_dir, "lock")):
        problem("a SIGKILLed run left no lock file (nothing tests the take-over)")
    p = h.run(train_args(corpus, run_dir, "--steps", "3", "--resume", "auto"), timeout=120)
    note = f"took over {os.path.join(run_dir, 'lock')} from pid {first.pid} on host {myhost}, " \
           "which is gone"
    if p.returncode != 0 or note not in p.stderr:
        problem(f"after SIGKILL: exit {p.returncode}, expected 0 and '{note}': {p.stderr}")
    if os.path.exists(os.path.join(run_dir, "lock")):
        problem("a run that ended left its lock file")

    # a first run under mpiexec -np 2: rank 0 holds the lock
    run_dir = os.path.join(w, "run-np2")
    first = start(train_args(corpus, run_dir, "--steps", "1000000", "--time-limit", "120"),
                  os.path.join(w, "first-np2.log"), np=2)
    try:
        wait_for(os.path.join(run_dir, "metrics.jsonl"), first)
        second_runs(corpus, run_dir, first, "first run -np 2")
    finally:
        first.send_signal(signal.SIGUSR1)  # mpiexec forwards it: the ranks stop, exit 3
        try:
            first.wait(timeout=60)
        except subprocess.TimeoutExpired:
            first.kill()
            first.wait()
            problem("the -np 2 run did not stop on SIGUSR1 within 60 s")
    if first.returncode != 3:
        problem(f"the -np 2 run stopped by SIGUSR1 exited {first.returncode}, expected 3: "
                f"{log_of(first)[-2000:]}")
    if os.path.exists(os.path.join(run_dir, "lock")):
        problem("a run stopped by a signal left its lock file")

    # a lock file that names a process of this host that is gone
    gone = subprocess.Popen(["true"])
    gone.wait()
    run_dir = os.path.join(w, "run-stale")
    os.makedirs(run_dir)
    with open(os.path.join(run_dir, "lock"), "w") as f:
        f.write(f"{myhost} {gone.pid}\n")
    p = h.run(train_args(corpus, run_dir, "--steps", "3"), timeout=120)
    note = f"from pid {gone.pid} on host {myhost}, which is gone"
    if p.returncode != 0 or note not in p.stderr:
        problem(f"a stale lock file: exit {p.returncode}, expected 0 and '{note}': {p.stderr}")

    if problems:
        h.fail(f"{len(problems)} problem(s)")
    print("ok")


if __name__ == "__main__":
    main()
