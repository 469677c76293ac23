"""charlm across two emulated nodes (tests/cluster.py, scripts/cluster/netns-cluster.sh): Open
MPI's mpirun on node1 starts the ranks of node2 through its rsh launcher, over TCP only (btl
tcp,self; no shared memory even within a node), each node with its own hostname, address,
/tmp and /dev/shm, run.dir on the shared directory.

- `-np 2 --host node1:1,node2:1` and `-np 4 --host node1:2,node2:2`: every train line (loss,
  gradient norm) and validation equal, bit for bit, the single-host run (shared memory) with
  the same ranks and streams; the map shows the ranks on both nodes, and Open MPI's session
  directories are in each node's own /tmp.
- With OPENBLAS_CORETYPE set for mpirun on node1 and not exported (no `-x`), rank 0 warns that
  the rank on node2 computes with other OpenBLAS kernels, naming both hosts and kernel sets;
  the runs above, every rank given the caller's OPENBLAS_CORETYPE and CHARLM_KERN, do not.
- SIGTERM to the rank on node2, mid-run: the job exits 3 with a checkpoint on the shared
  directory, written by rank 0 on node1 (run.dir/lock named node1 while it ran); resumed with
  the node order reversed (mpirun and rank 0 now on node2, the lock naming node2), SIGUSR1 to
  mpirun stops it again the same way (Open MPI's daemon on node1 passes the signal on); resumed
  again, the run ends with exactly the train lines and validations of the uninterrupted run.
- SIGKILL of the rank on node2: the whole job ends, non-zero, within 10 s, leaving no charlm or
  orted on either node.
- `down` leaves no namespace, veth, bridge or process behind.

Skipped (77), saying why, without root or where network namespaces cannot be made."""
import os
import re
import signal
import subprocess
import time

import cluster as c
import harness as h

N = 200          # steps of the signal run
EVAL = 60


def small_args(corpus, run_dir, batch, steps=24):
    return ["train", "--corpus", corpus, "--cell", "lstm", "--layers", "1", "--hidden", "32",
            "--embed", "16", "--dropout", "0.1", "--batch", str(batch), "--seq", "16",
            "--steps", str(steps), "--log-every", "1", "--eval-every", "12",
            "--set", "checkpoint.every=0", "--run-dir", run_dir]


def long_args(corpus, run_dir, extra=()):
    return ["train", "--corpus", corpus, "--cell", "gru", "--layers", "1", "--hidden", "96",
            "--embed", "16", "--batch", "4", "--seq", "32", "--steps", str(N), "--epochs", "0",
            "--log-every", "1", "--eval-every", str(EVAL), "--set", "checkpoint.every=0",
            "--run-dir", run_dir] + list(extra)


def lines(run_dir):
    train, val = h.metrics(run_dir)
    return ([(m["step"], m["train_loss"], m["grad_norm"]) for m in train],
            [(m["step"], m["val_loss"]) for m in val])


def same(what, got, ref):
    """True when got's (train, validation) lines equal ref's; else records a problem naming what,
    the line counts and the first differences."""
    if got == ref:
        return True
    diff = [(x, y) for x, y in zip(got[0] + got[1], ref[0] + ref[1]) if x != y][:3]
    h.problem(f"{what}: {len(got[0])}/{len(got[1])} lines vs {len(ref[0])}/{len(ref[1])}, "
              f"first differences {diff}")
    return False


def placement(out):
    """{node: ranks} from mpirun --display-map."""
    return {n: int(k) for n, k in re.findall(r"Data for node: (\S+)\s+Num slots: \d+\s+Max "
                                             r"slots: \d+\s+Num procs: (\d+)", out)}


def last_step(run_dir):
    try:
        return lines(run_dir)[0][-1][0]
    except (FileNotFoundError, IndexError, ValueError, KeyError):
        return 0


def wait_step(proc, run_dir, step, timeout=120):
    end = time.time() + timeout
    while time.time() < end and proc.poll() is None:
        if last_step(run_dir) >= step:
            return True
        time.sleep(0.05)
    return False


