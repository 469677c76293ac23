"""charlm under a real SLURM: scripts/slurm/local-cluster.sh starts a one-node cluster
on this machine, scripts/slurm/charlm.sbatch runs the training, and

  A. a job stopped mid-run by `scancel --signal=USR1 --batch`, then preempted by a job of a
     higher-priority partition (ranks launched with srun)
  B. a job that reaches its --time limit (1 minute, --signal=B:USR1@30; ranks launched with
     mpirun)

must each checkpoint, requeue itself, resume from that checkpoint and finish with exactly the
validation losses of the same training run uninterrupted with mpiexec.

Skipped (77) when SLURM or munge is not installed (Debian: apt-get install slurm-wlm munge) or
when not running as root (the local cluster's slurmd runs jobs as root). Fails when charlm has
no --resume. The cluster lives in a temporary directory on free loopback ports and is stopped
at the end, also on failure. Takes about 4 minutes: the run is sized to about RUN_S seconds of
training on this machine (measured first), run three times, plus SLURM's requeue delays."""
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time

import harness as h

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLUSTER = os.path.join(ROOT, "scripts", "slurm", "local-cluster.sh")
SBATCH = os.path.join(ROOT, "scripts", "slurm", "charlm.sbatch")
RANKS = 2
RUN_S = 40  # seconds of training per run
TIME_LIMIT_LEAD = 30  # job B: --time=1 --signal=B:USR1@30 (SLURM checks limits every 30 s)
JOB_TIMEOUT = 240  # seconds any one job may take, requeues included

CONFIG = """\
; written by tests/test_slurm.py
[data]
corpus = {corpus}
val_frac = 0.05
[model]
cell = lstm
layers = 1
hidden = 128
embed = 32
[train]
batch = 8
seq = 32
steps = {steps}
epochs = 0
seed = 7
[optim]
kind = adam
lr = 0.003
[eval]
every = 500
[log]
every = 50
[checkpoint]
; only at the end and on signals, and all of them kept: every checkpoint but the last is one
; that a signal asked for
every = 0
keep = 50
[run]
dir = {run_dir}
"""


def sh(cmd, check=True, timeout=60):
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                       stdin=subprocess.DEVNULL)
    if check and p.returncode != 0:
        sys.stderr.write(p.stdout + p.stderr)
        h.fail(f"{' '.join(cmd)} exited {p.returncode}")
    return p


def free_port_pair():
    """A port p with p and p+1 both free on 127.0.0.1 (slurmctld, slurmd), from a random start
    so that test runs at the same time rarely try the same ones."""
    first = 16817 + 2 * random.randrange(500)
    for p in list(range(first, 17817, 2)) + list(range(16817, first, 2)):
        ok = True
        for port in (p, p + 1):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                ok = False
            finally:
                s.close()
        if ok:
            return p
    h.fail("no free pair of ports for slurmctld and slurmd")


def job_state(job):
    """The job's state (PENDING, RUNNING, COMPLETED, ...), or None once SLURM has forgotten it."""
    p = sh(["squeue", "-h", "-t", "all", "-j", str(job), "-o", "%T"], check=False)
    st = p.stdout.strip()
    return st.split()[0] if p.returncode == 0 and st else None


FINAL = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY",
         "BOOT_FAIL", "DEADLINE")
SBATCH_END = re.compile(r"^charlm\.sbatch: (training finished|charlm exit [124]|charlm crashed|"
                        r"not requeued|scontrol requeue .* failed)", re.M)


def read(path):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return ""


def wait_job(job, out, deadline):
    """Waits until the job has ended for good (not just one run of it before a requeue)."""
    while time.time() < deadline:
        st = job_state(job)
        if (st is None or st in FINAL) and SBATCH_END.search(read(out)):
            return st
        if st in FINAL and st != "COMPLETED":
            return st
        time.sleep(0.5)
    h.fail(f"job {job} did not finish within {JOB_TIMEOUT} s (state {job_state(job)})")


