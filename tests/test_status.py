"""`charlm status RUN_DIR`, on a training that runs and after it ended:

- while a run trains (in the background, with no step limit in sight), status is polled until
  it has reported the run three times at growing steps: running, the holder being the training's
  pid, the step of 100000, an ETA, no end yet; the run trains on (it is then stopped by SIGTERM:
  exit 3) — status never takes the lock or waits;
- after SIGTERM: not running, ended with exit 3 by SIGTERM, the checkpoint of the stop step;
- resumed to a step limit and finished: exit 0, the step of the total, the last training and
  validation losses, the best validation and its step, chars/s and elapsed exactly as in
  metrics.jsonl, every checkpoint verified (--verify), and the text report says the same;
- a run of one epoch (train.steps 0): the run's length is the epoch's windows, the last step;
- a run killed with SIGKILL: not running, no end record, "killed"; a run that diverged: exit 4;
- a lock file naming another host: "cannot tell";
- bad input: no RUN_DIR or an unknown option (exit 2), a missing directory, a file, an empty
  directory, a metrics.jsonl with a line that is not a record, a corrupt checkpoint with --verify
  (exit 1, after the report): one line `charlm: error:` each, naming what is wrong."""
import json
import os
import shutil
import signal
import subprocess
import time

import harness as h

problem = h.problem


def status(run_dir, *extra, np=None):
    return h.run(["status", run_dir] + list(extra), np=np, timeout=120)


def status_json(run_dir, *extra):
    p = status(run_dir, "--json", *extra)
    try:
        return p, json.loads(p.stdout)
    except json.JSONDecodeError:
        problem(f"status --json {run_dir}: exit {p.returncode}, not JSON:\n{p.stdout}{p.stderr}")
        return p, None


def train_args(corpus, run_dir, extra=()):
    return ["train", "--corpus", corpus, "--cell", "lstm", "--layers", "1", "--hidden", "64",
            "--embed", "16", "--batch", "4", "--seq", "32", "--log-every", "1",
            "--eval-every", "10", "--set", "checkpoint.every=25", "--set", "checkpoint.keep=2",
            "--run-dir", run_dir] + list(extra)


def last_records(run_dir):
    """(last train record, last validation record, (best val_loss, its step)) of metrics.jsonl."""
    train, val = h.metrics(run_dir)
    best = min(val, key=lambda v: v["val_loss"]) if val else None
    return train[-1], val[-1] if val else None, best


def one_error(p, what, code, want):
    errors = [l for l in p.stderr.splitlines() if l.startswith("charlm: error:")]
    if p.returncode != code or len(errors) != 1 or any(w not in errors[0] for w in want):
        problem(f"[{what}] exit {p.returncode}, expected {code} and one error line naming "
                f"{want}:\n{p.stderr}")


def while_running(corpus, work):
    """The background run: polled while it trains, then stopped by SIGTERM. Returns run_dir."""
    run_dir = os.path.join(work, "long")
    proc = h.Background(h.command(train_args(corpus, run_dir, ["--steps", "100000"])))
    seen, polls, t_end = [], 0, time.time() + 240
    try:
        while len(seen) < 3 and proc.poll() is None and time.time() < t_end:
            if not os.path.exists(os.path.join(run_dir, "metrics.jsonl")):
                time.sleep(0.05)  # start-up: not yet a run directory
                continue
            p, s = status_json(run_dir)
            polls += 1
            if s is None or p.returncode != 0:
                problem(f"[running] status exit {p.returncode}:\n{p.stdout}{p.stderr}")
                break
            if s["step"] is None or (seen and s["step"] <= seen[-1]["step"]):
                time.sleep(0.05)
                continue
            seen.append(s)
        if len(seen) < 3:
            problem(f"[running] {polls} polls saw the run at {len(seen)} growing steps, not 3 "
                    f"(training exit {proc.poll()})")
        # the ETA needs the window's size, which the first checkpoint gives: before it (a poll
        # that comes early, as in a slow sanitizer build) it is unknown
        if seen and not seen[-1]["checkpoints"]:
            problem(f"[running] no poll after the first checkpoint: {seen[-1]}")
        for s in seen:
            eta_ok = isinstance(s["eta_s"], (int, float)) and s["eta_s"] > 0 \
                if s["checkpoints"] else s["eta_s"] is None
            if not (s["running"] is True and s["holder"] and s["holder"]["pid"] == proc.pid and
                    s["total_steps"] == 100000 and s["ended"] is None and eta_ok and
                    s["train_loss"] is not None and s["chars_per_s"] and
                    s["state"].startswith("running")):
                problem(f"[running] status of the running training (pid {proc.pid}): {s}")
                break
        text = status(run_dir)
        if text.returncode != 0 or "running: pid %d" % proc.pid not in text.stdout or \
                "ETA" not in text.stdout or "not yet" not in text.stdout:
            problem(f"[running] the text report:\n{text.stdout}{text.stderr}")
        print(f"ok   running: {polls} polls, steps {[s['step'] for s in seen]}")
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            _, err = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
    if proc.returncode != 3:
        problem(f"[SIGTERM] the training exited {proc.returncode}, expected 3:\n{err}")
        return run_dir
    p, s = status_json(run_dir)
    tr, _, _ = last_records(run_dir)
    if s and not (p.returncode == 0 and s["running"] is False and s["ended"] and
                  s["ended"]["exit"] == 3 and s["ended"]["signal"] == "SIGTERM" and
                  s["ended"]["step"] == tr["step"] == s["step"] and
                  "stopped by SIGTERM" in s["ended"]["reason"] and s["eta_s"] is None and
                  [c["step"] for c in s["checkpoints"]][:1] == [tr["step"]]):
        problem(f"[SIGTERM] status after the stop at step {tr['step']}: {s}")
    text = status(run_dir)
    if "stopped by SIGTERM, checkpoint written (exit 3)" not in text.stdout or \
            "not running" not in text.stdout:
        problem(f"[SIGTERM] the text report:\n{text.stdout}{text.stderr}")
    print(f"ok   stopped by SIGTERM at step {tr['step']}")
    return run_dir


