"""Shared helpers of the script tests: run the charlm binary (directly or under mpiexec),
read metrics.jsonl, and write small corpora. Standard library only.

Environment (set by tests/CMakeLists.txt): CHARLM (the binary), MPIEXEC, MPIEXEC_NUMPROC_FLAG,
MPIEXEC_PREFLAGS, MPIEXEC_POSTFLAGS (CMake's FindMPI values, ';'-separated lists)."""
import atexit
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile

CHARLM = os.environ.get("CHARLM", "build/charlm")
SKIP = 77  # CTest SKIP_RETURN_CODE
SCRIPTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts")


def torch_reference():
    """Returns (torch, charlm_torch) with PyTorch on one thread and scripts/charlm_torch.py
    imported, or exits SKIP with one line when PyTorch or h5py (which reads checkpoints) is
    missing: the PyTorch checks need Debian's python3-torch and python3-h5py."""
    try:
        import h5py  # noqa: F401
        import torch
    except ImportError as e:
        print(f"skipped: {e} (needs Debian's python3-torch and python3-h5py, /usr/bin/python3)")
        sys.exit(SKIP)
    torch.set_num_threads(1)
    sys.path.insert(0, SCRIPTS)
    import charlm_torch
    return torch, charlm_torch


def _split(name):
    v = os.environ.get(name, "")
    return [x for x in v.split(";") if x]


def command(args, np=None, prefix=()):
    """The argv of `charlm ARGS`, under mpiexec with np ranks when np is given, after prefix
    (a command such as setpriv that runs the rest)."""
    if np is None:
        return list(prefix) + [CHARLM] + list(args)
    return list(prefix) + (_split("MPIEXEC") + _split("MPIEXEC_NUMPROC_FLAG") + [str(np)] +
            _split("MPIEXEC_PREFLAGS") + [CHARLM] + _split("MPIEXEC_POSTFLAGS") + list(args))


def command_mpmd(parts):
    """The argv of one MPI job of several programs (mpiexec's `A : B` form): parts is a list of
    (np, prefix, args), each np ranks of `prefix charlm args`."""
    argv = _split("MPIEXEC")
    for i, (np, prefix, args) in enumerate(parts):
        argv += ([":"] if i else []) + _split("MPIEXEC_NUMPROC_FLAG") + [str(np)] + \
            _split("MPIEXEC_PREFLAGS") + list(prefix) + [CHARLM] + _split("MPIEXEC_POSTFLAGS") + \
            list(args)
    return argv


class Background(subprocess.Popen):
    """A process started in the background whose stdout and stderr go to unnamed temporary
    files, not pipes: a test that polls a run (its metrics, its pids) before it collects the
    output would otherwise block the run once it has written a pipe's 64 KiB (charlm's progress
    line of every logged window fills that in about 600 windows). communicate() waits (raising
    subprocess.TimeoutExpired as Popen's does) and returns both outputs as text; stdin is
    /dev/null."""

    def __init__(self, argv, **kw):
        self._files = (tempfile.TemporaryFile(), tempfile.TemporaryFile())
        self._outs = None
        super().__init__(argv, stdout=self._files[0], stderr=self._files[1],
                         stdin=subprocess.DEVNULL, **kw)

    def communicate(self, input=None, timeout=None):
        self.wait(timeout=timeout)
        if self._outs is None:
            outs = []
            for f in self._files:
                f.seek(0)
                outs.append(f.read().decode("utf-8", errors="replace"))
                f.close()
            self._outs = tuple(outs)
        return self._outs


def run(args, np=None, timeout=600, check=False, prefix=()):
    """Runs charlm; returns the CompletedProcess (text). With check, fails on non-zero exit."""
    p = subprocess.run(command(args, np, prefix), capture_output=True, text=True, timeout=timeout,
                       stdin=subprocess.DEVNULL)
    if check and p.returncode != 0:
        sys.stderr.write(p.stdout + p.stderr)
        fail(f"charlm {' '.join(args)} exited {p.returncode}")
    return p


def refused(args, code, needle):
    """Runs charlm with args; returns None when it exited with code and printed exactly one line
    holding needle on stderr (how every bad input must be refused), else what it did instead."""
    r = run(args)
    if r.returncode == code and needle in r.stderr and r.stderr.count("\n") == 1:
        return None
    return f"{args}: exit {r.returncode} (expected {code} and one line with {needle!r}), " \
        f"stderr {r.stderr!r}"


