"""Stopping on signals. SIGTERM sent to one rank (rank 1) of a running `-np 2` job: every
rank stops at the next window boundary, rank 0 writes a checkpoint of the step reached, the job
exits with code 3, and `--resume auto` then ends with the same losses — every train line and every
validation — as an uninterrupted run. The same for SIGINT sent to rank 0, for SIGUSR1
sent to mpiexec itself (Open MPI forwards it to the ranks, as SLURM's --signal does), and for
SIGTERM sent three times in a row (SLURM's step daemon and the batch script each signal): one
checkpoint, exit 3, whatever the repeats (SIGHUP and more repeats: test_faults). SIGKILL of
one rank ends the job non-zero instead of hanging. Divergence (a non-finite loss) exits with code
4 naming the step, after writing a checkpoint of the last good state that verifies and holds only
finite parameters (read with Debian's python3-h5py; that part is skipped without it)."""
import json
import os
import re
import signal
import subprocess
import time

import harness as h

try:
    import h5py
    import numpy
except ImportError:
    h5py = None

N = 400            # steps of the long run: seconds, so the signal lands mid-run
EVAL = 150         # validations at 150, 300 and the end

problems = h.problems
problem = h.problem


def long_args(corpus, run_dir, extra=()):
    return (["train", "--corpus", corpus, "--cell", "lstm", "--layers", "2", "--hidden", "128",
             "--embed", "32", "--dropout", "0.1", "--batch", "4", "--seq", "64", "--steps", str(N),
             "--epochs", "0", "--log-every", "1", "--eval-every", str(EVAL),
             "--set", "checkpoint.every=0", "--run-dir", run_dir] + list(extra))


def children():
    """pid -> list of child pids, from /proc."""
    kids = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(d))
    return kids


def ranks(launcher_pid):
    """{MPI rank: pid} of the charlm processes below launcher_pid (children, or grandchildren
    through an Open MPI daemon), the rank read from OMPI_COMM_WORLD_RANK / PMI_RANK."""
    kids, found, todo = children(), {}, [launcher_pid]
    while todo:
        pid = todo.pop()
        for k in kids.get(pid, []):
            todo.append(k)
            env = h.program_env(k, h.CHARLM)
            if env is not None and h.mpi_rank(env) is not None:
                found[h.mpi_rank(env)] = k
    return found


def last_step(run_dir):
    try:
        with open(os.path.join(run_dir, "metrics.jsonl")) as f:
            lines = f.read().splitlines()
    except OSError:
        return 0
    steps = [json.loads(l)["step"] for l in lines if l.endswith("}")]
    return max(steps, default=0)


def start(args, np):
    return h.Background(h.command(args, np))


def wait_for_step(proc, run_dir, step, timeout=120):
    """Waits until metrics.jsonl shows `step`; False when the job ended or time ran out first."""
    t_end = time.time() + timeout
    while time.time() < t_end:
        if proc.poll() is not None:
            return False
        if last_step(run_dir) >= step:
            return True
        time.sleep(0.02)
    return False


def finish(proc, timeout=300):
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        return None, out, err
    return proc.returncode, out, err