def finished(corpus, run_dir):
    """The stopped run resumed to a step limit: the finished run's facts, as metrics.jsonl
    has them, every checkpoint verified."""
    _, s0 = status_json(run_dir)
    total = (s0["step"] if s0 and s0["step"] else 0) + 12
    h.run(train_args(corpus, run_dir, ["--steps", str(total), "--resume", "auto"]), check=True)
    p, s = status_json(run_dir, "--verify")
    if s is None:
        return
    tr, va, best = last_records(run_dir)
    want = {"running": False, "holder": None, "step": total, "total_steps": total,
            "epoch": tr["epoch"], "train_step": total, "train_loss": tr["train_loss"],
            "val_step": va["step"], "val_loss": va["val_loss"],
            "best_val_loss": best["val_loss"], "best_val_step": best["step"],
            "elapsed_s": h.summary(run_dir)["elapsed_s"], "chars_per_s": tr["chars_per_s"],
            "verified": True, "eta_s": None}
    diff = {k: (s.get(k), v) for k, v in want.items() if s.get(k) != v}
    names = sorted(os.listdir(os.path.join(run_dir, "checkpoints")))
    cks = s["checkpoints"]
    if p.returncode != 0 or diff or s["ended"] != {"step": total, "exit": 0, "signal": None,
                                                   "reason": "finished (exit 0)"} or \
            sorted(os.path.basename(c["path"]) for c in cks) != names or \
            not all(c["ok"] and c["error"] is None for c in cks) or cks[0]["step"] != total:
        problem(f"[finished] status --json --verify: exit {p.returncode}, differences (got, "
                f"want) {diff}, ended {s['ended']}, checkpoints {cks} (files {names})")
    text = status(run_dir, "--verify").stdout
    for want_line in (f"step               {total} of {total} (100%)",
                      f"train loss         {tr['train_loss']:.4f} at step {total}",
                      f"best validation    {best['val_loss']:.4f}",
                      f"ended              finished (exit 0) at step {total}",
                      "verified", "state              not running"):
        if want_line not in text:
            problem(f"[finished] the text report lacks {want_line!r}:\n{text}")
    print(f"ok   finished at step {total}, {len(cks)} checkpoints verified")


def one_epoch(corpus, work):
    """train.steps 0, train.epochs 1: the length is the epoch's windows."""
    run_dir = os.path.join(work, "epoch")
    h.run(train_args(corpus, run_dir, ["--steps", "0", "--epochs", "1"]), check=True)
    p, s = status_json(run_dir)
    tr, _, _ = last_records(run_dir)
    if s and not (p.returncode == 0 and s["total_steps"] == s["step"] == tr["step"] > 0):
        problem(f"[one epoch] total_steps {s['total_steps']}, step {s['step']}, last train "
                f"step {tr['step']}")
    print(f"ok   one epoch: {s and s['total_steps']} steps")


