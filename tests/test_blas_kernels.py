"""OpenBLAS's kernels match the CPU: a CPU that the OpenBLAS build does not know (Debian's 0.3.21
takes its SSE3 "Prescott" kernels on recent Xeons) still gets the AVX2 or AVX-512 kernels its
features allow, because charlm re-executes itself with OPENBLAS_CORETYPE set; a kernel set the
user names in OPENBLAS_CORETYPE is kept. Read from `charlm --version` ("kernels X").

Ranks that round otherwise: `mpiexec -n 1 env OPENBLAS_CORETYPE=Prescott charlm train … : -n 1
env OPENBLAS_CORETYPE=Core2 charlm train …` (both SSE kernel sets, which every x86-64 runs)
trains, and rank 0 warns once, naming rank 1's kernels and its own; with one kernel set on both
ranks it does not. The header line names the kernel set."""
import os
import re
import subprocess
import sys

import harness as h

OLDER = {"prescott", "core2", "penryn", "dunnington", "nehalem", "atom", "sandybridge", "katmai",
         "coppermine", "northwood", "banias", "opteron", "barcelona", "bobcat"}


def version(extra):
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_CORETYPE"}
    env.update(extra)
    p = subprocess.run(h.command(["--version"]), capture_output=True, text=True, env=env,
                       timeout=60, stdin=subprocess.DEVNULL)
    if p.returncode != 0:
        h.fail(f"charlm --version exited {p.returncode}: {p.stderr!r}")
    m = re.search(r"kernels (\S+)", p.stdout)
    return m.group(1) if m else None


def mixed():
    """Two ranks of one job, each with its own OPENBLAS_CORETYPE (MPMD: `:` between them)."""
    work = h.tmpdir()
    corpus = h.write_text(work, 20_000, seed=5)
    for cores in (("Prescott", "Core2"), ("Prescott", "Prescott")):
        run_dir = os.path.join(work, "-".join(cores))
        train = ["train", "--corpus", corpus, "--hidden", "16", "--embed", "8", "--batch", "2",
                 "--seq", "16", "--steps", "2", "--run-dir", run_dir]
        argv = h.command_mpmd([(1, ["env", f"OPENBLAS_CORETYPE={c}"], train) for c in cores])
        p = subprocess.run(argv, capture_output=True, text=True, timeout=120,
                           stdin=subprocess.DEVNULL)
        warns = [line for line in p.stderr.splitlines() if "computes with" in line]
        want = (f"charlm: warning: rank 1 (host {os.uname().nodename}) computes with recurrent "
                f"products ")
        if p.returncode != 0:
            h.problem(f"ranks with kernels {cores} exited {p.returncode}:\n{p.stderr}")
        elif f"OpenBLAS kernels {cores[0]}" not in next(
                (line for line in p.stderr.splitlines() if "BLAS thread(s)" in line), ""):
            h.problem(f"ranks with kernels {cores}: the header names no kernels {cores[0]}:\n"
                      f"{p.stderr}")
        elif cores[0] != cores[1] and (len(warns) != 1 or not warns[0].startswith(want) or
                                       f", OpenBLAS kernels {cores[1]}, rank 0 " not in warns[0] or
                                       f", OpenBLAS kernels {cores[0]}: " not in warns[0]):
            h.problem(f"ranks with kernels {cores}: expected one warning starting {want!r}, "
                      f"got {warns}")
        elif cores[0] == cores[1] and warns:
            h.problem(f"ranks with the same kernels {cores[0]}: warned {warns}")
        else:
            print(f"ok   ranks with kernels {' and '.join(cores)}: "
                  f"{'one warning' if warns else 'no warning'}")


def main():
    flags = set()
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    core = version({})
    if core is None:
        print("test_blas_kernels: the BLAS is not OpenBLAS (no kernel set to check): skipped")
        sys.exit(h.SKIP)
    if {"avx2", "fma"} <= flags:
        if core.lower() in OLDER:
            h.problem(f"this CPU has AVX2 and FMA{' and AVX-512' if 'avx512f' in flags else ''} "
                      f"but OpenBLAS runs its {core} kernels")
        else:
            print(f"ok   a CPU with AVX2{' and AVX-512' if 'avx512f' in flags else ''}: "
                  f"OpenBLAS kernels {core}")
    else:
        print(f"note no AVX2 on this CPU: OpenBLAS kernels {core}, nothing to choose")
    kept = version({"OPENBLAS_CORETYPE": "Prescott"})
    if kept != "Prescott":
        h.problem(f"OPENBLAS_CORETYPE=Prescott gave the kernels {kept}: the user's choice is lost")
    else:
        print("ok   OPENBLAS_CORETYPE=Prescott is kept")
    mixed()
    if h.problems:
        h.fail(f"{len(h.problems)} check(s) failed")
    print("test_blas_kernels: ok")


if __name__ == "__main__":
    main()