def skip_without_slurm():
    """Exits SKIP with one line when SLURM's commands or daemons (or munge) are not installed."""
    missing = [p for p in ("sbatch", "squeue", "scancel", "scontrol", "slurmctld", "slurmd",
                           "munged") if not shutil.which(p) and
               not os.path.exists(os.path.join("/usr/sbin", p))]
    if missing:
        print(f"SLURM not installed (no {', '.join(missing)}): apt-get install slurm-wlm munge")
        sys.exit(SKIP)


def program_env(pid, exe):
    """The environment of process pid ({bytes: bytes}) when it runs the program exe; None when
    it runs another or is gone."""
    try:
        if os.path.realpath(f"/proc/{pid}/exe") != os.path.realpath(exe):
            return None
        with open(f"/proc/{pid}/environ", "rb") as f:
            return dict(x.split(b"=", 1) for x in f.read().split(b"\0") if b"=" in x)
    except OSError:
        return None


def mpi_rank(env):
    """The MPI rank in a process environment (Open MPI's or PMI's variable), or None."""
    r = env.get(b"OMPI_COMM_WORLD_RANK", env.get(b"PMI_RANK"))
    return int(r) if r is not None else None


def takes_stop_signals(pid):
    """Whether process pid blocks or catches SIGTERM (its SigBlk and SigCgt masks in /proc):
    charlm train and prepare do from the first instruction of their main on, before which the
    dynamic loader runs and a signal takes its default action whatever the program does."""
    try:
        with open(f"/proc/{pid}/status") as f:
            masks = [int(line.split()[1], 16) for line in f
                     if line.startswith(("SigBlk:", "SigCgt:"))]
    except (OSError, ValueError):
        return False
    return any(m >> (signal.SIGTERM - 1) & 1 for m in masks)


def metrics(run_dir):
    """(train lines, validation lines) of run_dir/metrics.jsonl, each a list of dicts; the
    end-of-run summary records are left out (summary() reads them)."""
    train, val = [], []
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        for line in f:
            m = json.loads(line)
            if "summary" not in m:
                (val if "val_loss" in m else train).append(m)
    return train, val


def summary(run_dir):
    """The last end-of-run summary record of run_dir/metrics.jsonl (a dict), or None."""
    last = None
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        for line in f:
            m = json.loads(line)
            if "summary" in m:
                last = m
    return last


WORDS = ("the of and to in a is that for it as was with be by on not he this are or his from "
         "at which but have an they you were her she there been one all we their its more "
         "when will would can who so no café naïve über 한국어 문장 東京 ß").split()


def synthetic_text(nchars, seed=1):
    """Deterministic text of about nchars characters: sentences of common words, some of them
    outside ASCII, so that tests need no downloaded corpus."""
    rnd = random.Random(seed)
    out, n = [], 0
    while n < nchars:
        s = " ".join(rnd.choice(WORDS) for _ in range(rnd.randint(4, 12)))
        s = s[0].upper() + s[1:] + rnd.choice(".!?") + ("\n" if rnd.random() < 0.3 else " ")
        out.append(s)
        n += len(s)
    return "".join(out)[:nchars]


def write_text(directory, nchars, name="corpus.txt", seed=1):
    """Writes synthetic_text(nchars, seed) to directory/name (UTF-8); returns its path."""
    path = os.path.join(directory, name)
    with open(path, "w", encoding="utf-8") as f:
        f.write(synthetic_text(nchars, seed))
    return path


_tmpdirs = []    # made by tmpdir(): removed at exit unless the test failed
_failed = False  # set by fail() and by an uncaught exception
problems = []    # the failed checks recorded by problem()


def tmpdir():
    """A new directory charlm-test-* in the system's temporary directory. It is removed when the
    test exits having passed or been skipped, and kept for diagnosis (named on stderr) when it
    failed: through fail(), problem(), run(check=True) or an uncaught exception."""
    d = tempfile.mkdtemp(prefix="charlm-test-")
    _tmpdirs.append(d)
    return d


def _remove_tmpdirs():
    for d in _tmpdirs:
        if _failed or problems:
            sys.stderr.write(f"kept {d}\n")
        else:
            shutil.rmtree(d, ignore_errors=True)


def _note_exception(*exc, hook=sys.excepthook):
    global _failed
    _failed = True
    hook(*exc)


atexit.register(_remove_tmpdirs)
sys.excepthook = _note_exception


def problem(msg):
    """Records a failed check (shortening a long stderr to its start and end) and prints it;
    a test collects them all and fails at the end on `problems`."""
    lines = msg.splitlines()
    if len(lines) > 40:
        msg = "\n".join(lines[:8] + [f"  [... {len(lines) - 33} lines ...]"] + lines[-25:])
    print("FAIL " + msg)
    problems.append(msg)


def fail(msg):
    global _failed
    _failed = True
    sys.stderr.write("FAIL: " + msg + "\n")
    raise SystemExit(1)
