"""The cells' gate loops (the loops under "#pragma GCC ivdep" in src/cell_*.c) are vectorised by
the compiler for SSE2, AVX2 and AVX-512 machines alike: their compile lines from the build's
compile_commands.json, replayed at -O3 for -march=x86-64, x86-64-v3 and x86-64-v4 with GCC's
-fopt-info-vec-optimized, must report every such loop vectorised. The gate math (sigmoid, tanh
with clamps and signs) is a large share of a small model's window; a loop the compiler leaves
scalar on one kind of CPU only (GCC did so without AVX-512 under -ftrapping-math) shows in no
other test. Skipped (77) when the compiler is not GCC on x86-64."""
import json
import os
import re
import shlex
import subprocess

import harness as h

BUILD = os.path.dirname(os.path.abspath(h.CHARLM))
SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
MARCHES = ("x86-64", "x86-64-v3", "x86-64-v4")


def gate_loops(path):
    """The line numbers of the loops right under '#pragma GCC ivdep' in a source file."""
    with open(path) as f:
        lines = f.read().splitlines()
    return [i + 2 for i, line in enumerate(lines) if line.strip() == "#pragma GCC ivdep"]


def compile_args(entry):
    """The compile line of a compile_commands.json entry as a list of arguments."""
    return shlex.split(entry["command"]) if "command" in entry else list(entry["arguments"])


def replay(entry, march):
    """The compile line of entry for -march=march at the Release build's -O3 (another build type's
    level, or a sanitizer, is not what the check is about: GCC's -O2 vectorises only loops whose
    trip count needs no remainder), writing nothing, with the vectoriser's report: returns the
    completed process (report on stderr)."""
    out = []
    skip = False
    for a in compile_args(entry):
        if skip:
            skip = False
            continue
        if a in ("-o", "-MF", "-MT"):
            skip = True
            continue
        if a.startswith(("-march=", "-fsanitize", "-O")) or a in ("-MD", "-c"):
            continue
        out.append(a)
    src = out.pop() if out[-1].endswith(".c") else entry["file"]
    return subprocess.run(out + ["-O3", f"-march={march}", "-fopt-info-vec-optimized", "-c", src,
                                 "-o", os.devnull], cwd=entry["directory"], capture_output=True,
                          text=True, timeout=300)


def main():
    db = os.path.join(BUILD, "compile_commands.json")
    if not os.path.exists(db):
        h.fail(f"{db}: missing (CMAKE_EXPORT_COMPILE_COMMANDS is on in CMakeLists.txt)")
    with open(db) as f:
        entries = [e for e in json.load(f)
                   if re.fullmatch(r"cell_\w+\.c", os.path.basename(e["file"]))
                   and os.path.dirname(os.path.abspath(e["file"])) == SRC]
    if not entries:
        h.fail(f"{db}: no compile line of src/cell_*.c")
    cc = compile_args(entries[0])[0]
    version = subprocess.run([cc, "-v"], capture_output=True, text=True).stderr
    machine = subprocess.run([cc, "-dumpmachine"], capture_output=True, text=True).stdout
    if "gcc version" not in version or not machine.startswith("x86_64"):
        print(f"skipped: {cc} is not GCC for x86-64 (-fopt-info-vec is GCC's)")
        raise SystemExit(h.SKIP)
    checked = 0
    for e in sorted(entries, key=lambda e: e["file"]):
        name = os.path.basename(e["file"])
        loops = gate_loops(e["file"])
        if not loops:
            h.problem(f"{name}: no '#pragma GCC ivdep' loop (the gate loops carry it)")
        for march in MARCHES:
            p = replay(e, march)
            if p.returncode != 0:
                h.problem(f"{name} -march={march}: the compile failed:\n{p.stderr}")
                continue
            done = {int(m) for m in re.findall(
                rf"{re.escape(name)}:(\d+):\d+: optimized: loop vectorized", p.stderr)}
            for line in loops:
                checked += 1
                if line not in done:
                    h.problem(f"{name}:{line}: the gate loop is not vectorised for "
                              f"-march={march}")
    if h.problems:
        h.fail(f"{len(h.problems)} problem(s)")
    print(f"ok: {checked} gate loops vectorised ({', '.join(MARCHES)})")


if __name__ == "__main__":
    main()