def killed(corpus, work):
    """SIGKILL: no end record, the lock file left naming a dead pid."""
    run_dir = os.path.join(work, "killed")
    proc = subprocess.Popen(h.command(train_args(corpus, run_dir, ["--steps", "100000"])),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            stdin=subprocess.DEVNULL)
    t_end = time.time() + 120
    while time.time() < t_end and proc.poll() is None:
        try:
            if h.metrics(run_dir)[0]:
                break
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    p, s = status_json(run_dir)
    if s and not (p.returncode == 0 and s["running"] is False and s["ended"] is None and
                  "killed" in s["state"] and s["holder"] and s["holder"]["pid"] == proc.pid):
        problem(f"[SIGKILL] status: exit {p.returncode}: {s}")
    print("ok   killed: no end record")
    # the lock as another host's run leaves it: it cannot be checked from here
    with open(os.path.join(run_dir, "lock"), "w") as f:
        f.write("some-other-host 4242\n")
    p, s = status_json(run_dir)
    if s and not (p.returncode == 0 and s["running"] is None and
                  s["holder"] == {"host": "some-other-host", "pid": 4242} and
                  "cannot tell" in s["state"]):
        problem(f"[other host] status: exit {p.returncode}: {s}")
    print("ok   another host's lock: cannot tell")


def diverged(corpus, work):
    """A run that diverges (lr 1e38, as test_signals): ended with exit 4."""
    run_dir = os.path.join(work, "diverge")
    p = h.run(["train", "--corpus", corpus, "--cell", "rnn", "--layers", "1", "--hidden", "32",
               "--embed", "16", "--batch", "2", "--seq", "16", "--steps", "50", "--optim", "sgd",
               "--lr", "1e38", "--set", "optim.clip=0", "--log-every", "1", "--run-dir", run_dir])
    if p.returncode != 4:
        problem(f"[diverged] the training exited {p.returncode}, expected 4:\n{p.stderr}")
        return
    q, s = status_json(run_dir)
    if s and not (q.returncode == 0 and s["ended"] and s["ended"]["exit"] == 4 and
                  s["ended"]["signal"] is None and "diverged" in s["ended"]["reason"]):
        problem(f"[diverged] status: exit {q.returncode}: {s}")
    print("ok   diverged: exit 4")


def bad_input(work, finished_dir):
    p = h.run(["status"])
    one_error(p, "no RUN_DIR", 2, ["which run directory"])
    p = h.run(["status", finished_dir, "--bogus"])
    one_error(p, "unknown option", 2, ["--bogus"])
    missing = os.path.join(work, "nowhere")
    one_error(status(missing), "missing directory", 1, [missing, "No such file or directory"])
    a_file = h.write_text(work, 100, name="a-file.txt")
    one_error(status(a_file), "a file", 1, [a_file, "is not a directory"])
    empty = os.path.join(work, "empty")
    os.mkdir(empty)
    one_error(status(empty), "empty directory", 1, [empty, "not a run directory"])
    one_error(status(empty, np=2), "empty directory, -np 2", 1, [empty, "not a run directory"])
    # a copy of the finished run: a line that is not a record, then a corrupt checkpoint
    copy = os.path.join(work, "copy")
    shutil.copytree(finished_dir, copy)
    metrics = os.path.join(copy, "metrics.jsonl")
    with open(metrics) as f:
        lines = f.readlines()
    with open(metrics, "w") as f:
        f.writelines(lines[:3] + ["garbage\n"] + lines[3:])
    one_error(status(copy), "bad metrics line", 1, [f"{metrics}:4", "not a metrics record"])
    with open(metrics, "w") as f:
        f.writelines(lines + ['{"step":99,"train_loss"'])  # a record being written: skipped
    if status(copy).returncode != 0:
        problem("[partial last line] status failed on a metrics.jsonl whose last line is cut")
    ck = os.path.join(copy, "checkpoints", sorted(os.listdir(os.path.join(copy, "checkpoints")))[0])
    os.unlink(ck)  # best.h5 may be a hard link of it: corrupt a file of its own
    with open(ck, "wb") as f:
        f.write(open(os.path.join(finished_dir, "checkpoints", os.path.basename(ck)), "rb")
                .read()[:4000])
    p = status(copy)
    if p.returncode != 0 or "BAD: " not in p.stdout:
        problem(f"[corrupt checkpoint] without --verify: exit {p.returncode}, expected 0 and the "
                f"checkpoint shown BAD (its attributes do not read):\n{p.stdout}{p.stderr}")
    p = status(copy, "--verify")
    one_error(p, "corrupt checkpoint --verify", 1, [ck])
    if "BAD: " not in p.stdout or "run directory" not in p.stdout:
        problem(f"[corrupt checkpoint --verify] no report with the bad checkpoint:\n{p.stdout}")
    print("ok   bad input: one line each")


def main():
    work = h.tmpdir()
    corpus = h.write_text(work, 60_000)
    run_dir = while_running(corpus, work)
    finished(corpus, run_dir)
    one_epoch(h.write_text(work, 8_000, name="small.txt"), work)
    killed(corpus, work)
    diverged(corpus, work)
    bad_input(work, run_dir)
    if h.problems:
        h.fail(f"{len(h.problems)} problem(s)")
    print("all status checks passed")


if __name__ == "__main__":
    main()
