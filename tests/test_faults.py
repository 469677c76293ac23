"""Faults a training run must survive, each checked against the uninterrupted run at the same
rank count (every train line's train_loss and grad_norm and every validation, bit for bit).

- Injected stops: chains of runs at -np 1 and -np 2, each stopped by SIGTERM, SIGINT, SIGUSR1 or
  SIGHUP (to a rank, to both ranks, or SIGUSR1 to mpiexec) at a point drawn from a fixed seed —
  during start-up, in a training window, in a validation, in a periodic checkpoint's write — often
  followed by more signals (some during the stop's own checkpoint write), then continued with
  --resume auto. A stop during start-up exits 5 with one line and writes nothing; any other exits
  3 with one checkpoint of the step it names; no *.tmp is left; the chain ends equal to the
  uninterrupted run. The test prints how many stops landed in each phase.
- A closed log pipe (`charlm train ... 2>&1 | head -1`): the run goes on to the end, exit 0.
- SIGTERM to one rank during start-up at -np 2: both ranks leave, exit 5, nothing written.
- The terminal hung up (a pty closed): SIGHUP stops with a checkpoint, exit 3, the writes to the
  dead terminal fail harmlessly; --resume auto, passing over a half-written ckpt-N.h5.tmp (what
  a kill during a checkpoint's write leaves), ends equal.
- metrics.jsonl cannot be written: under a file-size limit (-np 1 and -np 2, the limit on rank 0)
  the run stops at once with a checkpoint and exit 1 naming the file and 'File too large'; on a
  full file system (a small tmpfs in a private mount namespace; skipped where one cannot be
  mounted) exit 1 as well, the checkpoint failing too; metrics.jsonl keeps complete lines only,
  and --resume auto (with room again) ends equal to the uninterrupted run."""
import errno
import json
import os
import pty
import random
import re
import resource
import select
import signal
import subprocess
import sys
import threading
import time

import harness as h
from test_signals import ranks

N = 120            # steps of a run
EVAL = 20          # validations at 20, 40, ... (and at the end)
EVERY = 25         # periodic checkpoints at 25, 50, ...
SEED = 20240611    # the injection plan
RELAY_S = 0.1      # mpiexec relays a signal to its ranks from its event loop, some ms later
CHAINS = {1: 3, 2: 3}      # chains per rank count
STOPS = {1: 7, 2: 6}       # injections per chain
SIGNALS = ("SIGTERM", "SIGINT", "SIGUSR1", "SIGHUP")

problems = h.problems
problem = h.problem


def run_args(corpus, run_dir, steps=N, extra=()):
    return (["train", "--corpus", corpus, "--cell", "lstm", "--layers", "1", "--hidden", "128",
             "--embed", "32", "--dropout", "0.1", "--batch", "4", "--seq", "32",
             "--steps", str(steps), "--epochs", "0", "--log-every", "1",
             "--eval-every", str(EVAL), "--set", f"checkpoint.every={EVERY}",
             "--set", "data.val_frac=0.05", "--set", "sample.length=20",
             "--run-dir", run_dir] + list(extra))


# metrics.jsonl must outgrow a checkpoint (a file-size limit between the two): a model of few
# parameters and short windows, many steps
SMALL_N, SMALL_EVERY = 4000, 500


def small_args(corpus, run_dir, extra=()):
    return (["train", "--corpus", corpus, "--cell", "lstm", "--layers", "1", "--hidden", "16",
             "--embed", "8", "--batch", "1", "--seq", "8", "--steps", str(SMALL_N),
             "--epochs", "0", "--log-every", "1", "--eval-every", "1000",
             "--set", f"checkpoint.every={SMALL_EVERY}", "--set", "data.val_frac=0.05",
             "--set", "sample.length=20", "--run-dir", run_dir] + list(extra))


def progress(run_dir):
    """(last train step, steps of the validations) of run_dir/metrics.jsonl, complete lines."""
    try:
        with open(os.path.join(run_dir, "metrics.jsonl")) as f:
            text = f.read()
    except OSError:
        return 0, set()
    last, vals = 0, set()
    for line in text.split("\n")[:-1]:
        m = json.loads(line)
        if "val_loss" in m:
            vals.add(m["step"])
        elif "summary" not in m:
            last = max(last, m["step"])
    return last, vals


