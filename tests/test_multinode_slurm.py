"""charlm under a SLURM of two emulated nodes (tests/cluster.py; netns-cluster.sh slurm-up:
munged on each node with one key, slurmctld on node1, one slurmd per node with its own
NodeName, NodeAddr and spool): `sbatch --nodes=2 --ntasks-per-node=1 scripts/slurm/charlm.sbatch`
with the ranks launched by srun (--mpi=pmix, Debian's Open MPI and slurm-wlm) and by mpirun
inside the allocation, which the batch script chooses by itself when srun lacks the PMI plugin
(CHARLM_SRUN_MPI naming one that does not exist). Each job is stopped mid-run by
`scancel --signal=USR1 --batch`, requeues itself and resumes from its checkpoint on the shared directory, and must end with exactly the
validation losses of the same run uninterrupted (-np 2 on one host); the step's tasks must have
run on node1 and node2.

Skipped (77), saying why, without root, network namespaces, SLURM or munge."""
import os
import re
import sys
import time

import cluster as c
import harness as h
import test_slurm as ts

STEPS = 600
SMALLER = ["--set", "model.hidden=64", "--set", "train.batch=4"]  # than test_slurm's run


def main():
    c.skip_unless_possible()
    h.skip_without_slurm()
    os.environ.setdefault("MPIEXEC", "mpiexec")
    os.environ.setdefault("MPIEXEC_NUMPROC_FLAG", "-n")
    os.environ["OPENBLAS_NUM_THREADS"] = "1"
    for k in [k for k in os.environ if k.startswith("SLURM_")]:
        del os.environ[k]
    charlm = os.path.abspath(h.CHARLM)
    ts.RANKS = 1  # --ntasks-per-node of ts.submit: one rank on each of the two nodes
    tmp = h.tmpdir()
    cl = c.Cluster(tmp)
    t0 = time.time()
    ok = False
    try:
        cl.up()
        p = cl.script("slurm-up")
        print(p.stdout.strip().splitlines()[-2])
        # sbatch, squeue, scancel, scontrol from here run on node1 (netns-cluster.sh's shims)
        os.environ["SLURM_CONF"] = os.path.join(cl.dir, "slurm", "slurm.conf")
        os.environ["PATH"] = os.path.join(cl.dir, "bin") + os.pathsep + os.environ["PATH"]
        os.environ.update({k: cl.env[k] for k in cl.env if k.startswith("CHARLM_CLUSTER_")})

        corpus = os.path.join(cl.shared, "corpus.txt")
        with open(corpus, "w") as f:
            f.write(h.synthetic_text(200_000, seed=6))
        ini = os.path.join(cl.shared, "run.ini")
        with open(ini, "w") as f:
            f.write(ts.CONFIG.format(corpus=corpus, steps=STEPS, run_dir="unused"))
        ref_dir = os.path.join(tmp, "reference")
        t = time.time()
        h.run(["train", "--config", ini, "--run-dir", ref_dir] + SMALLER, np=2, timeout=600, check=True)
        ref = ts.val_records(ref_dir)
        print(f"uninterrupted -np 2 on one host: {time.time() - t:.0f} s, final validation "
              f"loss {ref[-1][1]}")

        # srun by default; mpirun chosen by the script itself when srun lacks the PMI plugin
        for launcher, env in (("srun", {}), ("mpirun", {"CHARLM_SRUN_MPI": "nosuchpmi"})):
            run_dir = os.path.join(cl.shared, f"run-{launcher}")
            t = time.time()
            job, out = ts.submit(cl.shared, launcher, ["--nodes=2", ts.SBATCH, ini,
                                                       "--run-dir", run_dir] + SMALLER,
                                 dict(env, CHARLM_BIN=charlm, CHARLM_MAX_REQUEUES="5"))
            deadline = time.time() + ts.JOB_TIMEOUT
            while ts.last_train_step(run_dir) < STEPS // 4:
                if time.time() > deadline or ts.job_state(job) in ts.FINAL:
                    h.fail(f"{launcher}: job {job} did not get to step {STEPS // 4} (state "
                           f"{ts.job_state(job)}):\n{ts.read(out)}")
                time.sleep(0.2)
            ts.sh(["scancel", "--signal=USR1", "--batch", str(job)])
            print(f"{launcher}: job {job}: scancel --signal=USR1 --batch at step "
                  f"~{ts.last_train_step(run_dir)}")
            st = ts.wait_job(job, out, deadline)
            print(f"{launcher}: job {job} ended ({st}) after {time.time() - t:.0f} s")
            ts.check_job(launcher, out, run_dir, STEPS, ref, True)
            text = ts.read(out)
            launched = re.findall(r"launcher (\w+)$", text, re.M)
            if not launched or any(x != launcher for x in launched):
                h.problem(f"{launcher}: the job's starts used the launchers {launched}")
            nodes = re.findall(r"on (\S+): 2 rank\(s\) x 1 CPU", text)
            if not nodes or any(n != "node[1-2]" for n in nodes):
                h.problem(f"{launcher}: the job's starts ran on {nodes}, expected node[1-2]")
        ok = True
    finally:
        if not ok:
            for name in sorted(os.listdir(cl.shared)) if os.path.isdir(cl.shared) else []:
                if name.endswith(".out"):
                    sys.stderr.write(f"==== {name}\n{ts.read(os.path.join(cl.shared, name))[-5000:]}\n")
            logs = os.path.join(cl.dir, "slurm", "log")
            for name in sorted(os.listdir(logs)) if os.path.isdir(logs) else []:
                sys.stderr.write(f"==== {name} (tail)\n" + "".join(
                    ts.read(os.path.join(logs, name)).splitlines(True)[-25:]))
        cl.down()
        print(f"test_multinode_slurm: {time.time() - t0:.0f} s")
    if h.problems:
        h.fail(f"{len(h.problems)} problem(s)")


if __name__ == "__main__":
    main()
