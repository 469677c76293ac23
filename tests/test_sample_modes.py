"""`charlm sample`'s beam search, interactive mode and JSON output on tiny models trained here.

Beam search against an exhaustive search: on a 3-character vocabulary every continuation of L
characters is scored through `--interactive --json --logprobs --length 0` (the log-probability
of each prime character given those before it), and a beam at least V^(L-1) wide, which then
prunes nothing that could win, must find the best one, also with a stop character and each
length normalisation; `--count K` must give the K best in order. The interactive mode through a
pipe (reset and kept state against the one-shot command, bad lines under both --unknown
policies, EOF) and a pseudo-terminal (streaming, Ctrl-D, Ctrl-C while generating and while
waiting); JSON through json.loads with Unicode, quotes, backslashes and tabs; bad options."""
import fcntl
import itertools
import json
import os
import select
import subprocess
import termios

import harness as h


def train(w, name, text, cell, hidden=8, steps=30):
    corpus = os.path.join(w, name + ".txt")
    with open(corpus, "w", encoding="utf-8") as f:
        f.write(text)
    run = os.path.join(w, name)
    h.run(["train", "--corpus", corpus, "--cell", cell, "--layers", "2", "--hidden", str(hidden),
           "--embed", "4", "--batch", "4", "--seq", "16", "--steps", str(steps), "--lr", "0.02",
           "--run-dir", run], check=True)
    return os.path.join(run, "checkpoints", f"ckpt-{steps:08d}.h5")


def tiny_text():
    """'a', 'b' and '.' only: V = 3, so that V^L continuations can all be scored."""
    import random
    r = random.Random(3)
    return "".join(r.choice(["ab.", "ba.", "aab.", "b.", "abba."]) for _ in range(1500))


def piped(ckpt, args, stdin, code=0):
    p = subprocess.run(h.command(["sample", ckpt] + args), input=stdin.encode(),
                       capture_output=True, timeout=600)
    out, err = p.stdout.decode(), p.stderr.decode()
    if p.returncode != code:
        h.problem(f"sample {args}: exit {p.returncode}, expected {code}: {err}")
    return out, err


def scores(ckpt, prime, conts):
    """log p(cont | prime) for each continuation, through the prime scoring of --logprobs."""
    out, _ = piped(ckpt, ["--interactive", "--json", "--logprobs", "--length", "0"],
                   "".join(prime + c + "\n" for c in conts))
    res = []
    for c, line in zip(conts, out.splitlines()):
        lp = json.loads(line)["prime_logprobs"]
        res.append(sum(lp[len(prime):]))
    if len(res) != len(conts):
        h.fail(f"scoring gave {len(res)} lines for {len(conts)} primes")
    return res


def best_of(cands):
    """cands: (score, text) pairs, best first."""
    return sorted(cands, key=lambda x: -x[0])


