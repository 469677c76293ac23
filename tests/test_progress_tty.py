"""The live progress line of `charlm train` as a terminal shows it: the run on a pseudo-terminal of
80 columns (and one of 40), its bytes replayed through a small terminal model. The line is redrawn
in place ("\\r" and clear-to-end-of-line), never wider than the terminal less one column, with
whole fields dropped (the ETA kept) rather than cut; validation lines, samples, messages and an
error line printed during the run each start a line of their own, and the output ends with a
newline. Through a pipe: plain lines, no "\\r" and no escape codes."""
import fcntl
import os
import re
import select
import struct
import subprocess
import termios

import harness as h

PROGRESS = re.compile(r"step \d+/\d+ \(\d+%\)( \| [a-zA-Z]+ [^|]+| \| [\d.?]+k? chars/s)*$")
CLEAR = "\r\x1b[K"


def on_pty(args, cols):
    """Runs charlm ARGS with stdout and stderr on a pseudo-terminal `cols` wide, without output
    processing (the bytes read are those written); returns (exit code, output)."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, cols, 0, 0))
    attr = termios.tcgetattr(slave)
    attr[1] &= ~termios.OPOST
    termios.tcsetattr(slave, termios.TCSANOW, attr)
    p = subprocess.Popen(h.command(args), stdin=subprocess.DEVNULL, stdout=slave, stderr=slave)
    os.close(slave)
    out = b""
    while True:
        r, _, _ = select.select([master], [], [], 300)  # a guard against a hang, not a timing
        if not r:
            p.kill()
            break
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        out += data
    os.close(master)
    return p.wait(), out.decode()


def screen(text, cols):
    """The lines a terminal `cols` wide shows for text (LF as CR LF, as the terminal's own output
    processing would have it; a wrapped line as its rows), and how many times a line wrapped."""
    lines, cur, col, wraps, i = [], [], 0, 0, 0
    while i < len(text):
        ch = text[i]
        if text.startswith("\x1b[K", i):
            del cur[col:]
            i += 3
            continue
        if ch == "\r":
            col = 0
        elif ch == "\n":
            lines.append("".join(cur))
            cur, col = [], 0
        else:
            if col >= cols:
                lines.append("".join(cur))
                cur, col, wraps = [], 0, wraps + 1
            if col < len(cur):
                cur[col] = ch
            else:
                cur.append(ch)
            col += 1
        i += 1
    if cur:
        lines.append("".join(cur))
    return lines, wraps


def check_tty(out, cols, what):
    redraws = [seg.split("\r")[0].split("\n")[0] for seg in out.split(CLEAR)[1:]]
    if len(redraws) < 20:
        h.problem(f"{what}: {len(redraws)} in-place redraws, expected one a step")
    for r in redraws:
        if len(r) > cols - 1 or not r.startswith("step "):
            h.problem(f"{what}: a progress line of {len(r)} columns: {r!r}")
            break
        if cols >= 80 and not (PROGRESS.match(r) and re.search(r" \| ETA \d+[smhd]", r)):
            h.problem(f"{what}: a progress line cut or without its ETA: {r!r}")
            break
    if not out.endswith("\n"):
        h.problem(f"{what}: the output does not end with a newline: {out[-80:]!r}")
    lines, _ = screen(out, cols)
    for ln in lines:
        # every kind of line starts one: nothing runs into a progress line
        if ("charlm:" in ln and not ln.startswith("charlm:")) or \
                ("val loss" in ln and not re.match(r"step \d+ \| val loss", ln)) or \
                ("/" in ln and "| loss" in ln and not (ln.startswith("step ") and
                                                        PROGRESS.match(ln))):
            h.problem(f"{what}: a garbled line on screen: {ln!r}")
    return lines


def main():
    w = h.tmpdir()
    corpus = h.write_text(w, 30000)
    common = ["train", "--corpus", corpus, "--cell", "gru", "--layers", "1", "--hidden", "32",
              "--batch", "4", "--seq", "16", "--log-every", "1", "--eval-every", "10",
              "--set", "sample.every=20", "--set", "sample.length=150"]
    # a whole run, on 80 columns: validations, samples, the end-of-run messages
    code, out = on_pty(common + ["--steps", "60", "--run-dir", os.path.join(w, "a")], 80)
    if code != 0:
        h.problem(f"train on a terminal: exit {code}:\n{out[-2000:]}")
    lines = check_tty(out, 80, "80 columns")
    if sum(1 for ln in lines if re.match(r"step \d+ \| val loss", ln)) != 6:
        h.problem("not 6 validation lines on screen:\n" + "\n".join(lines))
    if sum(1 for ln in lines if ln.startswith("charlm: sample at step")) != 4:
        h.problem("not 4 samples on screen:\n" + "\n".join(lines))
    # an error during the run starts a line: a directory where the checkpoint of step 25 (between
    # validations, with the progress line live) goes
    run = os.path.join(w, "b")
    os.makedirs(os.path.join(run, "checkpoints", "ckpt-00000025.h5", "x"))
    code, out = on_pty(common + ["--steps", "60", "--set", "checkpoint.every=25",
                                 "--run-dir", run], 80)
    lines = check_tty(out, 80, "an error during the run")
    errors = [ln for ln in lines if ln.startswith("charlm: error: cannot write checkpoint")]
    # the last line on screen: the error's (a long path wraps it)
    if code != 1 or len(errors) != 1 or not "".join(lines[lines.index(errors[0]):]).endswith(
            ".h5: Is a directory"):
        h.problem(f"the error line: exit {code}, lines end {lines[-3:]!r}")
    # a narrow terminal: fields go, then the line is cut
    code, out = on_pty(common + ["--steps", "30", "--run-dir", os.path.join(w, "c")], 40)
    check_tty(out, 40, "40 columns")
    # through a pipe: plain lines, every field
    p = h.run(common + ["--steps", "30", "--run-dir", os.path.join(w, "d")], check=True)
    if "\r" in p.stderr + p.stdout or "\x1b" in p.stderr + p.stdout:
        h.problem(f"a pipe got a carriage return or an escape code: {p.stderr[:300]!r}")
    steps = [ln for ln in p.stderr.splitlines() if re.match(r"step \d+/", ln)]
    if len(steps) != 30 or not all(PROGRESS.match(ln) and " | epoch " in ln and " | elapsed "
                                   in ln and " | ETA " in ln for ln in steps):
        h.problem(f"{len(steps)} plain progress lines, or some without all fields: {steps[:2]}")
    if h.problems:
        h.fail(f"{len(h.problems)} problem(s)")
    print("ok")


if __name__ == "__main__":
    main()
