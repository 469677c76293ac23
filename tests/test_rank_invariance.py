"""Rank-count invariance (src/README.md §1): `-np 1 train.batch=2k` and `-np 2 train.batch=k` compute
the same training: the same loss and gradient norm at every one of 24 windows, and the same
validation loss, for each cell,
with dropout on (the masks are keyed by global stream, not by rank). The same for lstm with every
schedule feature on (README "Schedules and weight averaging"): the moving average of the weights
(which validation uses), the plateau schedule with a threshold that makes every validation after
the first a bad one (the same lr on both), train.early_stop, a clip that some steps reach; the
gradient norm of every part and "clipped" agree too. And for each cell again with every
regularisation and architecture option on at once: locked dropout on the layers' outputs and on
the embedding output, dropout of embedding rows, DropConnect on W_hh (those masks are keyed by
step alone), the decoder tied to the embedding and layer normalisation. And for lstm, and gru
with every option, at model.precision = bf16 (every product rounded to bfloat16): the losses
within 1e-4 as in fp32 (measured: up to 4.8e-5), the gradient norms within 5e-3 from the first
window on (measured: up to 2.1e-3). The two runs' sums differ at fp32's level as ever, and in
bf16 such a difference now and then moves a value across a rounding boundary, a change of
2^-8 of it; and each rank folds the embedding (src/README.md §3) when the vocabulary is at most
half of its own window's rows — here the single rank does and the two do not — and the folded
gradient of W_ih0 rounds the table's gradient, summed over the rows, where the unfolded one
rounds every row's: 2.6e-4 apart at the first window (lstm), against 1e-6 in fp32.

"The same" within fp32's rounding of sums taken in another order (the two runs split each
window's matrix products at other rows, and the all-reduce adds the halves): at the first window
within 1e-5 relative (measured: up to 1.1e-6, with OpenBLAS's Haswell kernels); later, as the
two runs' weights drift apart by such roundings and training amplifies them, the losses within
1e-4 (measured: up to 5.0e-7) and the gradient norms within 1e-3 (measured: up to 7.6e-5, for
lstm with every option on OpenBLAS's Cooperlake kernels). Dropout masks keyed by a rank's own
stream index instead of the global one move the first window's loss by 5.6e-4 and its gradient
norms by 1e-2 to 4e-2 (measured)."""
import os

import harness as h

K, T, STEPS = 4, 16, 24
# every new feature at once; early_stop past the run's validations (it would end the run early)
BF16 = ["--set", "model.precision=bf16"]
BF16_NORM = 5e-3
FEATURES = ["--set", "optim.ema=0.9", "--set", "optim.plateau_patience=1",
            "--set", "optim.plateau_factor=0.5", "--set", "optim.plateau_threshold=0.9",
            "--set", "train.early_stop=5", "--set", "optim.clip=0.5"]


def rel(a, b):
    return abs(a - b) / max(abs(a), abs(b), 1e-30)


def main():
    work = h.tmpdir()
    corpus = os.path.join(work, "corpus.txt")
    with open(corpus, "w", encoding="utf-8") as f:
        f.write(h.synthetic_text(60000))
    bad = 0
    every = ["--embed", "32", "--set", "model.dropout_kind=locked", "--set",
             "model.dropout_input=0.1", "--set", "model.dropout_embed=0.1", "--set",
             "model.weight_drop=0.2", "--set", "model.tie=true", "--set", "model.layer_norm=true"]
    # (name, cell, extra arguments, whether the schedule features are on); the tolerances of a
    # gradient norm at the first window and later: bf16's where the runs differ in bf16 roundings
    cases = [(c, c, [], False) for c in ("rnn", "lstm", "gru")] + \
        [("lstm+features", "lstm", FEATURES, True)] + \
        [(c + "-every-option", c, every, False) for c in ("rnn", "lstm", "gru")] + \
        [("lstm-bf16", "lstm", BF16, False), ("gru-bf16-every-option", "gru", BF16 + every, False)]
    for cell, kind, extra, sched in cases:
        runs = {}
        for np, batch in ((1, 2 * K), (2, K)):
            d = os.path.join(work, f"{cell}-np{np}")
            h.run(["train", "--corpus", corpus, "--cell", kind, "--layers", "2", "--hidden", "32",
                   "--embed", "16", "--dropout", "0.25", "--batch", str(batch), "--seq", str(T),
                   "--steps", str(STEPS), "--log-every", "1", "--eval-every",
                   "8" if sched else "12", "--run-dir", d] + extra, np=np, check=True)
            runs[np] = h.metrics(d)
        (t1, v1), (t2, v2) = runs[1], runs[2]
        nval = 3 if sched else 2
        if len(t1) != STEPS or len(t2) != STEPS or len(v1) != nval or len(v2) != nval:
            h.fail(f"{cell}: expected {STEPS} train and {nval} validation lines, got "
                   f"{len(t1)}/{len(v1)} and {len(t2)}/{len(v2)}")
        worst = {"loss": 0.0, "norm": 0.0}
        for a, b in zip(t1, t2):
            first = a["step"] == 1
            pairs = [(key, a[key], b[key], 1e-5 if first else 1e-4)
                     for key in ("train_loss", "lr")]
            norm_tol = BF16_NORM if BF16[1] in extra else 1e-5 if first else 1e-3
            pairs += [("grad_norm", a["grad_norm"], b["grad_norm"], norm_tol)]
            pairs += [(f"grad_norm_layers[{i}]", x, y, norm_tol)
                      for i, (x, y) in enumerate(zip(a["grad_norm_layers"], b["grad_norm_layers"]))]
            for key, x, y, tol in pairs:
                e = rel(x, y)
                kind = "norm" if key.startswith("grad_norm") else "loss"
                worst[kind] = max(worst[kind], e)
                if e > tol:
                    print(f"{cell} step {a['step']} {key}: {x} vs {y} (rel {e:.2e})")
                    bad += 1
            if a["clipped"] != b["clipped"]:
                print(f"{cell} step {a['step']}: clipped {a['clipped']} vs {b['clipped']}")
                bad += 1
        if sched and (t1[-1]["lr"] >= t1[0]["lr"] or
                      len({m["clipped"] for m in t1}) != 2):
            print(f"{cell}: the lr did not fall or the clip was reached always or never")
            bad += 1
        for a, b in zip(v1, v2):
            e = rel(a["val_loss"], b["val_loss"])
            worst["loss"] = max(worst["loss"], e)
            if e > 1e-4:
                print(f"{cell} validation at step {a['step']}: {a['val_loss']} vs {b['val_loss']}")
                bad += 1
        # the losses must actually move, or equality would prove nothing
        if not t1[-1]["train_loss"] < t1[0]["train_loss"] - 0.1:
            print(f"{cell}: loss did not fall ({t1[0]['train_loss']} -> {t1[-1]['train_loss']})")
            bad += 1
        print(f"{cell}: -np 1 x {2 * K} vs -np 2 x {K}: {STEPS} windows, worst relative "
              f"difference of a loss {worst['loss']:.2e}, of a gradient norm {worst['norm']:.2e}; "
              f"loss {t1[0]['train_loss']:.4f} -> {t1[-1]['train_loss']:.4f}")
    if bad:
        h.fail(f"{bad} mismatches")


if __name__ == "__main__":
    main()
