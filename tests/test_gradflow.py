"""`charlm gradflow`: the mean norm ||dL_t/dh_{t-k}|| of every layer against PyTorch autograd, and
its behaviour.

  (a) for each cell (rnn, lstm, gru) with 2 layers, a small model trained here is unrolled step by
      step in torch (float64, the cell equations of src/README.md §3 written out, checked against
      torch.nn's own module first); the loss of the last step of each window is back-propagated
      and the gradient with respect to each step's hidden state (retain_grad) gives the same
      per-layer norms as charlm for every k = 0 .. K, K = 20 > train.seq = 8, to 1e-3
      relative; the windows are those charlm reads (2 streams, 2 windows each, the state
      carried). A negative control: the reference shifted by one lag must not match.
  (b) a vanilla RNN at its initialisation (weights U(-1/sqrt(H), 1/sqrt(H))) has a gradient that
      decays with k: every lag smaller than the one before, and by 10^3 over 40 steps.
  (c) -np 2 --batch 1 reads the same streams as -np 1 --batch 2 and gives the same table.
  (d) bad input: one clear line and the documented exit code.
  (e) scripts/plot_gradflow.py draws the files of (a) (python3-matplotlib; left out without).

Needs Debian's python3-torch and python3-h5py (/usr/bin/python3) for (a); exit 77 (skipped)
without."""
import json
import os
import subprocess
import sys

import harness as h

LAYERS, HIDDEN, EMBED, SEQ, K = 2, 12, 8, 8, 20
TOL = 1e-3

torch, ct = h.torch_reference()


def train(w, corpus, cell, steps=30, lr="0.01"):
    run = os.path.join(w, f"run-{cell}-{steps}")
    h.run(["train", "--corpus", corpus, "--cell", cell, "--layers", str(LAYERS),
           "--hidden", str(HIDDEN), "--embed", str(EMBED), "--dropout", "0", "--batch", "4",
           "--seq", str(SEQ), "--steps", str(steps), "--lr", lr, "--seed", "3",
           "--eval-every", "0", "--set", "sample.every=0", "--run-dir", run], check=True)
    return os.path.join(run, "checkpoints", f"ckpt-{steps:08d}.h5")


def gradflow(ckpt, text, out, *extra, np=None):
    h.run(["gradflow", ckpt, "--corpus", text, "--json", out] + list(extra), np=np, check=True)
    with open(out) as f:
        return json.load(f)


def step(cell, p, l, x, state):
    """One step of layer l of cell on input x (B, In) from state: the equations of §3."""
    w_ih, w_hh = p[f"rnn.weight_ih_l{l}"], p[f"rnn.weight_hh_l{l}"]
    gi = x @ w_ih.T + p[f"rnn.bias_ih_l{l}"]
    gh = state[0] @ w_hh.T + p[f"rnn.bias_hh_l{l}"]
    if cell == "rnn":
        return (torch.tanh(gi + gh),)
    if cell == "lstm":
        i, f, g, o = (gi + gh).chunk(4, dim=1)
        c = torch.sigmoid(f) * state[1] + torch.sigmoid(i) * torch.tanh(g)
        return (torch.sigmoid(o) * torch.tanh(c), c)
    ir, iz, inn = gi.chunk(3, dim=1)
    hr, hz, hn = gh.chunk(3, dim=1)
    r, z = torch.sigmoid(ir + hr), torch.sigmoid(iz + hz)
    n = torch.tanh(inn + r * hn)
    return ((1 - z) * n + z * state[0],)


