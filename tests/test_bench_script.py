"""scripts/bench.sh end to end as a smoke run (QUICK=1, the smallest work): the table against
PyTorch, the ranks-against-threads comparison, fp32 against bf16 (BF16_CMP) and one build against
another (BASE, here the same binary) all reach their result lines, and the raw output lands in
RESULTS_DIR. It checks that the script runs to its end, not any speed: a run without validation
once ended the script silently after the sgemm peak (grep's status under pipefail). Needs
Debian's python3-torch for the reference (/usr/bin/python3); exit 77 (skipped) without."""
import os
import re
import subprocess

import harness as h

BENCH = os.path.join(h.SCRIPTS, "bench.sh")
PYTHON = "/usr/bin/python3"


def main():
    if subprocess.run([PYTHON, "-c", "import torch"], capture_output=True).returncode != 0:
        print(f"skipped: {PYTHON} has no torch (needs Debian's python3-torch)")
        raise SystemExit(h.SKIP)
    w = h.tmpdir()
    charlm = os.path.abspath(h.CHARLM)
    env = dict(os.environ, QUICK="1", WORKS="lstm128", SGEMM_SECONDS="1", RESULTS_DIR=w,
               CHARLM=charlm, BASE=charlm, BF16_CMP="1", PYTHON=PYTHON, TMPDIR=w)
    mpirun = os.environ.get("MPIEXEC")
    if mpirun:
        env["MPIRUN"] = mpirun
    p = subprocess.run(["bash", BENCH], env=env, capture_output=True, text=True, timeout=900)
    if p.returncode != 0:
        h.fail(f"bench.sh: exit {p.returncode}\nstdout:\n{p.stdout[-3000:]}\nstderr:\n"
               f"{p.stderr[-3000:]}")
    out = p.stdout
    want = {
        "the table against PyTorch": r"^lstm128 +\d+ +\d+ +[\d.]+x .*%$",
        "ranks against threads": r"^lstm512 ranks vs threads: .*x\)$",
        "the base build's header": r"^base: +\S+",
        "the raw output's name": r"^raw output: ",
    }
    for what, pattern in want.items():
        if not re.search(pattern, out, re.M):
            h.problem(f"bench.sh printed no line for {what} (/{pattern}/):\n{out[-4000:]}")
    # two compare_charlm tables (bf16, base), each a row for the one work
    rows = re.findall(r"^lstm128 +40 +\d+ +\d+ +[\d.]+x +[\d.]+ +[\d.]+$", out, re.M)
    if len(rows) != 2:
        h.problem(f"expected 2 rows of charlm against charlm (BF16_CMP, BASE), got {rows}")
    raws = [f for f in os.listdir(w) if f.endswith("-quick.txt")]
    if len(raws) != 1:
        h.problem(f"expected one raw output <stamp>-quick.txt in RESULTS_DIR, got {raws}")
    leftovers = [f for f in os.listdir(w) if f.startswith("charlm-bench.")]
    if leftovers:
        h.problem(f"bench.sh left its temporary directory: {leftovers}")
    if h.problems:
        h.fail(f"{len(h.problems)} problem(s)")
    print("ok: bench.sh QUICK=1 ran its table, ranks vs threads, BF16_CMP and BASE to the end")


if __name__ == "__main__":
    main()
