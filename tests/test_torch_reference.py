"""charlm checked against PyTorch: for each cell (rnn, lstm, gru) with 2 layers, a small model
trained here by charlm (so the weights are not the initialisation) is loaded by name into
torch.nn.Embedding + nn.RNN(tanh) / nn.LSTM / nn.GRU + nn.Linear (scripts/charlm_torch.py) with
dropout off — and likewise an LSTM with its decoder tied to the embedding (one shared
nn.Parameter), each cell with layer normalisation (charlm_torch.LNRecurrent, the recurrence
written out in torch operations, since torch.nn has no layer-normalised RNN), and a tied
layer-normalised GRU — and

  (a) the loss of `charlm eval CKPT TEXT --json` on a text of a few thousand characters (one
      stream from a zero state, carried through the whole text) equals PyTorch's, the text being
      one sequence, to 1e-5 relative;
  (b) one window (B streams x T steps from a zero state, tests/dump_grads.c: stream b reads the
      characters [b*T, b*T + T] of the text) has the same loss to 1e-5 relative and, for every
      tensor, the same gradient: ||g_charlm - g_torch|| / ||g_torch|| < 1e-4;
  (c) scripts/export_torch.py writes a file that loads into the same module and gives the same
      loss.

The reference runs in float64 from the float32 weights, so it measures charlm's own (float32)
error; PyTorch in float32 is measured against it too, for scale. A negative control runs the
same checks with deliberately wrong mappings (LSTM/GRU gate blocks swapped, W_hh transposed,
GRU's biases swapped; with layer normalisation the input and recurrent gains swapped) and
requires them to fail, so the test can catch such a bug.

Needs Debian's python3-torch and python3-h5py (/usr/bin/python3); exit 77 (skipped) without."""
import json
import math
import os
import subprocess
import sys

import harness as h

DUMP_GRADS = os.environ.get("CHARLM_DUMP_GRADS", "build/tests/dump_grads")

TOL_LOSS = 1e-5   # relative, eval loss and window loss
TOL_GRAD = 1e-4   # relative, per tensor
LAYERS, HIDDEN, EMBED = 2, 24, 16
TIE = ["--embed", str(HIDDEN), "--set", "model.tie=true"]
LN = ["--set", "model.layer_norm=true"]
CASES = [  # name, cell, extra training arguments
    ("rnn", "rnn", []), ("lstm", "lstm", []), ("gru", "gru", []),
    ("lstm-tied", "lstm", TIE),
    ("rnn-ln", "rnn", LN), ("lstm-ln", "lstm", LN), ("gru-ln", "gru", LN),
    ("gru-tied-ln", "gru", TIE + LN),
]
WIN_B, WIN_T = 3, 48  # the gradient window

torch, ct = h.torch_reference()
import h5py  # noqa: E402
import torch.nn.functional as F  # noqa: E402


def train(w, corpus, name, cell, extra):
    run = os.path.join(w, "run-" + name)
    h.run(["train", "--corpus", corpus, "--cell", cell, "--layers", str(LAYERS),
           "--hidden", str(HIDDEN), "--embed", str(EMBED), "--dropout", "0", "--batch", "4",
           "--seq", "32", "--steps", "40", "--lr", "0.01", "--seed", "7", "--eval-every", "0",
           "--set", "sample.every=0", "--run-dir", run] + extra, check=True)
    d = os.path.join(run, "checkpoints")
    ckpts = sorted(f for f in os.listdir(d) if f.startswith("ckpt-") and f.endswith(".h5"))
    if not ckpts:
        h.fail(f"{name}: training wrote no checkpoint in {d}")
    return os.path.join(d, ckpts[-1])


def rel(a, b):
    return abs(a - b) / abs(b)


def text_loss(sd, meta, ids, dtype):
    """PyTorch's mean loss over the predictions of ids, one sequence from a zero state."""
    return ct.score(ct.build(meta, sd, dtype), ids)


def window(sd, meta, ids, dtype):
    """PyTorch's mean loss and gradients of the dump_grads window of ids."""
    model = ct.build(meta, sd, dtype)
    x = torch.tensor(ids[:WIN_B * WIN_T + 1], dtype=torch.int64)
    # stream b = characters [b*T, b*T + T]; time-major (T, B) as charlm
    inp = torch.stack([x[b * WIN_T:b * WIN_T + WIN_T] for b in range(WIN_B)], dim=1)
    tgt = torch.stack([x[b * WIN_T + 1:b * WIN_T + WIN_T + 1] for b in range(WIN_B)], dim=1)
    logits, _ = model(inp)
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1))
    model.zero_grad()
    loss.backward()
    grads = {n: p.grad.detach().to(torch.float64) for n, p in model.named_parameters()}
    return loss.item(), grads, inp, tgt