def reference(ckpt, ids, streams, windows):
    """Mean ||dL_t/dh_{t-k}|| (layers, K+1) in float64 over the windows charlm reads: stream b
    starts at b*L, window w holds inputs [w*T, w*T+T) and the target after them, state carried."""
    model, meta = ct.load_checkpoint(ckpt, dtype=torch.float64)
    p = {k: v.detach().requires_grad_() for k, v in model.state_dict().items()}
    cell, T = meta["cell"], K + 1
    L = (len(ids) - 1) // streams
    x = torch.tensor([ids[b * L:b * L + windows * T + 1] for b in range(streams)]).T  # (n, B)
    # the unrolled equations against torch.nn on the whole stream
    state = [tuple(torch.zeros(streams, HIDDEN, dtype=torch.float64)
                   for _ in range(2 if cell == "lstm" else 1)) for _ in range(LAYERS)]
    outs = []
    with torch.no_grad():
        for t in range(x.shape[0] - 1):
            v = p["embedding.weight"][x[t]]
            for l in range(LAYERS):
                state[l] = step(cell, p, l, v, state[l])
                v = state[l][0]
            outs.append(v)
        want, _ = model(x[:-1])
        got = torch.stack(outs) @ p["decoder.weight"].T + p["decoder.bias"]
        if not torch.allclose(got, want, rtol=1e-9, atol=1e-9):
            h.fail(f"{cell}: the unrolled reference is not torch.nn's module")
    norm = torch.zeros(LAYERS, K + 1, dtype=torch.float64)
    state = [tuple(torch.zeros(streams, HIDDEN, dtype=torch.float64)
                   for _ in range(2 if cell == "lstm" else 1)) for _ in range(LAYERS)]
    for w in range(windows):
        hs = [[] for _ in range(LAYERS)]
        st = [s for s in state]
        for t in range(T):
            v = p["embedding.weight"][x[w * T + t]]
            for l in range(LAYERS):
                st[l] = step(cell, p, l, v, st[l])
                st[l][0].retain_grad()
                hs[l].append(st[l][0])
                v = st[l][0]
        logits = v @ p["decoder.weight"].T + p["decoder.bias"]
        loss = torch.nn.functional.cross_entropy(logits, x[w * T + T], reduction="sum")
        loss.backward()
        for l in range(LAYERS):
            for k in range(K + 1):
                norm[l, k] += hs[l][T - 1 - k].grad.norm(dim=1).sum()
        state = [tuple(s.detach() for s in st[l]) for l in range(LAYERS)]
    return norm / (streams * windows)