def tmp_files(run_dir):
    """The *.tmp files of run_dir and its checkpoints directory."""
    out = []
    for d in (run_dir, os.path.join(run_dir, "checkpoints")):
        try:
            out += [os.path.join(d, f) for f in os.listdir(d) if f.endswith(".tmp")]
        except OSError:
            pass
    return out


def snapshot(run_dir):
    """{relative path: (size, mtime_ns)} of every file below run_dir."""
    snap = {}
    for root, _, files in os.walk(run_dir):
        for f in files:
            st = os.stat(os.path.join(root, f))
            snap[os.path.relpath(os.path.join(root, f), run_dir)] = (st.st_size, st.st_mtime_ns)
    return snap


def wait_until(cond, proc, timeout=60.0, poll=0.001):
    """Polls cond() until true; False when proc ended or time ran out first."""
    t_end = time.time() + timeout
    while time.time() < t_end:
        if cond():
            return True
        if proc.poll() is not None:
            return cond()
        time.sleep(poll)
    return False


def ckpt_tmp(run_dir, step):
    return os.path.join(run_dir, "checkpoints", f"ckpt-{step:08d}.h5.tmp")


def compare(ref, run_dir, what, skip=()):
    """Every train line and validation of run_dir equals the uninterrupted run ref (the steps in
    skip are left out of ref's: lines that could not be written)."""
    (t1, v1), (t2, v2) = h.metrics(ref), h.metrics(run_dir)
    t1 = [m for m in t1 if m["step"] not in skip]
    want = [m["step"] for m in t1]
    if [m["step"] for m in t2] != want:
        problem(f"{what}: train lines at steps {[m['step'] for m in t2]}, expected {want}")
        return False
    diff = [(a["step"], k, a[k], b[k]) for a, b in zip(t1, t2)
            for k in ("train_loss", "grad_norm") if a[k] != b[k]]
    val1 = [(m["step"], m["val_loss"]) for m in v1 if m["step"] not in skip]
    val2 = [(m["step"], m["val_loss"]) for m in v2]
    if diff or val1 != val2:
        problem(f"{what}: {len(diff)} train values differ from the uninterrupted run (first "
                f"{diff[:3]}); validations {val2} vs {val1}")
        return False
    return True


class Chain:
    """One run driven through stops and resumes at P ranks, in run_dir."""

    def __init__(self, corpus, run_dir, np, timing, rnd, name, args=run_args, logdir=None):
        self.corpus, self.run_dir, self.np, self.timing = corpus, run_dir, np, timing
        self.args = args
        self.logdir = logdir or os.path.dirname(run_dir)  # where each leg's stderr goes
        self.rnd, self.name = rnd, name
        self.at = 0             # the step of the newest checkpoint (0: not started)
        self.fresh = True       # no checkpoint yet: the next leg is a fresh start
        self.legs = 0

    def start(self):
        args = self.args(self.corpus, self.run_dir, extra=[] if self.fresh else
                         ["--resume", "auto"])
        self.legs += 1
        self.errfile = os.path.join(self.logdir,
                                    f"{os.path.basename(self.run_dir)}-{self.legs}.err")
        self.err = open(self.errfile, "w")
        self.before = snapshot(self.run_dir) if os.path.isdir(self.run_dir) else None
        self.proc = subprocess.Popen(h.command(args, None if self.np == 1 else self.np),
                                     stdout=subprocess.DEVNULL, stderr=self.err,
                                     stdin=subprocess.DEVNULL)
        self.pids = {}

    def find_ranks(self):
        """{rank: pid} once every rank takes its stop signals; {} when the leg ended."""
        def found():
            if self.np == 1:
                self.pids = {0: self.proc.pid}
            elif len(self.pids) < self.np:
                self.pids = ranks(self.proc.pid)
            return len(self.pids) == self.np and all(map(h.takes_stop_signals, self.pids.values()))
        return self.pids if wait_until(found, self.proc, poll=0.002) else {}

    def finish(self):
        try:
            code = self.proc.wait(timeout=300)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = None
        self.err.close()
        with open(self.errfile) as f:
            return code, f.read()

    def send(self, sig, target):
        """Sends sig to the rank(s) of target ('rank 0', 'rank 1', 'ranks', 'mpiexec')."""
        s = getattr(signal, sig)
        try:
            if target == "mpiexec":
                self.proc.send_signal(s)
            else:
                for r in (self.pids if target == "ranks" else [int(target.split()[1])]):
                    os.kill(self.pids[r], s)
        except ProcessLookupError:
            pass

    def pick_target(self):
        if self.np == 1:
            return self.rnd.choice(SIGNALS), "rank 0"
        target = self.rnd.choice(["rank 0", "rank 1", "ranks", "mpiexec"])
        return ("SIGUSR1" if target == "mpiexec" else self.rnd.choice(SIGNALS)), target