def grad_errors(g, ref):
    return {n: (torch.linalg.norm(g[n] - ref[n]) / torch.linalg.norm(ref[n])).item() for n in ref}


def check(sd, meta, ids, eval_loss, dump):
    """Errors of the mapping sd against charlm: (eval loss, window loss, {tensor: grad})."""
    loss = text_loss(sd, meta, ids, torch.float64)
    wloss, grads, _, _ = window(sd, meta, ids, torch.float64)
    return rel(eval_loss, loss), rel(dump["loss"], wloss), grad_errors(dump["grad"], grads)


def passes(errs):
    e_eval, e_win, e_grad = errs
    return e_eval < TOL_LOSS and e_win < TOL_LOSS and max(e_grad.values()) < TOL_GRAD


def swap_blocks(t, H, i, j):
    t = t.clone()
    a, b = t[i * H:(i + 1) * H].clone(), t[j * H:(j + 1) * H].clone()
    t[i * H:(i + 1) * H], t[j * H:(j + 1) * H] = b, a
    return t


def mutations(sd, cell):
    """Wrong mappings a conversion could plausibly make, each a (name, state_dict)."""
    H = HIDDEN
    out = []

    def each(pred, f):
        return {n: (f(t) if pred(n) else t) for n, t in sd.items()}

    if "rnn.ln_weight_ih_l0" in sd:
        swapped = dict(sd)
        for l in range(LAYERS):
            swapped[f"rnn.ln_weight_ih_l{l}"] = sd[f"rnn.ln_weight_hh_l{l}"]
            swapped[f"rnn.ln_weight_hh_l{l}"] = sd[f"rnn.ln_weight_ih_l{l}"]
        out.append(("ln gains ih<->hh", swapped))
    # the gate blocks of the tensors of G*H rows
    rnn_tensors = lambda n: n.startswith("rnn.") and sd[n].shape[0] > H  # noqa: E731
    if cell == "lstm":
        out.append(("gates i<->f", each(rnn_tensors, lambda t: swap_blocks(t, H, 0, 1))))
        out.append(("gates g<->o", each(rnn_tensors, lambda t: swap_blocks(t, H, 2, 3))))
    if cell == "gru":
        out.append(("gates r<->z", each(rnn_tensors, lambda t: swap_blocks(t, H, 0, 1))))
        out.append(("gates z<->n", each(rnn_tensors, lambda t: swap_blocks(t, H, 1, 2))))
        swapped = dict(sd)
        for l in range(LAYERS):
            swapped[f"rnn.bias_ih_l{l}"] = sd[f"rnn.bias_hh_l{l}"]
            swapped[f"rnn.bias_hh_l{l}"] = sd[f"rnn.bias_ih_l{l}"]
        out.append(("bias_ih<->bias_hh", swapped))
    out.append(("W_hh transposed", each(lambda n: n.startswith("rnn.weight_hh"),
                                         lambda t: t.view(-1, H, H).transpose(1, 2)
                                         .reshape(t.shape).contiguous())))
    return out


