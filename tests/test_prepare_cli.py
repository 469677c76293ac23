"""charlm prepare never destroys its input: an output that is one of the inputs (the same file
under any name, also through a directory input) is refused whatever the options, and an existing
output that is not a prepared corpus is replaced only with --force; an existing prepared corpus
is replaced as before. Each refusal is one line, exit 1, and leaves the files as they were."""
import os

import harness as h


def sha(path):
    import hashlib
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def expect_refused(args, needle, keep, what):
    before = {p: sha(p) for p in keep}
    nproblems = len(h.problems)
    p = h.run(["prepare"] + args)
    lines = [l for l in p.stderr.splitlines() if l.startswith("charlm: error:")]
    if p.returncode != 1 or len(lines) != 1 or needle not in lines[0]:
        h.problem(f"{what}: exit {p.returncode}, expected 1 and one line with '{needle}': "
                  f"{p.stderr!r}")
    for path, digest in before.items():
        if not os.path.exists(path) or sha(path) != digest:
            h.problem(f"{what}: {path} was changed")
    leftovers = [f for f in os.listdir(os.path.dirname(keep[0])) if f.endswith(".tmp")]
    if leftovers:
        h.problem(f"{what}: left {leftovers}")
    if len(h.problems) == nproblems:
        print(f"ok   {what}: {lines[0]}")


def main():
    w = h.tmpdir()
    text = h.write_text(w, 5000, name="x.txt")
    other = h.write_text(w, 3000, name="notes.txt", seed=2)
    link = os.path.join(w, "y.txt")
    os.link(text, link)
    d = os.path.join(w, "dir")
    os.mkdir(d)
    inner = h.write_text(d, 4000, name="a.txt", seed=3)

    expect_refused([text, "-o", text], "is the input", [text], "-o the input itself")
    expect_refused([text, "-o", text, "--force"], "is the input", [text], "--force, -o the input")
    expect_refused([text, "-o", link], "is the input", [text], "-o a hard link to the input")
    expect_refused([d, "-o", inner, "--force"], "is the input", [inner],
                   "-o a file of a directory input")
    expect_refused([text, "-o", other], "not a prepared corpus", [text, other],
                   "-o an existing text")

    out = os.path.join(w, "x.h5")
    h.run(["prepare", text, "-o", out], check=True)
    h.run(["prepare", other, "-o", out], check=True)  # a prepared corpus is replaced
    p = h.run(["prepare", text, "-o", other, "--force"])
    if p.returncode != 0:
        h.problem(f"--force over an existing text: exit {p.returncode}: {p.stderr!r}")
    elif not h.run(["train", "--corpus", other, "--hidden", "4", "--embed", "4", "--batch", "2",
                    "--seq", "8", "--steps", "2", "--run-dir", os.path.join(w, "run")]
                   ).returncode == 0:
        h.problem("the corpus prepared over a text with --force does not train")
    if h.problems:
        h.fail(f"{len(h.problems)} check(s) failed")
    print("test_prepare_cli: ok")


if __name__ == "__main__":
    main()