def pick_step(rnd, lo, hi, kind):
    """A step in [lo, hi] of the kind: 'validation' (a multiple of EVAL), 'checkpoint' (of
    EVERY), 'window' (neither, nor the last step); None when there is none."""
    steps = [k for k in range(lo, hi + 1) if k < N - 1 and
             (k % EVAL == 0 if kind == "validation" else k % EVERY == 0 if kind == "checkpoint"
              else k % EVAL and k % EVERY)]
    return rnd.choice(steps) if steps else None


def inject(ch, phase, counts):
    """One leg of chain ch: start it, send the stop of `phase` (start-up, window, validation,
    checkpoint) with maybe more signals, check the outcome. Returns False when the chain ended
    (the run finished, or a problem)."""
    rnd, t = ch.rnd, ch.timing
    remaining = STOPS[ch.np] - counts["legs"][ch.name]
    hi = ch.at + max(2, (N - ch.at) // (remaining + 1) * 2)
    k = None if phase == "start-up" else pick_step(rnd, ch.at + 1, hi, phase)
    if phase != "start-up" and k is None:
        phase, k = "window", pick_step(rnd, ch.at + 1, hi, "window")
        if k is None:
            return False
    sig, target = ch.pick_target()
    ch.start()
    counts["legs"][ch.name] += 1
    if not ch.find_ranks():
        code, err = ch.finish()
        problem(f"[{ch.name}] leg {ch.legs}: the job ended (exit {code}) before its ranks caught "
                f"SIGTERM:\n{err}")
        return False
    where = phase
    if phase == "start-up":
        time.sleep(rnd.uniform(0, t["startup"]))
        pre = progress(ch.run_dir)[0]
        ch.send(sig, target)
    else:
        if not wait_until(lambda: progress(ch.run_dir)[0] >= k, ch.proc):
            code, err = ch.finish()
            problem(f"[{ch.name}] leg {ch.legs}: step {k} never came (exit {code}):\n{err}")
            return False
        if phase == "checkpoint":
            seen = wait_until(lambda: os.path.exists(ckpt_tmp(ch.run_dir, k)), ch.proc,
                              timeout=2)
        else:
            time.sleep(rnd.uniform(0, 0.5 * (t["val"] if phase == "validation" else t["window"])))
        pre, vals = progress(ch.run_dir)
        ch.send(sig, target)
        # where it landed, from what the run had written when the signal went
        if phase == "checkpoint":
            where = "checkpoint" if seen and os.path.exists(ckpt_tmp(ch.run_dir, k)) else "window"
        elif phase == "validation":
            where = "validation" if pre == k and k not in vals and \
                k not in progress(ch.run_dir)[1] else "window"
    post = progress(ch.run_dir)[0]
    relayed = []
    if target == "mpiexec" and phase != "start-up":
        # the ranks see the signal only once mpiexec has relayed it: the stop may come after
        # windows that ended meanwhile, so the bound is the progress RELAY_S after the send
        sampler = threading.Timer(RELAY_S, lambda: relayed.append(progress(ch.run_dir)[0]))
        sampler.start()
    extra = rnd.random()
    sent = 1
    if extra < 0.35:
        for _ in range(rnd.randint(1, 3)):
            time.sleep(rnd.uniform(0, 0.015))
            ch.send(rnd.choice(SIGNALS) if target != "mpiexec" else "SIGUSR1", target)
            sent += 1
    elif extra < 0.7 and phase != "start-up":
        stop_tmps = [ckpt_tmp(ch.run_dir, s) for s in (post + 1, post + 2)]
        if wait_until(lambda: any(map(os.path.exists, stop_tmps)), ch.proc, timeout=2):
            ch.send(sig, target)
            sent += 1
            if any(map(os.path.exists, stop_tmps)):
                counts["repeat in the stop's checkpoint write"] += 1
    code, err = ch.finish()
    if target == "mpiexec" and phase != "start-up":
        sampler.join()
        post = max(post, relayed[0])
    what = f"[{ch.name}] leg {ch.legs}: {sig} x{sent} to {target} ({where}" + \
        (f" after step {pre})" if phase != "start-up" else ")")
    print(f"     {what}: exit {code}")
    leftover = tmp_files(ch.run_dir)
    if leftover:
        problem(f"{what}: left {leftover}")
    if code == 5:
        lines = [l for l in err.splitlines() if l.startswith("charlm: error:")]
        after = snapshot(ch.run_dir) if os.path.isdir(ch.run_dir) else None
        if len(lines) != 1 or not re.search(r"stopped by SIG\w+ during start-up: nothing was "
                                            r"written", lines[0]):
            problem(f"{what}: exit 5 without the one line 'stopped by SIG... during start-up: "
                    f"nothing was written':\n{err}")
        if after != ch.before:
            problem(f"{what}: exit 5, but the run directory changed: {ch.before} -> {after}")
        counts["start-up"] += 1
        counts["signals"] += sent
        return True
    m = re.findall(r"charlm: stopped by a signal at step (\d+); checkpoint (\S+)", err)
    if code == 0:
        print(f"note {what}: the run had finished (exit 0)")
        return False
    if code != 3 or len(m) != 1:
        problem(f"{what}: exit {code}, expected 3 and one 'stopped by a signal at step S; "
                f"checkpoint PATH' line:\n{err}")
        return False
    s, path = int(m[0][0]), m[0][1]
    if phase == "start-up":
        where = "window"  # it came after the last agreement of start-up
    # sent after the record of step pre and before that of post + 1 (for mpiexec: relayed by
    # then): taken at the end of window pre + 1 at the earliest, post + 2 at the latest (window
    # post + 1 may have ended unrecorded)
    if not pre + 1 <= s <= post + 2:
        problem(f"{what}: stopped at step {s}, expected {pre + 1}..{post + 2}")
    want = os.path.join(ch.run_dir, "checkpoints", f"ckpt-{s:08d}.h5")
    if os.path.realpath(path) != os.path.realpath(want) or not os.path.exists(want):
        problem(f"{what}: checkpoint {want} missing (the message names {path})")
        return False
    if progress(ch.run_dir)[0] != s:
        problem(f"{what}: metrics.jsonl ends at step {progress(ch.run_dir)[0]}, not {s}")
    counts[where] += 1
    counts["signals"] += sent
    ch.at, ch.fresh = s, False
    return True


def run_chains(corpus, work, np, ref, timing, rnd, counts):
    for c in range(CHAINS[np]):
        name = f"np{np}-chain{c + 1}"
        ch = Chain(corpus, os.path.join(work, name), np, timing, rnd, name)
        counts["legs"][name] = 0
        # every phase once, the rest drawn, in a drawn order
        phases = ["start-up", "window", "validation", "checkpoint"]
        plan = phases + rnd.choices(phases, k=STOPS[np] - len(phases))
        rnd.shuffle(plan)
        for phase in plan:
            if not inject(ch, phase, counts):
                break
        if ch.at < N:
            ch.start()
            code, err = ch.finish()
            if code != 0:
                problem(f"[{name}] the last leg: exit {code}\n{err}")
                continue
        if compare(ref, ch.run_dir, f"[{name}]"):
            print(f"ok   [{name}] {ch.legs} legs: all {N} train lines and the validations equal "
                  f"the uninterrupted run")


def timing_of(ref):
    """Seconds of a window and of a validation in the run ref, and the span after the handlers
    are installed in which stop signals are sent to land in start-up (MPI_Init, the corpus)."""
    s = h.summary(ref)
    train = s["time_forward_s"] + s["time_backward_s"] + s["time_allreduce_s"] + \
        s["time_optimizer_s"]
    nval = len(h.metrics(ref)[1])
    return {"window": train / N, "val": s["time_eval_s"] / max(nval, 1), "startup": 0.25}


def startup_one_rank(corpus, work):
    """SIGTERM to rank 1 alone, while start-up runs at -np 2: both ranks leave together."""
    ch = Chain(corpus, os.path.join(work, "startup-rank1"), 2, None, None, "start-up, rank 1")
    ch.start()
    if ch.find_ranks():
        ch.send("SIGTERM", "rank 1")
    code, err = ch.finish()
    lines = [l for l in err.splitlines() if l.startswith("charlm:")]
    if code != 5 or len(lines) != 1 or "stopped by SIGTERM during start-up" not in lines[0] or \
            os.path.exists(ch.run_dir) or ranks(ch.proc.pid):
        problem(f"[start-up, rank 1] exit {code}, expected 5, one line, no run directory and no "
                f"rank left:\n{err}")
    else:
        print(f"ok   [start-up, rank 1] SIGTERM to rank 1 only: both ranks left, exit 5, "
              f"'{lines[0]}', nothing written")


def closed_pipe(corpus, work, ref):
    """`charlm train ... 2>&1 | head -1`: the reader goes after the first line."""
    run_dir = os.path.join(work, "pipe")
    p = subprocess.Popen(h.command(run_args(corpus, run_dir)), stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    first = p.stdout.readline()
    p.stdout.close()
    try:
        code = p.wait(timeout=300)
    except subprocess.TimeoutExpired:
        p.kill()
        code = None
    if code != 0:
        problem(f"[closed pipe] exit {code} (expected 0) after the reader took {first!r}")
        return
    if compare(ref, run_dir, "[closed pipe]") and not tmp_files(run_dir):
        print(f"ok   [closed pipe] the log's reader left after one line; the run went on to "
              f"step {N}, exit 0, its metrics equal the uninterrupted run")


def hangup(corpus, work, ref):
    """The terminal of a run goes away: its pty's master closed."""
    run_dir = os.path.join(work, "hangup")
    argv = h.command(run_args(corpus, run_dir))
    pid, fd = pty.fork()
    if pid == 0:
        try:
            os.execv(argv[0], argv)
        finally:
            os._exit(127)
    out, t_end = b"", time.time() + 120
    while time.time() < t_end and progress(run_dir)[0] < 30:
        if select.select([fd], [], [], 0.01)[0]:
            try:
                out += os.read(fd, 65536)
            except OSError:
                break
    at = progress(run_dir)[0]
    os.close(fd)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    ck = sorted(os.listdir(os.path.join(run_dir, "checkpoints")))
    last = progress(run_dir)[0]
    want = f"ckpt-{last:08d}.h5"
    if code != 3 or want not in ck:
        problem(f"[hang-up] exit {code} (expected 3) and checkpoints {ck} (expected {want}); "
                f"the terminal showed:\n{out.decode(errors='replace')[-500:]}")
        return
    # what a kill in the middle of a checkpoint's write leaves: never taken for a checkpoint
    planted = ckpt_tmp(run_dir, last + 5)
    with open(os.path.join(run_dir, "checkpoints", want), "rb") as src, open(planted, "wb") as f:
        f.write(src.read()[:20000])
    p = h.run(run_args(corpus, run_dir, extra=["--resume", "auto"]))
    os.remove(planted)
    if p.returncode != 0 or f"resuming from {os.path.join(run_dir, 'checkpoints', want)}" not in \
            p.stderr or ".tmp" in p.stderr:
        problem(f"[hang-up] resume: exit {p.returncode}, expected to resume from {want} and "
                f"to pass over {planted}:\n{p.stderr}")
    elif compare(ref, run_dir, "[hang-up]"):
        print(f"ok   [hang-up] terminal closed at step {at}: SIGHUP, exit 3, {want}; "
              f"--resume auto passes over a half-written ckpt-{last + 5:08d}.h5.tmp and ends "
              f"equal to the uninterrupted run")


def limit_file_size(pid, nbytes):
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (nbytes, resource.RLIM_INFINITY))


def metrics_failure(corpus, work, ref, np, fill=None):
    """metrics.jsonl stops taking writes: under a file-size limit on rank 0 (300 kB: above a
    checkpoint, reached by metrics.jsonl after ~2300 steps), or (fill) on a file system filled
    after step 2010. The run must stop at once: exit 1 naming the file, complete lines only, a
    checkpoint when one fits; then --resume auto, with room again, ends equal.

    The full disk comes after the checkpoint of step 2000 and with no other one due before the
    end (step 4000): filling the file system takes hundreds of windows on a fast machine (390
    seen), and a checkpoint due in between would meet the full disk before metrics.jsonl does
    (whose last page on tmpfs still takes a few records)."""
    name = f"{'full disk' if fill else 'file-size limit'}, -np {np}"
    run_dir = os.path.join(fill["dir"] if fill else work, f"metrics-np{np}")
    args = small_args
    if fill:
        def args(c, r, extra=()):
            return small_args(c, r, ["--set", "checkpoint.every=2000"] + list(extra))
    # stderr goes to work: a file on the full file system would lose the lines checked here
    ch = Chain(corpus, run_dir, np, None, None, name, args=args, logdir=work)
    ch.start()
    start_at = 2010 if fill else 1  # the limit comes after MPI_Init, which it would fail
    if not ch.find_ranks() or not wait_until(lambda: progress(run_dir)[0] >= start_at, ch.proc):
        code, err = ch.finish()
        problem(f"[{name}] the run ended (exit {code}) before step {start_at}:\n{err}")
        return
    if fill:
        fill["fill"]()
    else:
        size = os.path.getsize(os.path.join(run_dir, "metrics.jsonl"))
        limit_file_size(ch.pids[0], max(size + 4096, 300000))
    at = progress(run_dir)[0]
    code, err = ch.finish()
    errors = [l for l in err.splitlines() if l.startswith("charlm: error:")]
    cause = "No space left on device" if fill else "File too large"
    m = re.search(r"metrics\.jsonl: cannot write the record of step (\d+): " + cause, err)
    with open(os.path.join(run_dir, "metrics.jsonl"), "rb") as f:
        text = f.read()
    last = progress(run_dir)[0]
    if code != 1 or not m:
        problem(f"[{name}] exit {code}, expected 1 and 'metrics.jsonl: cannot write the record "
                f"of step S: {cause}' (limit set at step {at}, metrics end at step {last}):\n"
                + err[-3000:])
        return
    failed = int(m.group(1))
    if text and not text.endswith(b"\n"):
        problem(f"[{name}] metrics.jsonl ends in a partial line: {text[-80:]!r}")
    if fill and failed > at + 40:
        problem(f"[{name}] the write failed at step {failed}, the disk was full at step {at}")
    stop = re.search(r"charlm: stopped at step (\d+); checkpoint (\S+)", err)
    if fill:
        # the disk is full: the stop's checkpoint cannot be written either
        if not re.search(r"cannot write checkpoint .*No space left on device", err) or \
                "without a checkpoint" not in err:
            problem(f"[{name}] expected the checkpoint's failure and 'stopped at step S without a "
                    f"checkpoint':\n{err[-3000:]}")
        fill["free"]()
    elif not stop or not os.path.exists(stop.group(2)) or int(stop.group(1)) != failed + 1:
        problem(f"[{name}] expected 'stopped at step {failed + 1}; checkpoint PATH':\n"
                f"{err[-3000:]}")
        return
    if tmp_files(run_dir):
        problem(f"[{name}] left {tmp_files(run_dir)}")
    ch.fresh = False  # the resume runs without the limit: a new process
    ch.start()
    code2, err2 = ch.finish()
    if code2 != 0:
        problem(f"[{name}] resume: exit {code2}\n{err2}")
        return
    resumed = int(re.search(r"resuming from \S+ at step (\d+)", err2).group(1))
    # the records the failed write and the stop's window could not write stay missing
    missing = set(range(failed, resumed + 1)) - {t["step"] for t in h.metrics(run_dir)[0]}
    if compare(ref, run_dir, f"[{name}]", skip=missing):
        print(f"ok   [{name}] set at step {at}: the record of step {failed} failed, exit 1 with "
              f"{len(errors)} error line(s) naming metrics.jsonl and '{cause}'"
              + ("" if fill else f", checkpoint at step {failed + 1}")
              + f"; complete lines only; resumed at step {resumed}, equal to the uninterrupted "
              f"run (without the {len(missing)} record(s) never written: {sorted(missing)})")


def full_disk_inside(corpus, work, ref):
    """In a private mount namespace (the test re-run under unshare -m): a 16 MiB tmpfs holds the
    run directory; filling it makes the metrics write fail."""
    mnt = os.path.join(work, "tmpfs")
    os.makedirs(mnt, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", mnt], check=True)
    filler = os.path.join(mnt, "filler")

    def fill():
        # unbuffered: a buffered file keeps the part of its last write that did not fit and
        # fails again with ENOSPC when it is closed
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            while True:
                os.write(fd, b"\0" * 65536)
        except OSError as e:
            if e.errno != errno.ENOSPC:
                raise
        finally:
            os.close(fd)

    def free():
        os.remove(filler)

    try:
        metrics_failure(corpus, work, ref, 2, fill={"dir": mnt, "fill": fill, "free": free})
    finally:
        subprocess.run(["umount", "-l", mnt])


def full_disk(corpus, work, ref):
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True)
    if probe.returncode != 0:
        print("note [full disk] no private mount namespace here (unshare -m failed): skipped")
        return
    p = subprocess.run(["unshare", "-m", "--propagation", "private", sys.executable,
                        os.path.abspath(__file__), "--full-disk", corpus, work, ref],
                       capture_output=True, text=True, timeout=600)
    sys.stdout.write(p.stdout)
    if p.returncode != 0:
        problem(f"[full disk] exit {p.returncode}:\n{p.stderr[-3000:]}")


def main():
    if len(sys.argv) == 5 and sys.argv[1] == "--full-disk":
        full_disk_inside(*sys.argv[2:])
        if problems:
            h.fail(f"{len(problems)} problem(s)")
        return
    work = h.tmpdir()
    corpus = os.path.join(work, "corpus.txt")
    with open(corpus, "w", encoding="utf-8") as f:
        f.write(h.synthetic_text(20000))
    t0 = time.time()
    rnd = random.Random(SEED)
    counts = {"start-up": 0, "window": 0, "validation": 0, "checkpoint": 0,
              "repeat in the stop's checkpoint write": 0, "signals": 0, "legs": {}}
    refs, small = {}, {}
    for np in (1, 2):
        small[np] = os.path.join(work, f"ref-small-np{np}")
        h.run(small_args(corpus, small[np]), np=None if np == 1 else np, check=True)
    for np in (1, 2):
        ref = os.path.join(work, f"ref-np{np}")
        h.run(run_args(corpus, ref), np=None if np == 1 else np, check=True)
        refs[np] = ref
        timing = timing_of(ref)
        print(f"uninterrupted run at -np {np}: window {timing['window'] * 1e3:.1f} ms, validation "
              f"{timing['val'] * 1e3:.1f} ms")
        run_chains(corpus, work, np, ref, timing, rnd, counts)
    stops = sum(counts[k] for k in ("start-up", "window", "validation", "checkpoint"))
    print(f"{stops} stops ({counts['signals']} signals) landed: " +
          ", ".join(f"{counts[k]} in {k}" for k in ("start-up", "window", "validation",
                                                     "checkpoint")) +
          f"; {counts['repeat in the stop' + chr(39) + 's checkpoint write']} repeated during the "
          f"stop's own checkpoint write ({time.time() - t0:.0f} s)")
    startup_one_rank(corpus, work)
    closed_pipe(corpus, work, refs[1])
    hangup(corpus, work, refs[1])
    metrics_failure(corpus, work, small[1], 1)
    metrics_failure(corpus, work, small[2], 2)
    full_disk(corpus, work, small[2])
    if problems:
        h.fail(f"{len(problems)} problem(s)")
    print(f"all fault checks passed ({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