def stop(cl, charlm, corpus, run_dir, hosts, step, how, send, resume_from=None):
    """Runs the long training on hosts (resuming from resume_from when given), calls
    send(proc, {pid: rank} of node2) once past `step`, and checks: exit 3, a checkpoint on the
    shared directory, Open MPI's session directories in each node's own /tmp, run.dir/lock
    naming the host of rank 0. Returns (the step stopped at, the checkpoint)."""
    extra = ["--resume", "auto"] if resume_from else []
    first = hosts.split(":")[0]
    proc = cl.popen(cl.mpirun(["-np", "2", "--host", hosts, charlm] +
                              long_args(corpus, run_dir, extra), node=first))
    if not wait_step(proc, run_dir, step):
        proc.kill()
        out, err = proc.communicate()
        h.fail(f"[{how}] the job ended (exit {proc.returncode}) before step {step}:\n{out}{err}")
    holder = open(os.path.join(run_dir, "lock")).read().split()
    for node in cl.nodes:
        local = os.listdir(os.path.join(cl.dir, "nodes", node, "tmp"))
        if not any(n.startswith(f"ompi.{node}.") for n in local):
            h.problem(f"[{how}] {node}: no Open MPI session directory in its /tmp: {local}")
    ranks = {n: sorted(cl.processes(n, charlm).values()) for n in cl.nodes}
    if ranks != {first: [0], ("node2" if first == "node1" else "node1"): [1]}:
        proc.kill()
        proc.communicate()
        h.fail(f"[{how}] ranks per node {ranks}, expected rank 0 on {first}")
    send(proc, cl.processes("node2", charlm))
    sent = last_step(run_dir)
    out, err = proc.communicate(timeout=120)
    m = re.search(r"charlm: stopped by a signal at step (\d+); checkpoint (\S+)", err)
    if proc.returncode != 3 or not m:
        h.fail(f"[{how}] at step {sent}: exit {proc.returncode}, expected 3 with a checkpoint:"
               f"\n{err}")
    if resume_from and f"resuming from {resume_from}" not in err:
        h.problem(f"[{how}] did not resume from {resume_from}:\n{err}")
    stopped, ck = int(m.group(1)), m.group(2)
    if not (ck.startswith(cl.shared) and os.path.exists(ck)) or holder[:1] != [first]:
        h.problem(f"[{how}] checkpoint {ck} (on the shared directory: {ck.startswith(cl.shared)}"
                  f", exists: {os.path.exists(ck)}); lock holder {holder}, expected {first}")
    print(f"{how}, at step {sent}: exit 3, checkpoint {os.path.relpath(ck, cl.shared)} at step "
          f"{stopped} on the shared directory; run.dir/lock named {' '.join(holder)}")
    return stopped, ck


