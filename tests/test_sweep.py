"""scripts/sweep.sh: a 2 x 2 grid under a budget of 1 s each, locally in sequence — four run
directories whose config.ini holds the combination and train.time_limit, each stopped by the time
limit, and a table whose rows are the combinations in order with the last and best validation
losses of each run's metrics.jsonl and a * at the lowest. `--table DIR` prints it again. The
--slurm path through a stand-in `sbatch` on PATH that runs the array's tasks one after another
through scripts/slurm/charlm.sbatch (with CHARLM_LAUNCHER=mpirun): the same table. Bad command
lines exit 2; a run that fails shows its exit status and makes the sweep exit 1."""
import os
import stat
import subprocess

import harness as h

HERE = os.path.dirname(os.path.abspath(__file__))
SWEEP = os.path.join(os.path.dirname(HERE), "scripts", "sweep.sh")
problem = h.problem

# runs nothing on a cluster: the array's tasks in turn, in the foreground
FAKE_SBATCH = r"""#!/usr/bin/env bash
set -u
array="" out="" rest=()
for a in "$@"; do
    case "$a" in
        --array=*) array="${a#--array=}" ;;
        --output=*) out="${a#--output=}" ;;
        *) rest+=("$a") ;;
    esac
done
for ((i = ${array%-*}; i <= ${array#*-}; i++)); do
    f="${out//%A/7}"; f="${f//%a/$i}"
    SLURM_ARRAY_JOB_ID=7 SLURM_ARRAY_TASK_ID=$i SLURM_JOB_ID=$((7 + i)) SLURM_NTASKS=1 \
        CHARLM_LAUNCHER=mpirun bash "${rest[@]}" >"$f" 2>&1
done
"""


def sweep(args, env=None, cwd=None):
    return subprocess.run(["bash", SWEEP] + args, capture_output=True, text=True, timeout=600,
                          env=env, cwd=cwd)


def rows(out):
    return [l.split() for l in out.strip().splitlines()[1:]]


def check_table(what, out, d, grid):
    """The table out of the sweep in d against the runs' own files."""
    got = rows(out)
    if [r[1:3] for r in got] != grid:
        problem(f"{what}: rows {[r[1:3] for r in got]}, expected {grid}\n{out}")
        return
    lasts = []
    for r in got:
        run = os.path.join(d, r[0])
        with open(os.path.join(run, "config.ini")) as f:
            cfg = f.read()
        want = [f"lr = {r[1]}", f"hidden = {r[2]}", "time_limit = 1"]
        if any(w not in cfg.splitlines() for w in want):
            problem(f"{what}: {run}/config.ini lacks one of {want}")
        _, val = h.metrics(run)
        s = h.summary(run) or {}
        last, best = val[-1]["val_loss"], min(v["val_loss"] for v in val)
        if r[3] != str(s.get("step")) or r[4:6] != ["time", "limit"] or \
                float(r[6]) != last or float(r[7]) != best:
            problem(f"{what}: row {r}, expected step {s.get('step')}, time limit, {last}, {best}")
        lasts.append(last)
    starred = [r[0] for r in got if r[-1] == "*"]
    if starred != [got[lasts.index(min(lasts))][0]]:
        problem(f"{what}: * at {starred}, the lowest last loss is {min(lasts)}")
    else:
        print(f"ok   {what}: {len(got)} rows, the best {starred[0]} at {min(lasts)}")


def main():
    work = h.tmpdir()
    corpus = h.write_text(work, 30000)
    tail = ["--", "--corpus", corpus, "--layers", "1", "--embed", "8", "--batch", "2", "--seq",
            "16", "--epochs", "0", "--eval-every", "100"]
    grid = [["0.001", "16"], ["0.001", "24"], ["0.004", "16"], ["0.004", "24"]]
    base = ["--time-limit", "1", "--set-grid", "optim.lr=0.001,0.004",
            "--set-grid", "model.hidden=16,24"]
    d = os.path.join(work, "local")
    p = sweep(base + ["--dir", d] + tail)
    if p.returncode != 0:
        h.fail(f"sweep: exit {p.returncode}\n{p.stdout}{p.stderr}")
    check_table("local sweep", p.stdout, d, grid)
    again = sweep(["--table", d])
    if again.returncode != 0 or again.stdout != p.stdout:
        problem(f"--table: exit {again.returncode}, a different table:\n{again.stdout}")

    # --slurm through the stand-in sbatch
    bindir = os.path.join(work, "bin")
    os.mkdir(bindir)
    fake = os.path.join(bindir, "sbatch")
    with open(fake, "w") as f:
        f.write(FAKE_SBATCH)
    os.chmod(fake, os.stat(fake).st_mode | stat.S_IEXEC)
    env = dict(os.environ, PATH=bindir + os.pathsep + os.environ["PATH"],
               CHARLM_BIN=os.path.abspath(h.CHARLM))
    s = os.path.join(work, "slurm")
    p = sweep(base + ["--dir", s, "--slurm"] + tail, env=env)
    if p.returncode != 0 or "4 runs submitted" not in p.stderr:
        problem(f"--slurm: exit {p.returncode}\n{p.stdout}{p.stderr}")
    else:
        t = sweep(["--table", s])
        if t.returncode != 0:
            outs = [os.path.join(s, n) for n in sorted(os.listdir(s)) if n.startswith("slurm-")]
            problem(f"--slurm table: exit {t.returncode}\n{t.stdout}" +
                    "".join(open(o).read()[-2000:] for o in outs[:1]))
        else:
            check_table("SLURM array sweep", t.stdout, s, grid)

    # a run that fails: its exit status in the table, exit 1
    bad = os.path.join(work, "bad")
    p = sweep(["--time-limit", "1", "--dir", bad, "--set-grid", "model.layers=1,99"] + tail)
    r = rows(p.stdout)
    if p.returncode != 1 or len(r) != 2 or r[1][2:5] != ["-", "exit", "1"] or r[0][-1] != "*":
        problem(f"a failing run: exit {p.returncode}, table\n{p.stdout}{p.stderr}")
    else:
        print("ok   a failing run: 'exit 1' in its row, the sweep exits 1")

    for args, what in ((["--set-grid", "lr=1"], "a key without a section"),
                       (["--set-grid", "optim.lr=1", "--time-limit", "0"], "time limit 0"),
                       ([], "no grid"), (["--set-grid", "optim.lr=1", "--dir", d], "DIR exists"),
                       (["--bogus"], "an unknown option")):
        p = sweep(args)
        if p.returncode != 2 or "sweep.sh:" not in p.stderr:
            problem(f"{what}: exit {p.returncode}, expected 2 with a message\n{p.stderr}")
    if h.problems:
        h.fail(f"{len(h.problems)} problem(s)")
    print("ok   bad command lines exit 2")


if __name__ == "__main__":
    main()