def main():
    w = h.tmpdir()
    corpus = os.path.join(w, "corpus.txt")
    with open(corpus, "w", encoding="utf-8") as f:
        f.write(h.synthetic_text(24000))
    bad, rows = [], []
    for name, cell, extra in CASES:
        ckpt = train(w, corpus, name, cell, extra)
        sd, meta = ct.read_checkpoint(ckpt)
        if meta["cell"] != cell or meta["layers"] != LAYERS or meta["hidden"] != HIDDEN or \
                meta["tie"] != (extra.count("model.tie=true")) or \
                meta["layer_norm"] != extra.count("model.layer_norm=true"):
            bad.append(f"{name}: checkpoint metadata {meta}")
            continue
        if meta["tie"] and "decoder.weight" in sd:
            bad.append(f"{name}: a tied checkpoint stores decoder.weight")
        # a text unlike the training text, restricted to the model's characters
        vocab = set(meta["vocab"])
        text = "".join(c for c in h.synthetic_text(4000, seed=11) if ord(c) in vocab)
        text_path = os.path.join(w, f"text-{name}.txt")
        with open(text_path, "w", encoding="utf-8") as f:
            f.write(text)
        ids = ct.encode(text, meta["vocab"])

        ev = json.loads(h.run(["eval", ckpt, text_path, "--json"], check=True).stdout)
        if meta["step"] != 40 or not ev["loss"] < math.log(len(vocab)) - 0.3:
            bad.append(f"{name}: the model is not trained (step {meta['step']}, eval loss "
                       f"{ev['loss']:.4f}, uniform {math.log(len(vocab)):.4f})")
        if ev["predictions"] != len(ids) - 1:
            bad.append(f"{name}: eval made {ev['predictions']} predictions, expected "
                       f"{len(ids) - 1}")
        out = os.path.join(w, f"grads-{name}.h5")
        p = subprocess.run([DUMP_GRADS, ckpt, text_path, str(WIN_B), str(WIN_T), out],
                           capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120)
        if p.returncode != 0:
            h.fail(f"{name}: dump_grads exited {p.returncode}: {p.stdout}{p.stderr}")
        with h5py.File(out, "r") as f:
            dump = {"loss": float(f["loss"][()]),
                    "grad": {n: torch.from_numpy(f["grad"][n][()]).to(torch.float64)
                             for n in f["grad"]},
                    "inputs": f["inputs"][()], "targets": f["targets"][()]}
        _, _, inp, tgt = window(sd, meta, ids, torch.float64)
        if not ((dump["inputs"] == inp.numpy()).all() and (dump["targets"] == tgt.numpy()).all()):
            bad.append(f"{name}: dump_grads' window is not the one this test builds")
        if set(dump["grad"]) != set(sd):
            bad.append(f"{name}: gradient tensors {sorted(dump['grad'])} != {sorted(sd)}")
            continue

        e_eval, e_win, e_grad = errs = check(sd, meta, ids, ev["loss"], dump)
        worst = max(e_grad, key=e_grad.get)
        # PyTorch's own float32 error against the float64 reference, for scale
        ref_loss = text_loss(sd, meta, ids, torch.float64)
        _, ref_grads, _, _ = window(sd, meta, ids, torch.float64)
        f32_eval = rel(text_loss(sd, meta, ids, torch.float32), ref_loss)
        f32_grad = max(grad_errors(window(sd, meta, ids, torch.float32)[1], ref_grads).values())
        rows.append(f"{name:11s}  eval loss {ev['loss']:.6f} ({len(ids) - 1} predictions): "
                    f"rel err {e_eval:.1e} | window {WIN_B}x{WIN_T} loss {dump['loss']:.6f}: "
                    f"rel err {e_win:.1e} | grads: max rel err {e_grad[worst]:.1e} ({worst}) "
                    f"| torch float32: loss {f32_eval:.1e}, grads {f32_grad:.1e}")
        if not passes(errs):
            bad.append(f"{name}: charlm differs from PyTorch: eval loss {e_eval:.2e}, window "
                       f"loss {e_win:.2e}, gradients " +
                       ", ".join(f"{n} {e:.2e}" for n, e in sorted(e_grad.items())))

        # negative control: the same checks must fail with a wrong mapping
        for mname, msd in mutations(sd, cell):
            m_eval, m_win, m_grad = merrs = check(msd, meta, ids, ev["loss"], dump)
            rows.append(f"      control {mname:18s}: eval loss rel err {m_eval:.1e}, window "
                        f"{m_win:.1e}, grads max {max(m_grad.values()):.1e} -> "
                        f"{'PASSES (bad)' if passes(merrs) else 'fails, as it must'}")
            if passes(merrs):
                bad.append(f"{name}: the wrong mapping '{mname}' passes the checks")

        # export_torch.py: the file loads into the same module and gives the same loss
        pt = os.path.join(w, f"model-{name}.pt")
        p = subprocess.run([sys.executable, os.path.join(h.SCRIPTS, "export_torch.py"), ckpt, pt],
                           capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120)
        if p.returncode != 0:
            bad.append(f"{name}: export_torch.py exited {p.returncode}: {p.stderr}")
            continue
        model, m2 = ct.load(pt, torch.float64)
        same = all(torch.equal(model.state_dict()[n], sd[n].to(torch.float64)) for n in sd)
        e_pt = rel(ct.score(model, ids), ref_loss)
        rows.append(f"      export_torch.py: {os.path.getsize(pt)} bytes, tensors identical "
                    f"{same}, vocab identical {m2['vocab'] == meta['vocab']}, loss rel err "
                    f"{e_pt:.1e}, vs charlm eval {rel(ev['loss'], ct.score(model, ids)):.1e}")
        if not same or m2["vocab"] != meta["vocab"] or m2["cell"] != cell or e_pt > 1e-12:
            bad.append(f"{name}: export_torch.py output differs from the checkpoint")
        if rel(ev["loss"], ct.score(model, ids)) >= TOL_LOSS:
            bad.append(f"{name}: the exported model's loss differs from charlm eval")
    print(f"tolerances: loss {TOL_LOSS:g} relative, gradients {TOL_GRAD:g} relative per tensor; "
          f"{LAYERS} layers, hidden {HIDDEN}, embed {EMBED}; reference PyTorch {torch.__version__} "
          "float64")
    print("\n".join(rows))
    if bad:
        h.fail("\n".join(bad))


if __name__ == "__main__":
    main()