def check_beam(ckpt, cell):
    prime, L, V = "ab", 6, ".ab"
    conts = ["".join(t) for t in itertools.product(V, repeat=L)]
    sc = scores(ckpt, prime, conts)
    ranked = best_of(list(zip(sc, conts)))
    width = str(len(V) ** (L - 1))
    out, _ = piped(ckpt, ["--prime", prime, "--length", str(L), "--beam", width, "--count", "5",
                          "--json"], "")
    got = [json.loads(x) for x in out.splitlines()]
    for i, g in enumerate(got):
        s, t = ranked[i]
        # exactly the same computation, so equal scores; a tie may order two texts either way
        if g["text"] != t and not (abs(g["logprob"] - s) < 1e-12):
            h.problem(f"{cell}: beam hypothesis {i} {g['text']!r} ({g['logprob']}), exhaustive "
                      f"{t!r} ({s})")
        if abs(g["logprob"] - s) > 1e-9 or abs(g["score"] - s / L) > 1e-9:
            h.problem(f"{cell}: beam {i} score {g} against exhaustive {s}")
    if len(got) != 5:
        h.problem(f"{cell}: --count 5 gave {len(got)} hypotheses")
    # with a stop character: every text of at most L characters that ends with the first stop,
    # or has none and L characters, ranked by sum / len^alpha
    ended = [c for n in range(1, L + 1) for c in ("".join(t) + "." for t in
             itertools.product("ab", repeat=n - 1))]
    full = ["".join(t) for t in itertools.product("ab", repeat=L)]
    sc_e, sc_f = scores(ckpt, prime, ended), scores(ckpt, prime, full)
    for alpha in ("0", "0.5", "1", "2"):
        a = float(alpha)
        cands = [(s / len(t) ** a, t) for s, t in zip(sc_e + sc_f, ended + full)]
        ranked = best_of(cands)
        out, _ = piped(ckpt, ["--prime", prime, "--length", str(L), "--beam", width,
                              "--beam-stop", ".", "--length-norm", alpha, "--json"], "")
        g = json.loads(out)
        if g["text"] != ranked[0][1] and abs(g["score"] - ranked[0][0]) > 1e-12:
            h.problem(f"{cell}: --beam-stop . --length-norm {alpha}: {g['text']!r} "
                      f"({g['score']}), exhaustive {ranked[0][1]!r} ({ranked[0][0]})")
    # a beam of one is greedy decoding; the search is deterministic
    one, _ = piped(ckpt, ["--prime", prime, "--length", "40", "--beam", "1"], "")
    greedy, _ = piped(ckpt, ["--prime", prime, "--length", "40", "--temperature", "0"], "")
    if one != greedy:
        h.problem(f"{cell}: --beam 1 differs from greedy:\n{one!r}\n{greedy!r}")
    again, _ = piped(ckpt, ["--prime", prime, "--length", "40", "--beam", "7"], "")
    if again != piped(ckpt, ["--prime", prime, "--length", "40", "--beam", "7"], "")[0]:
        h.problem(f"{cell}: two beam searches differ")
    if not again.startswith(prime) or len(again) != len(prime) + 41:
        h.problem(f"{cell}: beam output is not prime + 40 characters + newline: {again!r}")


def check_pipe(ckpt):
    def one_shot(prime, *a, length=12):
        return piped(ckpt, ["--prime", prime, "--length", str(length)] + list(a),
                     "")[0][len(prime):-1]

    # greedy, reset: each line as the one-shot command; kept: the lines as one text
    lines = ["ab", "ba.", "ab"]
    out, err = piped(ckpt, ["--interactive", "--length", "12", "--temperature", "0"],
                     "\n".join(lines) + "\n")
    want = [one_shot(x, "--temperature", "0") for x in lines]
    if out.split("\n") != want + [""]:
        h.problem(f"interactive greedy:\n{out!r}\nwant {want!r}")
    out, _ = piped(ckpt, ["--interactive", "--length", "12", "--temperature", "0",
                          "--keep-state"], "\n".join(lines))  # the last line has no newline
    got, text = out.split("\n"), ""
    for i, x in enumerate(lines):
        want = one_shot(text + x, "--temperature", "0")
        if i >= len(got) or got[i] != want:
            h.problem(f"--keep-state line {i}: {got!r}, want {want!r} after {text + x!r}")
            break
        text += x + want
    # sampled: line i draws as sample index i-1, the one-shot command as index 0
    out, _ = piped(ckpt, ["--interactive", "--length", "12", "--seed", "9"], "ab\n")
    if out != one_shot("ab", "--seed", "9") + "\n":
        h.problem(f"interactive sampling differs from the one-shot sample: {out!r}")
    # an empty line starts after a newline (reset) or goes on (kept); a beam per line
    out, _ = piped(ckpt, ["--interactive", "--length", "5", "--beam", "3"], "\nab\n")
    if len(out.split("\n")) != 3 or out.split("\n")[1] != one_shot("ab", "--beam", "3", length=5):
        h.problem(f"interactive --beam: {out!r}")
    # bad lines: --unknown error ends with exit 1 naming the line; skip goes on, saying so
    out, err = piped(ckpt, ["--interactive", "--length", "4"], "ab\nazb\nab\n", code=1)
    if (len(out.splitlines()) != 1 or err.count("\n") != 1 or
            not err.startswith("charlm: error: stdin line 2: character 'z' (U+007A) at byte 1")):
        h.problem(f"interactive, unknown character: out {out!r} err {err!r}")
    out, err = piped(ckpt, ["--interactive", "--length", "4", "--unknown", "skip"],
                     "ab\nazzb\nab\n")
    if len(out.splitlines()) != 3 or "stdin line 2: dropped 2 characters" not in err:
        h.problem(f"interactive --unknown skip: out {out!r} err {err!r}")
    p = subprocess.run(h.command(["sample", ckpt, "--interactive", "--length", "4", "--unknown",
                                  "skip"]), input=b"ab\na\xffb\nab\n", capture_output=True,
                       timeout=600)
    err = p.stderr.decode()
    if (p.returncode != 0 or len(p.stdout.splitlines()) != 2 or err.count("\n") != 1 or
            "stdin line 2: invalid UTF-8 at byte 1 (line skipped)" not in err):
        h.problem(f"interactive invalid UTF-8: exit {p.returncode} {p.stdout!r} {err!r}")


