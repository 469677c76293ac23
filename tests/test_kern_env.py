"""CHARLM_KERN forces the path of the recurrent products (src/README.md §3), and a bad value is bad
input, not a bug:
 - a value that names no path, or a path this CPU cannot run, is refused at start-up by every
   command that runs a model: exit 1 and one line `charlm: error: CHARLM_KERN=…` naming the value
   and the paths this CPU runs — also under `mpiexec -np 2` when only rank 1 has it;
 - every path this CPU runs trains at both precisions, validation included: the products of the
   precision the path runs take it (the header line names it), those of the other precision
   their default — bf16 training validates in fp32, so a bf16-only path must not stop it (it
   used to abort with "internal error");
 - commands that run no model (status, inspect) ignore it."""
import os
import re
import subprocess

import harness as h

# the precisions each path runs (kern_path_supported)
SERVES = {"blas": ("fp32", "bf16"), "avx2": ("fp32",), "avx512": ("fp32",),
          "avx512bf16": ("bf16",), "amx": ("bf16",)}


def run(argv, env_extra, timeout=120):
    env = dict(os.environ)
    env.pop("CHARLM_KERN", None)
    env.update(env_extra)
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env,
                          stdin=subprocess.DEVNULL)


def header_path(stderr):
    """(path, precision) of the header's `recurrent products P PREC`, or None."""
    m = re.search(r"recurrent products (\S+) (\S+),", stderr)
    return m.groups() if m else None


def main():
    work = h.tmpdir()
    corpus = h.write_text(work, 20_000, seed=3)
    n = [0]

    def train(prec):
        n[0] += 1
        return ["train", "--corpus", corpus, "--hidden", "16", "--embed", "8", "--batch", "2",
                "--seq", "16", "--steps", "2", "--set", f"model.precision={prec}",
                "--set", "data.val_frac=0.2", "--run-dir", os.path.join(work, f"run{n[0]}")]

    # the refusal, and from it the paths this CPU runs
    p = run(h.command(train("fp32")), {"CHARLM_KERN": "bogus"})
    errors = [x for x in p.stderr.splitlines() if x.startswith("charlm: error:")]
    m = re.search(r"this CPU runs ([a-z0-9, ]+)\)", errors[0]) if len(errors) == 1 else None
    if p.returncode != 1 or not m or "CHARLM_KERN=bogus: not a kernel path" not in errors[0]:
        h.fail(f"CHARLM_KERN=bogus: exit {p.returncode}, expected 1 and one line naming the "
               f"value and the paths this CPU runs; stderr {p.stderr!r}")
    runs = m.group(1).split(", ")
    print(f"ok   CHARLM_KERN=bogus refused: {errors[0]}")
    if "blas" not in runs or any(x not in SERVES for x in runs):
        h.problem(f"the paths this CPU runs: {runs}: expected blas and known names only")

    for args, what in ((["eval", os.path.join(work, "none.h5"), corpus], "eval"),
                       (["sample", os.path.join(work, "none.h5")], "sample"),
                       (["gradflow", os.path.join(work, "none.h5"), "--corpus", corpus],
                        "gradflow")):
        p = run(h.command(args), {"CHARLM_KERN": "bogus"})
        if p.returncode != 1 or p.stderr.count("\n") != 1 or "CHARLM_KERN=bogus" not in p.stderr:
            h.problem(f"{what} with CHARLM_KERN=bogus: exit {p.returncode}, expected 1 and one "
                      f"line naming it (before the checkpoint): {p.stderr!r}")
        else:
            print(f"ok   {what} refuses it too")
    p = run(h.command(["status", work]), {"CHARLM_KERN": "bogus"})
    if "CHARLM_KERN" in p.stderr:
        h.problem(f"status (no model) looked at CHARLM_KERN: {p.stderr!r}")

    unrun = [x for x in SERVES if x not in runs]
    if unrun:
        p = run(h.command(train("fp32")), {"CHARLM_KERN": unrun[0]})
        if p.returncode != 1 or f"CHARLM_KERN={unrun[0]}: a kernel path this CPU cannot " \
                "run" not in p.stderr or p.stderr.count("\n") != 1:
            h.problem(f"CHARLM_KERN={unrun[0]} (not run by this CPU): exit {p.returncode}: "
                      f"{p.stderr!r}")
        else:
            print(f"ok   CHARLM_KERN={unrun[0]}, which this CPU does not run, refused")
    else:
        print("skipped: a known path this CPU cannot run (it runs all of them)")

    # rank 1 alone has the bad value: one line, exit 1, no rank left waiting
    argv = h.command_mpmd([(1, [], train("fp32")), (1, ["env", "CHARLM_KERN=avx512x"],
                                                    train("fp32"))])
    p = run(argv, {})
    errors = [x for x in p.stderr.splitlines() if x.startswith("charlm: error:")]
    if p.returncode != 1 or len(errors) != 1 or "CHARLM_KERN=avx512x" not in errors[0]:
        h.problem(f"rank 1 alone with CHARLM_KERN=avx512x: exit {p.returncode}, "
                  f"{len(errors)} error lines: {p.stderr!r}")
    else:
        print("ok   rank 1 alone with a bad value: one line, exit 1")

    default = {}
    for prec in ("fp32", "bf16"):
        p = run(h.command(train(prec)), {})
        default[prec] = header_path(p.stderr)
        if p.returncode != 0 or not default[prec]:
            h.fail(f"{prec} without CHARLM_KERN: exit {p.returncode}: {p.stderr!r}")
    for path in runs:
        for prec in ("fp32", "bf16"):
            p = run(h.command(train(prec)), {"CHARLM_KERN": path})
            want = (path, prec) if prec in SERVES[path] else default[prec]
            got = header_path(p.stderr)
            where = f"CHARLM_KERN={path}, model.precision = {prec}"
            if p.returncode != 0 or "val loss" not in p.stdout + p.stderr:
                h.problem(f"{where}: exit {p.returncode}, expected a run that validates: "
                          f"{p.stderr[-600:]!r}")
            elif got != want:
                h.problem(f"{where}: the products ran on {got}, expected {want}")
            else:
                print(f"ok   {where}: products {' '.join(got)}, validated")
    if h.problems:
        h.fail(f"{len(h.problems)} problem(s)")


if __name__ == "__main__":
    main()
