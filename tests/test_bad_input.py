"""Every bad input of `charlm train` gets one clear line on stderr naming the file, key, value or
byte offset, exit code 1 (2 for a bad command line), and leaves no run directory behind (nor one
made on the way to it) — run directly and under `mpiexec -np 2`, where the message must still
appear exactly once. A configuration too large for the memory is bad input too: refused before
anything is allocated, naming the keys and the bytes needed and available (under an address-space
limit, so that the refusal does not depend on the machine)."""
import os
import shutil
import subprocess

import harness as h


def write(path, data):
    with open(path, "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())
    return path


def main():
    w = h.tmpdir()
    os.chmod(w, 0o755)  # the unreadable-corpus case runs as an unprivileged user
    good = write(os.path.join(w, "good.txt"), h.synthetic_text(20000))
    empty = write(os.path.join(w, "empty.txt"), b"")
    short = write(os.path.join(w, "short.txt"), h.synthetic_text(100))
    badutf = write(os.path.join(w, "bad-utf8.txt"), b"hello, w\xc3orld and more text here")
    unreadable = write(os.path.join(w, "unreadable.txt"), h.synthetic_text(20000))
    os.chmod(unreadable, 0)
    # root reads any file: that case then runs as nobody
    as_user = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "env",
               "HOME=" + w] if os.geteuid() == 0 else []
    blocker = write(os.path.join(w, "blocker"), b"a file, not a directory")
    unknown_section = write(os.path.join(w, "section.ini"), "[data]\ncorpus = %s\n[foo]\nbar = 1\n" % good)
    syntax = write(os.path.join(w, "syntax.ini"), "[model]\nhidden = 8\nthis line is broken\n")
    twice = write(os.path.join(w, "twice.ini"), "[model]\nhidden = 8\n\n[train]\nseq = 8\n"
                  "[model]\nlayers = 1\n")
    again = write(os.path.join(w, "again.ini"), "[optim]\nlr = 0.01\nclip = 1\nlr = 0.02\n")
    long_path = os.path.join(w, "x" * 5000)
    # an address-space limit (ulimit -v) of 2 GiB for the memory cases; a sanitizer build cannot
    # start under one (AddressSanitizer reserves terabytes of shadow memory): those cases run in
    # the plain build only, and say so
    limited = ["prlimit", f"--as={2 << 30}", "--"]
    # a corpus whose shard does not fit under 1 GiB of address space (about 570 MiB left after
    # MPI, OpenBLAS and HDF5): 8 KiB of text, then a hole of NULs (U+0000; sparse, so cheap)
    limited_1g = ["prlimit", f"--as={1 << 30}", "--"]
    sparse = os.path.join(w, "sparse.txt")
    with open(good, "rb") as src, open(sparse, "wb") as f:
        f.write(src.read(8192))
        f.truncate(2 << 30)
    asan = "libasan" in subprocess.run(["ldd", h.CHARLM], capture_output=True, text=True).stdout
    base = ["--corpus", good, "--steps", "2", "--batch", "2", "--seq", "8", "--hidden", "8",
            "--embed", "4", "--layers", "1"]
    # (name, extra args, expected exit code, substrings the one error line must contain)
    cases = [
        ("missing corpus", ["--corpus", os.path.join(w, "nope.txt")], 1, ["nope.txt"]),
        ("unreadable corpus", ["--corpus", unreadable], 1, ["unreadable.txt", "ermission denied"]),
        ("empty corpus", ["--corpus", empty], 1, ["empty.txt"]),
        ("corpus shorter than S*T+1", ["--corpus", short, "--batch", "4", "--seq", "32"], 1,
         ["short.txt", "needs at least", "{need}"]),
        ("invalid UTF-8", ["--corpus", badutf], 1, ["bad-utf8.txt", "byte 8"]),
        ("unknown section", ["--config", unknown_section], 1, ["foo"]),
        ("unknown key", ["--set", "model.hiden=3"], 1, ["model.hiden"]),
        ("hidden 0", ["--hidden", "0"], 1, ["model.hidden", "0"]),
        ("layers 0", ["--layers", "0"], 1, ["model.layers"]),
        ("negative lr", ["--lr", "-1"], 1, ["optim.lr", "-1"]),
        ("dropout 1", ["--dropout", "1"], 1, ["model.dropout"]),
        ("val_frac 1", ["--set", "data.val_frac=1"], 1, ["data.val_frac"]),
        ("seq 0", ["--seq", "0"], 1, ["train.seq"]),
        ("non-integer batch", ["--batch", "2.5"], 1, ["train.batch", "2.5"]),
        ("validation too short", ["--set", "data.val_frac=0.0001"], 1, ["data.val_frac", "needs at least"]),
        ("run.dir not creatable", ["--run-dir", os.path.join(blocker, "sub")], 1, ["run.dir", "blocker"]),
        # the first level can be made, the second cannot (a name longer than NAME_MAX)
        ("run.dir not creatable below a new directory",
         ["--run-dir", os.path.join(w, "fresh", "x" * 300, "sub")], 1, ["run.dir", "too long"]),
        ("config syntax error", ["--config", syntax], 1, ["syntax.ini", "3"]),
        ("missing config file", ["--config", os.path.join(w, "none.ini")], 1, ["none.ini"]),
        ("unknown option", ["--frobnicate", "1"], 2, ["--frobnicate"]),
        # the last argument: not "needs a value"
        ("unknown option at the end", ["--frobnicate"], 2, ["unknown option '--frobnicate'"]),
        ("section twice", ["--config", twice], 1, ["twice.ini:6", "[model]", "line 1"]),
        ("key twice", ["--config", again], 1, ["again.ini:4", "optim.lr", "line 2"]),
        ("hexadecimal lr", ["--lr", "0x10"], 1, ["optim.lr", "0x10"]),
        ("5000-byte value", ["--corpus", long_path], 1,
         ["data.corpus", f"({len(long_path)} bytes): is too long"]),
        ("hidden too large for the memory", ["--hidden", "32768"], 1,
         ["not enough memory", "model.hidden = 32768", "GiB", "available", "RLIMIT_AS"]),
        ("embed too large for the memory", ["--embed", "2000000000"], 1,
         ["not enough memory", "model.embed = 2000000000", "TiB", "RLIMIT_AS"]),
        ("16 layers of 3000 under ulimit -v", ["--layers", "16", "--hidden", "3000"], 1,
         ["not enough memory", "model.layers = 16", "model.hidden = 3000", "RLIMIT_AS"]),
        ("corpus too large for the memory", ["--corpus", sparse], 1,
         ["not enough memory", "data.corpus", "this rank's", "available", "RLIMIT_AS"]),
        # no limit: too large for any machine's memory
        ("hidden 2^31-1", ["--hidden", "2147483647"], 1,
         ["not enough memory", "model.hidden = 2147483647", "available"]),
    ]
    prefixes = {"unreadable corpus": as_user, "hidden too large for the memory": limited,
                "embed too large for the memory": limited,
                "16 layers of 3000 under ulimit -v": limited,
                "corpus too large for the memory": limited_1g}
    bad = 0
    for np in (None, 2):
        for name, extra, code, want in cases:
            if "--run-dir" in extra:
                run_dir = extra[extra.index("--run-dir") + 1]
                args = ["train"] + base + extra
            else:
                run_dir = os.path.join(w, "run-" + name.replace(" ", "-"))
                args = ["train"] + base + ["--run-dir", run_dir] + extra
            before = set(os.listdir(w))
            prefix = prefixes.get(name, [])
            if prefix in (limited, limited_1g) and asan:
                print(f"skipped [{name}]: an AddressSanitizer build cannot run under ulimit -v")
                continue
            if prefix and not shutil.which(prefix[0]):
                h.fail("setpriv (util-linux) is needed to test an unreadable file as root")
            p = h.run(args, np=np, timeout=120, prefix=prefix)
            ranks = 2 if np else 1
            need = str(ranks * 4 * 32 + 1)
            errors = [l for l in p.stderr.splitlines() if l.startswith("charlm: error:")]
            where = f"[{name}, {'-np 2' if np else 'no mpirun'}]"
            problems = []
            if p.returncode != code:
                problems.append(f"exit code {p.returncode}, expected {code}")
            if len(errors) != 1:
                problems.append(f"{len(errors)} error lines, expected exactly 1")
            for s in want:
                s = s.replace("{need}", need)
                if errors and s not in errors[0]:
                    problems.append(f"error line does not name '{s}'")
            # the run directory itself, or any directory made on the way to it
            new = [os.path.join(w, x) for x in sorted(set(os.listdir(w)) - before)]
            left = [d for d in dict.fromkeys([run_dir] + new) if os.path.exists(d)]
            if left:
                problems.append(f"left {', '.join(left)} behind")
                for d in left:
                    shutil.rmtree(d, ignore_errors=True)
            if problems:
                bad += 1
                print(f"FAIL {where}: " + "; ".join(problems))
                print("  stderr: " + p.stderr.strip().replace("\n", "\n          "))
            else:
                print(f"ok   {where}: {errors[0]}")
    if bad:
        h.fail(f"{bad} bad-input case(s) misbehaved")


if __name__ == "__main__":
    main()