def main():
    c.skip_unless_possible()
    os.environ["OPENBLAS_NUM_THREADS"] = "1"
    os.environ.setdefault("MPIEXEC", "mpiexec")
    os.environ.setdefault("MPIEXEC_NUMPROC_FLAG", "-n")
    charlm = os.path.abspath(h.CHARLM)
    tmp = h.tmpdir()
    cl = c.Cluster(tmp)
    t0 = time.time()
    try:
        cl.up()
        corpus = h.write_text(cl.shared, 120_000, seed=3)

        # 1. the losses across nodes equal the single-host run's
        for np_, hosts in ((2, "node1:1,node2:1"), (4, "node1:2,node2:2")):
            ref = os.path.join(tmp, f"host-np{np_}")
            h.run(small_args(corpus, ref, 2), np=np_, check=True)
            run_dir = os.path.join(cl.shared, f"nodes-np{np_}")
            p = cl.run(cl.mpirun(["--display-map", "-np", str(np_), "--host", hosts, charlm] +
                                 small_args(corpus, run_dir, 2)))
            if p.returncode != 0:
                h.fail(f"-np {np_} --host {hosts} exited {p.returncode}:\n{p.stdout}{p.stderr}")
            if "computes with" in p.stderr:
                h.problem(f"-np {np_}: a warning of ranks that round otherwise, with the same "
                          f"environment on every rank:\n{p.stderr}")
            where = placement(p.stdout + p.stderr)
            if where != {"node1": np_ // 2, "node2": np_ // 2}:
                h.problem(f"-np {np_}: ranks placed {where}, expected half on each node")
            a, b = lines(ref), lines(run_dir)
            if (len(a[0]), len(a[1])) != (24, 2):
                h.problem(f"-np {np_}: the single-host run wrote {len(a[0])} train lines and "
                          f"{len(a[1])} validations, expected 24 and 2")
            elif same(f"-np {np_}: across nodes vs one host", b, a):
                print(f"-np {np_} across nodes ({where}): 24 train lines and 2 validations equal "
                      f"to the single-host run bit for bit (final val {b[1][-1][1]})")

        # 1b. OPENBLAS_CORETYPE on node1 only (set for mpirun, not exported): rank 0 warns
        p = cl.run(cl.command("node2", [charlm, "--version"]))
        own = re.search(r"kernels (\S+)", p.stdout)
        if own is None:
            h.fail(f"charlm --version on node2 names no OpenBLAS kernels:\n{p.stdout}{p.stderr}")
        forced = "Haswell" if own.group(1).lower() == "prescott" else "Prescott"
        p = cl.run(["env", f"OPENBLAS_CORETYPE={forced}"] +
                   cl.mpirun(["-np", "2", "--host", "node1:1,node2:1", charlm] +
                             small_args(corpus, os.path.join(cl.shared, "mixed"), 2, steps=2),
                             numerics=False))
        want = "charlm: warning: rank 1 (host node2) computes with recurrent products "
        if p.returncode != 0 or want not in p.stderr or \
                f", OpenBLAS kernels {own.group(1)}, rank 0 (host node1) with " not in p.stderr or \
                f", OpenBLAS kernels {forced}: " not in p.stderr:
            h.problem(f"OPENBLAS_CORETYPE={forced} on node1 only: exit {p.returncode}, expected "
                      f"a warning starting {want!r}:\n{p.stderr}")
        else:
            print(f"OPENBLAS_CORETYPE={forced} on node1 only: rank 0 warns that rank 1 on node2 "
                  f"computes with {own.group(1)}")

        # 2. SIGTERM to the rank on node2; resumed with rank 0 on node2, SIGUSR1 to mpirun
        # there (its daemon on node1 passes it on); resumed again, to the end
        full = os.path.join(tmp, "full")
        h.run(long_args(corpus, full), np=2, check=True)
        ref = lines(full)
        run_dir = os.path.join(cl.shared, "stopped")
        stopped, ck = stop(cl, charlm, corpus, run_dir, "node1:1,node2:1", 20,
                           "SIGTERM to rank 1 on node2",
                           lambda proc, remote: os.kill(next(iter(remote)), signal.SIGTERM))
        stopped, ck = stop(cl, charlm, corpus, run_dir, "node2:1,node1:1", stopped + 40,
                           "SIGUSR1 to mpirun on node2 (rank 0 there)",
                           lambda proc, remote: proc.send_signal(signal.SIGUSR1), ck)
        p = cl.run(cl.mpirun(["-np", "2", "--host", "node2:1,node1:1", charlm] +
                             long_args(corpus, run_dir, ["--resume", "auto"]), node="node2"))
        if p.returncode != 0 or f"resuming from {ck}" not in p.stderr:
            h.fail(f"resume with rank 0 on node2 exited {p.returncode}:\n{p.stdout}{p.stderr}")
        got = lines(run_dir)
        if same("resumed on node2,node1", got, ref):
            print(f"resumed with rank 0 on node2 from step {stopped}: {len(got[0])} train lines "
                  f"and {len(got[1])} validations equal to the uninterrupted run")
        if not os.path.exists(ck):
            h.problem(f"{ck} is gone after the resume")

        # 3. SIGKILL of the rank on node2 ends the whole job
        run_dir = os.path.join(cl.shared, "killed")
        proc = cl.popen(cl.mpirun(["-np", "2", "--host", "node1:1,node2:1", charlm] +
                                  long_args(corpus, run_dir)))
        if not wait_step(proc, run_dir, 10):
            proc.kill()
            out, err = proc.communicate()
            h.fail(f"the job ended (exit {proc.returncode}) before step 10:\n{out}{err}")
        os.kill(next(iter(cl.processes("node2", charlm))), signal.SIGKILL)
        killed = time.time()
        try:
            proc.communicate(timeout=10)
            print(f"SIGKILL of rank 1 on node2: the job ended (exit {proc.returncode}) "
                  f"{time.time() - killed:.1f} s later")
            if proc.returncode == 0:
                h.problem("the job killed on node2 exited 0")
        except subprocess.TimeoutExpired:
            h.problem("SIGKILL of rank 1 on node2: the job still runs 10 s later")
            proc.kill()
            proc.communicate()
        time.sleep(1)
        for node in cl.nodes:
            left = cl.processes(node, charlm)
            left.update(cl.processes(node, "/usr/bin/orted"))
            if left:
                h.problem(f"{node}: charlm or orted left after the job ended: {left}")
    finally:
        cl.down()
        print(f"test_multinode: {time.time() - t0:.0f} s")
    if h.problems:
        h.fail(f"{len(h.problems)} problem(s)")


if __name__ == "__main__":
    main()
