"""OpenBLAS's kernels match the CPU: a CPU that the OpenBLAS build does not know (Debian's 0.3.21
takes its SSE3 "Prescott" kernels on recent Xeons) still gets the AVX2 or AVX-512 kernels its
features allow, because charlm re-executes itself with OPENBLAS_CORETYPE set; a kernel set the
user names in OPENBLAS_CORETYPE is kept. Read from `charlm --version` ("kernels X")."""
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
    if h.problems:
        h.fail(f"{len(h.problems)} check(s) failed")
    print("test_blas_kernels: ok")


if __name__ == "__main__":
    main()