class Pty:
    """charlm on a pseudo-terminal (its controlling terminal: ^C and ^D as typed), without echo
    or output processing, so that the bytes read are those written."""

    def __init__(self, args):
        self.master, slave = os.openpty()
        attr = termios.tcgetattr(slave)
        attr[1] &= ~termios.OPOST
        attr[3] &= ~termios.ECHO
        termios.tcsetattr(slave, termios.TCSANOW, attr)
        self.p = subprocess.Popen(h.command(args), stdin=slave, stdout=slave, stderr=slave,
                                  start_new_session=True,
                                  preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0))
        os.close(slave)
        self.out = b""

    def read_until(self, pred, limit=120):
        """Reads until pred(self.out) or the end of the output; the limit only guards a hang."""
        while not pred(self.out):
            r, _, _ = select.select([self.master], [], [], limit)
            if not r:
                return False
            try:
                data = os.read(self.master, 4096)
            except OSError:  # EIO: the child closed the terminal
                return pred(self.out)
            if not data:
                return pred(self.out)
            self.out += data
        return True

    def close(self):
        try:
            code = self.p.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.p.kill()
            code = self.p.wait()
        self.read_until(lambda _: False, limit=1)
        os.close(self.master)
        return code


def check_pty(ckpt):
    # a line typed, its continuation streamed, then ^D ends with 0
    t = Pty(["sample", ckpt, "--interactive", "--length", "20", "--temperature", "0"])
    os.write(t.master, b"ab\n")
    want = piped(ckpt, ["--prime", "ab", "--length", "20", "--temperature", "0"], "")[0][2:]
    ok = t.read_until(lambda o: o.endswith(b"\n"))
    os.write(t.master, b"\x04")
    code = t.close()
    if not ok or code != 0 or t.out.decode() != want:
        h.problem(f"pty: exit {code}, output {t.out!r}, want {want!r}")
    # ^C while a long continuation streams: it stops, ends the line, exits 0
    t = Pty(["sample", ckpt, "--interactive", "--length", "1000000000"])
    os.write(t.master, b"ab\n")
    ok = t.read_until(lambda o: len(o) > 200)
    os.write(t.master, b"\x03")
    code = t.close()
    if not ok or code != 0 or not t.out.endswith(b"\n") or b"charlm" in t.out:
        h.problem(f"pty ^C while generating: exit {code}, output ends {t.out[-60:]!r}")
    # ^C while waiting for a line
    t = Pty(["sample", ckpt, "--interactive", "--length", "3"])
    os.write(t.master, b"ab\n")
    ok = t.read_until(lambda o: o.endswith(b"\n"))
    os.write(t.master, b"\x03")
    code = t.close()
    if not ok or code != 0 or len(t.out.splitlines()) != 1:
        h.problem(f"pty ^C while waiting: exit {code}, output {t.out!r}")