def submit(tmp, name, args, env=None):
    out = os.path.join(tmp, f"charlm-{name}.out")
    e = dict(os.environ)
    e.update(env or {})
    p = subprocess.run(["sbatch", "--parsable", f"--job-name={name}", f"--chdir={tmp}",
                        f"--output={out}", f"--ntasks-per-node={RANKS}", "--cpus-per-task=1"] +
                       args, capture_output=True, text=True, env=e, timeout=60,
                       stdin=subprocess.DEVNULL)
    if p.returncode != 0:
        h.fail(f"sbatch exited {p.returncode}: {p.stdout}{p.stderr}")
    return int(p.stdout.strip().split(";")[0]), out


def val_records(run_dir):
    return [(m["step"], m["val_loss"]) for m in h.metrics(run_dir)[1]]


def last_train_step(run_dir):
    try:
        train, _ = h.metrics(run_dir)
    except (FileNotFoundError, json.JSONDecodeError):
        return 0
    return train[-1]["step"] if train else 0


def check_job(name, out, run_dir, steps, ref, strict, min_stops=1):
    """The job's output and run directory show: at least one signal checkpoint, a requeue and a
    resume from exactly that checkpoint after each, and the end of the training, with the
    validation losses of the uninterrupted run."""
    text = read(out)
    starts = [int(x) for x in re.findall(r"^charlm\.sbatch: start \d+ of job \S+ "
                                         r"\(SLURM_RESTART_COUNT=(\d+)\)", text, re.M)]
    stops = [int(x) for x in re.findall(r"^charlm: stopped by a signal at step (\d+); checkpoint",
                                        text, re.M)]
    resumes = re.findall(r"^charlm: resuming from (\S+) at step (\d+)", text, re.M)
    print(f"{name}: {len(starts)} start(s), signal checkpoints at steps {stops}, resumed at "
          f"steps {[int(s) for _, s in resumes]}")
    events = re.findall(r"^charlm\.sbatch: (start \d+|got SIG\w+|training finished).*? at "
                        r"\d{4}-\d\d-\d\dT(\d\d:\d\d:\d\d)", text, re.M)
    print(f"{name}: " + ", ".join(f"{e} {t}" for e, t in events))
    if len(stops) < min_stops:
        h.fail(f"{name}: charlm stopped at a signal with a checkpoint {len(stops)} time(s), "
               f"expected at least {min_stops}")
    if "charlm.sbatch: got SIGUSR1" not in text:
        h.fail(f"{name}: the batch script never received SIGUSR1")
    if starts != list(range(len(starts))) or len(starts) < 2:
        h.fail(f"{name}: expected starts with SLURM_RESTART_COUNT 0, 1, ...; got {starts}")
    if text.count("charlm.sbatch: requeueing job") != len(starts) - 1:
        h.fail(f"{name}: {len(starts)} starts but "
               f"{text.count('charlm.sbatch: requeueing job')} requeues")
    for k in stops:
        if not 0 < k < steps:
            h.fail(f"{name}: signal checkpoint at step {k} is not inside the run (1..{steps - 1})")
        ck = os.path.join(run_dir, "checkpoints", f"ckpt-{k:08d}.h5")
        if not os.path.exists(ck):
            h.fail(f"{name}: {ck} does not exist")
        if not any(int(s) == k and os.path.samefile(p, ck) for p, s in resumes if
                   os.path.exists(p)):
            h.fail(f"{name}: no start resumed from {ck}")
    if "charlm.sbatch: training finished (exit 0)" not in text:
        h.fail(f"{name}: the job did not finish training")
    # slurmstepd's "*** JOB n ON node CANCELLED AT time DUE TO JOB REQUEUE ***" follows each
    # requeue; any other cancellation (time limit, preemption, scancel) killed a run
    kills = [k for k in re.findall(r"\*\*\* JOB \S+ ON \S+ CANCELLED AT \S+( DUE TO [A-Z ]*[A-Z])?",
                                   text) if k != " DUE TO JOB REQUEUE"]
    if kills:
        h.fail(f"{name}: SLURM killed a run of the job:{''.join(kills) or ' cancelled'}")
    # a run that ended otherwise than with exit 3 after a signal (killed before charlm took
    # it, at start-up): an error where the signals come mid-run, possible at a time limit
    early = re.findall(r"^charlm\.sbatch: charlm ended with exit \d+ after SIG\w+", text, re.M)
    if early and strict:
        h.fail(f"{name}: {early[0]}: the ranks did not checkpoint and exit 3")
    elif early:
        print(f"{name}: note: {early[0]} (a signal during start-up; requeued all the same)")
    got = val_records(run_dir)
    if not got or got[-1][0] != steps:
        h.fail(f"{name}: the last validation is {got[-1] if got else None}, not at step {steps}")
    if got != ref:
        diff = [(a, b) for a, b in zip(got, ref) if a != b][:3]
        h.fail(f"{name}: validation losses differ from the uninterrupted run: {diff} "
               f"({len(got)} vs {len(ref)} records)")
    print(f"{name}: final validation loss {got[-1][1]} at step {steps}, identical to the "
          f"uninterrupted run ({len(got)} validations compared)")