def stop_and_resume(corpus, work, full, how):
    """Starts the long run, stops it with `how` once it is past step 20, checks exit code 3 and
    the checkpoint, resumes with --resume auto and compares with the uninterrupted run `full`."""
    run_dir = os.path.join(work, how.replace(" ", "-"))
    proc = start(long_args(corpus, run_dir), np=2)
    if not wait_for_step(proc, run_dir, 20):
        code, out, err = finish(proc)
        problem(f"[{how}] the job ended (exit {code}) before step 20:\n{err}")
        return
    sig, target = how.split(" to ")
    sig, times = sig.split(" x") if " x" in sig else (sig, "1")
    if target.startswith("rank"):
        pids = ranks(proc.pid)
        if sorted(pids) != [0, 1]:
            proc.kill()
            finish(proc)
            problem(f"[{how}] could not find the two charlm ranks below mpiexec {proc.pid}: {pids}")
            return
    for i in range(int(times)):
        time.sleep(0.001 if i else 0)
        if target.startswith("rank"):
            os.kill(pids[int(target.split()[1])], getattr(signal, sig))
        else:
            proc.send_signal(getattr(signal, sig))
    sent_at = last_step(run_dir)
    code, out, err = finish(proc)
    m = re.search(r"charlm: stopped by a signal at step (\d+); checkpoint (\S+)", err)
    if code != 3:
        problem(f"[{how}] exit code {code}, expected 3 (signal sent at step {sent_at}):\n{err}")
        return
    if not m:
        problem(f"[{how}] no 'stopped by a signal at step S; checkpoint PATH' line:\n{err}")
        return
    stopped = int(m.group(1))
    ck = os.path.join(run_dir, "checkpoints", f"ckpt-{stopped:08d}.h5")
    if not sent_at <= stopped < N:
        problem(f"[{how}] stopped at step {stopped}, signal sent at step {sent_at} of {N}")
    if not os.path.exists(ck) or os.path.realpath(m.group(2)) != os.path.realpath(ck):
        problem(f"[{how}] checkpoint {ck} missing (the message names {m.group(2)})")
        return
    last = last_step(run_dir)
    if last != stopped:
        problem(f"[{how}] metrics.jsonl ends at step {last}, the run stopped at {stopped}")
    v = h.run(["inspect", "--verify", ck])
    if v.returncode != 0 or not re.search(rf"^step\s+{stopped}$", v.stdout, re.M):
        problem(f"[{how}] `charlm inspect --verify {ck}`: exit {v.returncode}\n"
                + v.stdout + v.stderr)
    print(f"ok   [{how}] sent at step {sent_at}, exit code 3, checkpoint at step {stopped}")

    p = h.run(long_args(corpus, run_dir, ["--resume", "auto"]), np=2)
    if p.returncode != 0 or f"resuming from {ck} at step {stopped}" not in p.stderr:
        problem(f"[{how}] resume: exit {p.returncode}, expected to resume from {ck}:\n{p.stderr}")
        return
    (t1, v1), (t2, v2) = h.metrics(full), h.metrics(run_dir)
    if [m["step"] for m in t2] != list(range(1, N + 1)):
        problem(f"[{how}] after resume metrics.jsonl does not hold steps 1..{N} once each")
        return
    diff = [(a["step"], k, a[k], b[k]) for a, b in zip(t1, t2)
            for k in ("train_loss", "grad_norm") if a[k] != b[k]]
    if diff:
        problem(f"[{how}] {len(diff)} train values differ from the uninterrupted run, first: "
                f"{diff[:3]}")
    val1, val2 = [(v["step"], v["val_loss"]) for v in v1], [(v["step"], v["val_loss"]) for v in v2]
    if val1 != val2 or not val1 or val1[-1][0] != N:
        problem(f"[{how}] validations differ: {val1} vs {val2}")
    elif not diff:
        print(f"ok   [{how}] resumed at step {stopped}: all {N} train lines and the "
              f"{len(val1)} validations (the last {val1[-1][1]}) equal the uninterrupted run")


def sigkill(corpus, work):
    run_dir = os.path.join(work, "sigkill")
    proc = start(long_args(corpus, run_dir), np=2)
    if not wait_for_step(proc, run_dir, 20):
        code, _, err = finish(proc)
        problem(f"[SIGKILL] the job ended (exit {code}) before step 20:\n{err}")
        return
    pids = ranks(proc.pid)
    if 1 not in pids:
        proc.kill()
        finish(proc)
        problem(f"[SIGKILL] could not find rank 1 below mpiexec {proc.pid}: {pids}")
        return
    t0 = time.time()
    os.kill(pids[1], signal.SIGKILL)
    # "within seconds": a generous bound on a shared machine; a hang runs into it
    code, _, err = finish(proc, timeout=60)
    took = time.time() - t0
    if code is None:
        problem("[SIGKILL] the job still ran 60 s after one rank was killed (hang)")
        for pid in ranks(proc.pid).values():
            os.kill(pid, signal.SIGKILL)
    elif code == 0:
        problem("[SIGKILL] the job exited 0 after one rank was killed")
    else:
        print(f"ok   [SIGKILL] rank 1 killed at step >= 20: the job ended with exit code {code} "
              f"after {took:.1f} s")
    left = ranks(proc.pid)
    if left:
        problem(f"[SIGKILL] charlm ranks still running after the job ended: {left}")