def check_json(w):
    text = h.synthetic_text(20000, seed=4)
    text = text.replace("the", 'th"e').replace("of", "o\\f").replace("and", "a\tnd")
    ckpt = train(w, "uni", text, "lstm", hidden=32, steps=300)
    prime = '한국어 "o\\f"\ta'
    plain, _ = piped(ckpt, ["--prime", prime, "--length", "300", "--seed", "3"], "")
    out, _ = piped(ckpt, ["--prime", prime, "--length", "300", "--seed", "3", "--json",
                          "--logprobs", "--count", "2"], "")
    objs = [json.loads(x) for x in out.splitlines()]
    o = objs[0]
    if o["prime"] != prime or prime + o["text"] + "\n" != plain:
        h.problem(f"--json prime/text differ from the text output:\n{o}\n{plain!r}")
    if len(objs) != 2 or objs[1]["text"] == o["text"]:
        h.problem(f"--json --count 2: {len(objs)} objects")
    lp, plp = o["logprobs"], o["prime_logprobs"]
    if (len(lp) != len(o["text"]) or len(plp) != len(prime) or plp[0] is not None or
            not all(x <= 0 for x in lp + plp[1:])):
        h.problem(f"--logprobs lengths or values: {len(lp)} {len(plp)} {plp[:3]}")
    # generation and scoring agree: the prime+text scored gives the same numbers
    out, _ = piped(ckpt, ["--interactive", "--json", "--logprobs", "--length", "0"],
                   prime + o["text"].split("\n")[0] + "\n")
    n = len(o["text"].split("\n")[0])
    scored = json.loads(out)["prime_logprobs"][len(prime):]
    if scored != lp[:n]:
        h.problem(f"scored log-probabilities differ from the generated ones: {scored[:4]} "
                  f"{lp[:4]}")
    return ckpt


def check_keep_beam(ckpt):
    """A beam with kept state goes on from the state after the best continuation (an empty line
    continues): the second line is the one-shot search after the prime and the first line."""
    out, _ = piped(ckpt, ["--interactive", "--length", "30", "--beam", "4", "--keep-state"],
                   "The \n\n")
    got = out.split("\n")
    run = lambda prime: piped(ckpt, ["--prime", prime, "--length", "30", "--beam", "4"],
                              "")[0][len(prime):-1]
    first = run("The ")
    second = run("The " + first)
    if second == first:
        h.problem("--keep-state --beam: the check cannot tell a kept state from a reset one")
    if got != [first, second, ""]:
        h.problem(f"--keep-state --beam: {got!r}, want {[first, second]!r}")


def check_bad(ckpt):
    cases = [
        (["--beam", "0"], 2, "--beam 0: expected an integer"),
        (["--beam", "3", "--temperature", "0.5"], 2, "--beam with --temperature"),
        (["--beam", "3", "--seed", "2"], 2, "--beam with --seed"),
        (["--beam-stop", "."], 2, "--beam-stop needs --beam"),
        (["--beam", "2", "--length-norm", "1"], 2, "--length-norm needs --beam-stop"),
        (["--beam", "2", "--beam-stop", "ab"], 2, "--beam-stop 'ab': expected one character"),
        (["--beam", "2", "--beam-stop", "z"], 1, "--beam-stop 'z' (U+007A) is not in"),
        (["--beam", "2", "--count", "3"], 2, "--count 3 with --beam 2"),
        (["--keep-state"], 2, "--keep-state carries"),
        (["--logprobs"], 2, "--logprobs adds a field to --json"),
        (["--interactive", "--prime", "ab"], 2, "--interactive reads its primes from stdin"),
        (["--interactive", "--count", "2"], 2, "--count does not apply"),
        (["--beam", "2", "--beam-stop", ".", "--length-norm", "-1"], 2, "--length-norm -1"),
    ]
    for args, code, msg in cases:
        _, err = piped(ckpt, args, "", code=code)
        if err.count("\n") != 1 or not err.startswith("charlm: error: ") or msg not in err:
            h.problem(f"sample {args}: want one line with {msg!r}: {err!r}")


def main():
    w = h.tmpdir()
    tiny = {cell: train(w, cell, tiny_text(), cell) for cell in ("gru", "lstm", "rnn")}
    for cell, ckpt in tiny.items():
        check_beam(ckpt, cell)
    check_pipe(tiny["lstm"])
    check_pty(tiny["gru"])
    check_keep_beam(check_json(w))
    check_bad(tiny["gru"])
    if h.problems:
        h.fail(f"{len(h.problems)} problem(s)")
    print("ok")


if __name__ == "__main__":
    main()
