"""Installing: `cmake --install BUILD --prefix P` into a temporary prefix puts charlm in P/bin, the
configs, the text the installed tinyshakespeare.ini names, the SLURM batch script and the Python
helpers in P/share/charlm/ and the man page in P/share/man/man1. The installed charlm, run from
another directory with the source and build trees hidden (a private mount namespace with empty
file systems over both, as root; elsewhere the binary is checked not to name them), trains with
the installed tinyshakespeare.ini, samples, evaluates and reports the run's status;
`charlm --version` names the version, MPI, HDF5 and the BLAS with its kernel set.

The man page: `man -l` renders it without a warning, and it names every command of main.c's
dispatch table, every option the sources compare arguments with, every configuration key of
config.c and every exit code of err.h — a command, option or key added without its
documentation fails here."""
import os
import re
import shutil
import subprocess

import harness as h

problem = h.problem
SRC = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.environ.get("CHARLM_BUILD_DIR", os.path.dirname(os.path.abspath(h.CHARLM)))
CMAKE = os.environ.get("CMAKE", "cmake")


def read(*parts):
    with open(os.path.join(SRC, *parts), encoding="utf-8") as f:
        return f.read()


def hiding_prefix():
    """A command prefix that runs the rest with the source and build trees hidden (empty tmpfs
    mounted over them in a private mount namespace, gone with the process), or () when this
    cannot be done here (not root, no unshare)."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        return ()
    # the build tree first: it may be inside the source tree
    mounts = "; ".join(f"mount -t tmpfs none '{d}'" for d in (BUILD, SRC))
    cmd = ("unshare", "-m", "--propagation", "private", "sh", "-c", mounts + '; exec "$@"', "sh")
    probe = subprocess.run(list(cmd) + ["ls", SRC], capture_output=True, text=True)
    return cmd if probe.returncode == 0 and not probe.stdout.strip() else ()


def installed_files(prefix):
    p = subprocess.run([CMAKE, "--install", BUILD, "--prefix", prefix], capture_output=True,
                       text=True)
    if p.returncode != 0:
        h.fail(f"cmake --install exited {p.returncode}:\n{p.stdout}{p.stderr}")
    share = os.path.join(prefix, "share", "charlm")
    want = ["bin/charlm", "share/man/man1/charlm.1", "share/charlm/configs/demo.ini",
            "share/charlm/configs/tinyshakespeare.ini", "share/charlm/data/tinyshakespeare.txt",
            "share/charlm/slurm/charlm.sbatch", "share/charlm/python/plot_metrics.py",
            "share/charlm/python/export_torch.py", "share/charlm/python/charlm_torch.py"]
    for w in want:
        if not os.path.isfile(os.path.join(prefix, w)):
            problem(f"not installed: {w}")
    for w in ("bin/charlm", "share/charlm/slurm/charlm.sbatch"):
        if not os.access(os.path.join(prefix, w), os.X_OK):
            problem(f"not executable: {w}")
    text = os.path.join(share, "data", "tinyshakespeare.txt")
    for name in ("tinyshakespeare", "tinyshakespeare-10min", "tinyshakespeare-30min"):
        path = os.path.join(share, "configs", name + ".ini")
        ini = open(path).read() if os.path.isfile(path) else ""
        if f"corpus = {text}\n" not in ini:
            problem(f"the installed {name}.ini is missing or does not name {text}")


def names_no_tree(prefix):
    """Where the trees cannot be hidden: the installed binary names neither (its debug
    information, of a RelWithDebInfo build, names them for the debugger only)."""
    with open(os.path.join(prefix, "bin", "charlm"), "rb") as f:
        binary = f.read()
    if b".debug_info" in binary:
        print("the binary has debug information, which names the trees: not searched for them")
        return
    for tree in {SRC, BUILD}:
        if tree.encode() in binary:
            problem(f"the installed binary names {tree}")


def run_installed(prefix, hide, work):
    """Train, sample, eval and status with the installed binary and config."""
    charlm = os.path.join(prefix, "bin", "charlm")
    share = os.path.join(prefix, "share", "charlm")

    def run(args, np=None):
        h.CHARLM = charlm
        cmd = h.command(args, np, prefix=hide)
        return subprocess.run(cmd, capture_output=True, text=True, cwd=work, timeout=300,
                              stdin=subprocess.DEVNULL)

    v = run(["--version"])
    lines = v.stdout.splitlines()
    if v.returncode != 0 or len(lines) != 4 or not re.fullmatch(r"charlm \d+\.\d+\.\d+", lines[0]) \
            or not lines[1].startswith("HDF5 ") or not lines[2].startswith("MPI: ") or \
            not lines[3].startswith("BLAS: ") or \
            ("OpenBLAS" in lines[3] and not re.search(r", kernels \S+$", lines[3])):
        problem(f"charlm --version: exit {v.returncode}:\n{v.stdout}{v.stderr}")
    th = re.search(r'^\.TH CHARLM 1 \S+ "charlm (\S+)"', read("src", "charlm.1"), re.M)
    if lines and (not th or lines[0] != f"charlm {th.group(1)}"):
        problem(f"the man page's .TH names version {th and th.group(1)}, the binary {lines[0]}")
    cfg = os.path.join(share, "configs", "tinyshakespeare.ini")
    t = run(["train", "--config", cfg, "--set", "model.layers=1", "--set", "model.hidden=32",
             "--set", "model.embed=16", "--set", "train.batch=4", "--set", "train.seq=32",
             "--set", "train.steps=30", "--set", "eval.every=15", "--set", "train.time_limit=0",
             "--set", "data.val_frac=0.01", "--run-dir", "run"], np=2)
    best = os.path.join(work, "run", "checkpoints", "best.h5")
    if t.returncode != 0 or not os.path.exists(best):
        h.fail(f"installed charlm train: exit {t.returncode}:\n{t.stdout}{t.stderr}")
    # the time-budget recipes load and train as installed (their keys are valid, their text is
    # found): two steps of a small model each
    for name in ("tinyshakespeare-10min", "tinyshakespeare-30min"):
        r = run(["train", "--config", os.path.join(share, "configs", name + ".ini"), "--set",
                 "model.hidden=32", "--set", "train.batch=2", "--set", "train.steps=2", "--set",
                 "train.time_limit=0", "--set", "optim.schedule_over=steps", "--set",
                 "data.val_frac=0.01", "--run-dir", "run-" + name])
        if r.returncode != 0 or "2 steps" not in r.stderr:
            problem(f"installed {name}.ini: exit {r.returncode}:\n{r.stderr}")
    s = run(["sample", "run/checkpoints/best.h5", "--prime", "ROMEO:", "--length", "40"])
    if s.returncode != 0 or not s.stdout.startswith("ROMEO:"):
        problem(f"installed charlm sample: exit {s.returncode}:\n{s.stdout}{s.stderr}")
    text = os.path.join(work, "piece.txt")
    with open(os.path.join(share, "data", "tinyshakespeare.txt"), encoding="utf-8") as f:
        piece = f.read(5000)
    with open(text, "w", encoding="utf-8") as f:
        f.write(piece)
    e = run(["eval", "run/checkpoints/best.h5", "piece.txt", "--json"])
    if e.returncode != 0 or '"predictions":4999' not in e.stdout.replace(" ", ""):
        problem(f"installed charlm eval: exit {e.returncode}:\n{e.stdout}{e.stderr}")
    st = run(["status", "run", "--verify"])
    if st.returncode != 0 or "finished (exit 0) at step 30" not in st.stdout:
        problem(f"installed charlm status: exit {st.returncode}:\n{st.stdout}{st.stderr}")
    sb = subprocess.run(["bash", "-n", os.path.join(share, "slurm", "charlm.sbatch")],
                        capture_output=True, text=True)
    if sb.returncode != 0:
        problem(f"the installed charlm.sbatch: bash -n: {sb.stderr}")
    print(f"ok   installed charlm trained, sampled, evaluated, reported"
          f"{' with the source and build trees hidden' if hide else ''}")


def documented_names():
    """(what, name) pairs the man page must name, read from the sources."""
    main = read("src", "main.c")
    table = re.search(r"commands\[\] = \{(.*?)\n\};", main, re.S).group(1)
    out = [("command", c) for c in re.findall(r'\{"([a-z]+)",', table)]
    for name in sorted(os.listdir(os.path.join(SRC, "src"))):
        if name.endswith(".c"):
            text = read("src", name)
            out += [("option", o) for o in sorted(set(re.findall(r'"(--?[a-z][a-z-]*)"', text)))]
    out += [("key", f"{s}.{k}") for s, k in
            re.findall(r'K_[A-Z0-9]+\("([a-z0-9_]+)", "([a-z0-9_]+)"', read("src", "config.c"))]
    out += [("exit code", c) for c in re.findall(r"CHARLM_E?[A-Z]+ = (\d+)", read("include", "charlm", "err.h"))]
    return list(dict.fromkeys(out))


def man_page(prefix):
    page = os.path.join(prefix, "share", "man", "man1", "charlm.1")
    if not shutil.which("man") or not shutil.which("groff"):
        print("man or groff missing (scripts/setup.sh --extras installs man-db and groff-base): "
              "the man page is not checked")
        return False
    env = dict(os.environ, MANWIDTH="100", LC_ALL="C.UTF-8", MAN_KEEP_FORMATTING="")
    r = subprocess.run(["man", "--warnings", "-l", page], capture_output=True, text=True, env=env)
    if r.returncode != 0 or r.stderr.strip():
        problem(f"man --warnings -l {page}: exit {r.returncode}:\n{r.stderr}")
    # the text as ASCII, hyphens plain, to find names in
    a = subprocess.run(["groff", "-man", "-Tascii", "-P-cbou", "-rLL=200n", page],
                       capture_output=True, text=True)
    rendered = a.stdout
    missing = []
    # each named where it is described: a command by its subsection, an option, key or exit
    # code by the tag of its paragraph (several tags: "-c, --config FILE")
    heads = {"command": r"^ {3}%s$", "option": r"^ {3}(?: {4})?(?:\S+, )*%s(?:,|\s|$)",
             "key": r"^ {7}(?:\S+, )*%s(?:,|\s|$)", "exit code": r"^ {7}%s\s+\S"}
    for what, name in documented_names():
        pat = heads[what] % re.escape(name)
        if not re.search(pat, rendered, re.M):
            missing.append(f"{what} {name}")
    if missing:
        problem(f"the man page does not name: {', '.join(missing)}")
    elif not r.stderr.strip():
        print(f"ok   man page: renders without warnings, names {len(documented_names())} commands, "
          "options, keys and exit codes")
    return True


def main():
    work = h.tmpdir()
    prefix = os.path.join(work, "prefix")
    installed_files(prefix)
    hide = hiding_prefix()
    if not hide:
        print("cannot hide the source and build trees here (needs root and unshare): the "
              "binary is checked not to name them")
        names_no_tree(prefix)
    run_dir = os.path.join(work, "cwd")
    os.mkdir(run_dir)
    run_installed(prefix, hide, run_dir)
    checked = man_page(prefix)
    if h.problems:
        h.fail(f"{len(h.problems)} problem(s)")
    if not checked:
        raise SystemExit(h.SKIP)
    print("all install checks passed")


if __name__ == "__main__":
    main()