def divergence(corpus, work):
    # lr 1e38: the decoder weights overflow float within a few steps whatever the BLAS kernels
    # round (at 1e30 saturated tanh units can keep every value finite: seen with OpenBLAS's
    # AVX-512 kernels)
    run_dir = os.path.join(work, "diverge")
    args = ["train", "--corpus", corpus, "--cell", "rnn", "--layers", "1", "--hidden", "32",
            "--embed", "16", "--batch", "2", "--seq", "16", "--steps", "50", "--epochs", "0",
            "--optim", "sgd", "--lr", "1e38", "--set", "optim.clip=0", "--log-every", "1",
            "--set", "checkpoint.every=0", "--run-dir", run_dir]
    p = h.run(args, np=2)
    errors = [l for l in p.stderr.splitlines() if l.startswith("charlm: error:")]
    m = re.search(r"training diverged at step (\d+).* the last good state is in (\S+)$",
                  errors[0] if errors else "")
    if p.returncode != 4 or len(errors) != 1 or not m:
        problem(f"[divergence] exit {p.returncode}, expected 4 and one line 'training diverged "
                f"at step N ... the last good state is in PATH':\n{p.stderr}")
        return
    step, ck = int(m.group(1)), m.group(2)
    good = step - 1
    want = os.path.join(run_dir, "checkpoints", f"ckpt-{good:08d}.h5")
    if os.path.realpath(ck) != os.path.realpath(want):
        problem(f"[divergence] at step {step} the checkpoint should be {want}, the message "
                f"names {ck}")
    train, _ = h.metrics(run_dir)
    if [t["step"] for t in train] != list(range(1, step)):
        problem(f"[divergence] metrics.jsonl should log steps 1..{step - 1}: "
                f"{[t['step'] for t in train]}")
    if not 1 <= step <= 50:
        problem(f"[divergence] diverged at step {step}")
    v = h.run(["inspect", "--verify", want])
    if v.returncode != 0 or not re.search(rf"^step\s+{good}$", v.stdout, re.M):
        problem(f"[divergence] `charlm inspect --verify {want}`: exit {v.returncode}, expected 0 "
                f"and step {good}:\n{v.stdout}{v.stderr}")
    files = sorted(os.listdir(os.path.dirname(want)))
    if files != [os.path.basename(want)]:
        problem(f"[divergence] expected only {os.path.basename(want)} (checkpoint.every=0): "
                f"{files}")
    if h5py is None:
        print("note [divergence] python3-h5py missing: the finiteness of the checkpoint is not "
              "checked")
        return
    with h5py.File(want, "r") as f:
        names = list(f["model"].keys())
        bad = []
        f.visititems(lambda n, o: bad.append(n) if isinstance(o, h5py.Dataset) and
                     o.dtype.kind == "f" and not numpy.isfinite(o[()]).all() else None)
        loss = float(f.attrs["last_train_loss"])
        if not names or bad:
            problem(f"[divergence] non-finite values in {want}: {bad} (of {names})")
        elif step > 1 and not numpy.isfinite(loss):
            problem(f"[divergence] last_train_loss {loss} of {want} is not finite")
        else:
            print(f"ok   [divergence] exit 4 at step {step}; {want} verifies, its {len(names)} "
                  f"parameter tensors (and every other float dataset) are finite")


def main():
    work = h.tmpdir()
    corpus = h.write_text(work, 50000)
    full = os.path.join(work, "full")
    t0 = time.time()
    h.run(long_args(corpus, full), np=2, check=True)
    print(f"uninterrupted run of {N} steps: {time.time() - t0:.1f} s")
    t1, _ = h.metrics(full)
    if not t1[-1]["train_loss"] < t1[0]["train_loss"] - 0.5:
        problem(f"the uninterrupted run did not learn: {t1[0]['train_loss']} -> "
                f"{t1[-1]['train_loss']}")
    stop_and_resume(corpus, work, full, "SIGTERM to rank 1")
    stop_and_resume(corpus, work, full, "SIGINT to rank 0")
    stop_and_resume(corpus, work, full, "SIGUSR1 to mpiexec")
    stop_and_resume(corpus, work, full, "SIGTERM x3 to rank 1")
    sigkill(corpus, work)
    divergence(corpus, work)
    if problems:
        h.fail(f"{len(problems)} problem(s)")
    if h5py is None:
        print("python3-h5py missing: skipped the finiteness check of the divergence checkpoint")
        raise SystemExit(h.SKIP)
    print("all signal checks passed")


if __name__ == "__main__":
    main()