def diagnostics(tmp, state):
    for name in sorted(os.listdir(tmp)):
        if name.endswith(".out"):
            sys.stderr.write(f"==== {name}\n{read(os.path.join(tmp, name))[-6000:]}\n")
    for log in ("slurmctld.log", "slurmd.log"):
        sys.stderr.write(f"==== {log} (tail)\n")
        sys.stderr.write("".join(read(os.path.join(state, "log", log)).splitlines(True)[-40:]))


def main():
    h.skip_without_slurm()
    if os.geteuid() != 0:
        print("not root: the local one-node SLURM cluster runs its daemons as root")
        sys.exit(h.SKIP)
    if len(os.sched_getaffinity(0)) < RANKS:
        print(f"fewer than {RANKS} CPUs for a {RANKS}-rank job")
        sys.exit(h.SKIP)
    helptext = h.run(["--help"]).stdout + h.run(["--help"]).stderr
    if "--resume" not in helptext:
        h.fail("charlm has no --resume (charlm --help): the batch script needs "
               "`charlm train --resume auto`")

    os.environ.setdefault("MPIEXEC", "mpiexec")
    os.environ.setdefault("MPIEXEC_NUMPROC_FLAG", "-n")
    # the batch job gets OPENBLAS_NUM_THREADS = cpus-per-task = 1: the reference run too
    os.environ["OPENBLAS_NUM_THREADS"] = "1"
    for k in [k for k in os.environ if k.startswith("SLURM_")]:
        del os.environ[k]  # not the settings of a cluster this test may itself run under
    charlm = os.path.abspath(h.CHARLM)

    tmp = h.tmpdir()
    state = os.path.join(tmp, "slurm")
    os.environ["CHARLM_SLURM_DIR"] = state
    os.environ["SLURM_CONF"] = os.path.join(state, "slurm.conf")
    # CTest's timeout and Ctrl-C: stop the cluster on the way out
    signal.signal(signal.SIGTERM, lambda *_: h.fail("stopped by SIGTERM"))
    t_start = time.time()
    ok = False
    try:
        corpus = os.path.join(tmp, "corpus.txt")
        with open(corpus, "w") as f:
            f.write(h.synthetic_text(200_000, seed=6))

        def config(path, steps, run_dir):
            with open(path, "w") as f:
                f.write(CONFIG.format(corpus=corpus, steps=steps, run_dir=run_dir))
            return path

        # size the run to about RUN_S seconds of training here: the rate over 5 s of training
        # after the first logged step (start-up and warm-up left out; validations counted)
        cal = config(os.path.join(tmp, "cal.ini"), 0, os.path.join(tmp, "cal"))
        h.run(["train", "--config", cal, "--time-limit", "5"], np=RANKS, timeout=300, check=True)
        train, _ = h.metrics(os.path.join(tmp, "cal"))
        if len(train) < 3:
            h.fail(f"calibration: {len(train)} logged steps in 5 s")
        steps_per_s = ((train[-1]["step"] - train[0]["step"]) /
                       (train[-1]["elapsed_s"] - train[0]["elapsed_s"]))
        steps = max(1000, int(RUN_S * steps_per_s) // 10 * 10)
        print(f"{steps_per_s:.0f} steps/s here: runs of {steps} steps")

        def reference(steps):
            """The uninterrupted run's validation records, and its configuration file."""
            ini = config(os.path.join(tmp, f"run-{steps}.ini"), steps, os.path.join(tmp, "unused"))
            ref_dir = os.path.join(tmp, f"reference-{steps}")
            t = time.time()
            h.run(["train", "--config", ini, "--run-dir", ref_dir], np=RANKS, timeout=600,
                  check=True)
            ref = val_records(ref_dir)
            print(f"uninterrupted run of {steps} steps: {time.time() - t:.0f} s, final "
                  f"validation loss {ref[-1][1]}")
            return ini, ref

        ini, ref = reference(steps)
        for attempt in range(5):
            # ports chosen now: another cluster (another test run) may have taken some since
            os.environ["CHARLM_SLURM_PORT"] = str(free_port_pair())
            p = sh([CLUSTER, "start"], check=False, timeout=120)
            if p.returncode == 0 or "in use" not in p.stdout + p.stderr or attempt == 4:
                break
            time.sleep(1)
        if p.returncode != 0:
            sys.stderr.write(p.stdout + p.stderr)
            h.fail(f"{CLUSTER} start exited {p.returncode}")
        print(p.stdout.strip())
        job_env = {"CHARLM_BIN": charlm, "CHARLM_MAX_REQUEUES": "10"}

        # A: stopped twice mid-run; ranks launched with srun. First by a signal to the batch
        # script (scancel --signal=USR1 --batch), then preempted by a job of the partition
        # urgent (SLURM sends the job's --signal, USR1, at once: preempt_send_user_signal)
        run_a = os.path.join(tmp, "run-a")
        t = time.time()
        job, out = submit(tmp, "preempt", [SBATCH, ini, "--run-dir", run_a],
                          dict(job_env, CHARLM_LAUNCHER="srun"))
        deadline = time.time() + JOB_TIMEOUT

        def wait_step(step):
            while last_train_step(run_a) < step:
                if time.time() > deadline or job_state(job) in FINAL:
                    h.fail(f"job {job} did not get to step {step} (state {job_state(job)})")
                time.sleep(0.2)
            return last_train_step(run_a)

        at = wait_step(steps // 4)
        sh(["scancel", "--signal=USR1", "--batch", str(job)])
        print(f"A: job {job}: scancel --signal=USR1 --batch at step ~{at}")
        at = wait_step(steps // 2)  # past the first stop: the job runs again
        urgent = sh(["sbatch", "--parsable", "--partition=urgent", f"--ntasks={RANKS}",
                     f"--output={os.path.join(tmp, 'urgent.out')}", "--wrap", "true"])
        print(f"A: job {job}: preempted by job {urgent.stdout.strip()} (partition urgent) at "
              f"step ~{at}")
        st = wait_job(job, out, deadline)
        print(f"A: job {job} ended ({st}) after {time.time() - t:.0f} s")
        check_job("A", out, run_a, steps, ref, True, min_stops=2)

        # B: reaches its 1-minute time limit. SLURM checks limits every 30 s and signals the
        # batch script at the first check within lead + 30 s of the limit: with a lead of 30 s
        # somewhere in the first 30 s of the run. A run that is faster than measured and ends
        # before that (a busy machine during the measurement) is tried again twice as long.
        for attempt in range(2):
            run_b = os.path.join(tmp, f"run-b{attempt}")
            t = time.time()
            job, out = submit(tmp, f"timelimit{attempt}",
                              ["--time=1", f"--signal=B:USR1@{TIME_LIMIT_LEAD}", SBATCH, ini,
                               "--run-dir", run_b], dict(job_env, CHARLM_LAUNCHER="mpirun"))
            st = wait_job(job, out, time.time() + JOB_TIMEOUT)
            print(f"B: job {job} ended ({st}) after {time.time() - t:.0f} s")
            if attempt == 0 and "charlm.sbatch: got SIGUSR1" not in read(out):
                steps *= 2
                print(f"B: the run ended before SLURM's signal: again with {steps} steps")
                ini, ref = reference(steps)
                continue
            check_job("B", out, run_b, steps, ref, False)
            break
        ok = True
    finally:
        if not ok:
            diagnostics(tmp, state)
        sh([CLUSTER, "stop"], check=False, timeout=120)
        print(f"test_slurm: {time.time() - t_start:.0f} s")


if __name__ == "__main__":
    main()