def main():
    w = h.tmpdir()
    corpus = h.write_text(w, 30000)
    text = os.path.join(w, "measured.txt")
    with open(text, "w", encoding="utf-8") as f:
        f.write(h.synthetic_text(3000, seed=5))
    with open(text, encoding="utf-8") as f:
        chars = f.read()
    bad = []

    for cell in ("rnn", "lstm", "gru"):
        ckpt = train(w, corpus, cell)
        _, meta = ct.read_checkpoint(ckpt)
        ids = ct.encode(chars, meta["vocab"])
        g = gradflow(ckpt, text, os.path.join(w, f"{cell}.json"), "--max-lag", str(K),
                     "--batch", "2", "--windows", "2")
        if g["samples"] != 4 or g["max_lag"] != K or g["train_seq"] != SEQ:
            bad.append(f"{cell}: samples/max_lag/train_seq {g['samples']} {g['max_lag']} "
                       f"{g['train_seq']}")
        got = torch.tensor(g["norm"], dtype=torch.float64)
        want = reference(ckpt, ids, 2, 2)
        err = ((got - want).abs() / want.abs().clamp_min(1e-30)).max().item()
        shifted = ((got[:, 1:] - want[:, :-1]).abs() / want[:, :-1].abs()).max().item()
        print(f"{cell}: max relative error {err:.2e} over layers x k = 0..{K} "
              f"(|k=0| {want[1, 0]:.3e}, |k={K}| layer 0 {want[0, K]:.3e}); "
              f"shifted by one lag {shifted:.2e}")
        if not err < TOL:
            bad.append(f"{cell}: gradflow differs from autograd by {err:.2e} relative\n"
                       f"charlm {got}\ntorch {want}")
        if not shifted > 10 * TOL:
            bad.append(f"{cell}: negative control: a shifted reference matches ({shifted:.2e})")

    # (b) a vanilla RNN at its initialisation: one step of lr 1e-9 leaves the initial weights
    ckpt = train(w, corpus, "rnn", steps=1, lr="1e-9")
    g = gradflow(ckpt, text, os.path.join(w, "rnn0.json"), "--max-lag", "40", "--batch", "4",
                 "--windows", "4")
    for l, row in enumerate(g["norm"]):
        rising = [k for k in range(1, len(row)) if not row[k] < row[k - 1]]
        print(f"rnn at initialisation, layer {l}: k=0 {row[0]:.3e}, k=40 {row[40]:.3e}")
        if rising or not row[40] < 1e-3 * row[0]:
            bad.append(f"rnn at initialisation, layer {l}: the gradient does not decay with k "
                       f"(rises at {rising}; k=0 {row[0]:.3e}, k=40 {row[40]:.3e})")

    # (c) the streams are global: -np 2 x 1 stream = -np 1 x 2 streams
    one = gradflow(ckpt, text, os.path.join(w, "np1.json"), "--max-lag", "12", "--batch", "2")
    two = gradflow(ckpt, text, os.path.join(w, "np2.json"), "--max-lag", "12", "--batch", "1",
                   np=2)
    diff = max(abs(a - b) / abs(a) for ra, rb in zip(one["norm"], two["norm"])
               for a, b in zip(ra, rb))
    if one["samples"] != two["samples"] or not diff < 1e-5:
        bad.append(f"-np 2 --batch 1 differs from -np 1 --batch 2: {diff:.2e}, samples "
                   f"{one['samples']} {two['samples']}")
    p = h.run(["gradflow", ckpt, "--corpus", text, "--max-lag", "12"], check=True)
    if len(p.stdout.splitlines()) != 2 + 13 or "||dL_t/dh_{t-k}|| l1" not in p.stdout:
        bad.append(f"the table is not a title, a header and 13 lags:\n{p.stdout}")

    # (d) bad input
    strange = os.path.join(w, "strange.txt")
    with open(strange, "w", encoding="utf-8") as f:
        f.write(chars[:2000] + "ж" + chars[2000:])
    short = os.path.join(w, "short.txt")
    with open(short, "w", encoding="utf-8") as f:
        f.write(chars[:100])
    cases = [
        ("missing checkpoint", [os.path.join(w, "none.h5"), "--corpus", text], 1, "none.h5"),
        ("K = 0", [ckpt, "--corpus", text, "--max-lag", "0"], 2, "--max-lag 0"),
        ("K not a number", [ckpt, "--corpus", text, "--max-lag", "x"], 2, "--max-lag x"),
        ("no corpus", [ckpt], 2, "--corpus"),
        ("unknown character", [ckpt, "--corpus", strange], 1, "U+0436"),
        ("text too short", [ckpt, "--corpus", short, "--max-lag", "60"], 1, "at least"),
        ("missing text", [ckpt, "--corpus", os.path.join(w, "none.txt")], 1, "none.txt"),
        ("unwritable json", [ckpt, "--corpus", text, "--json", os.path.join(w, "no", "x.json")],
         1, "x.json"),
    ]
    for name, args, code, needle in cases:
        msg = h.refused(["gradflow"] + args, code, needle)
        if msg:
            bad.append(f"{name}: {msg}")
    r = h.run(["gradflow", ckpt, "--corpus", strange, "--unknown", "skip", "--max-lag", "12"])
    if r.returncode != 0:
        bad.append(f"--unknown skip: exit {r.returncode}: {r.stderr!r}")

    # scripts/plot_gradflow.py on the files written above (needs python3-matplotlib)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print("plot_gradflow.py not run: no matplotlib")
    else:
        plot = [sys.executable, os.path.join(h.SCRIPTS, "plot_gradflow.py")]
        png = os.path.join(w, "flow.png")
        r = subprocess.run(plot + [os.path.join(w, f"{c}.json") for c in ("rnn", "lstm", "gru")] +
                           ["-o", png, "--relative"], capture_output=True, text=True)
        with open(png, "rb") if os.path.exists(png) else open(os.devnull, "rb") as f:
            if r.returncode != 0 or f.read(8) != b"\x89PNG\r\n\x1a\n":
                bad.append(f"plot_gradflow.py: exit {r.returncode}, no PNG: {r.stderr}")
        r = subprocess.run(plot + [text, "-o", png], capture_output=True, text=True)
        if r.returncode != 1 or "measured.txt" not in r.stderr:
            bad.append(f"plot_gradflow.py on a text file: exit {r.returncode}: {r.stderr!r}")

    if bad:
        h.fail("\n".join(bad))
    print("ok")


if __name__ == "__main__":
    main()
