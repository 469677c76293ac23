#!/usr/bin/python3
"""Exports the model of a charlm checkpoint as a PyTorch file, to continue in Python.

Usage:
    /usr/bin/python3 scripts/export_torch.py CKPT.h5 OUT.pt

OUT.pt is torch.save of a dict:
    format          "charlm-torch"          format_version  1
    state_dict      {name: float32 tensor}  the names of the checkpoint's /model group, which are
                    the state_dict names of scripts/charlm_torch.CharLM (embedding.weight,
                    rnn.weight_ih_l0, rnn.weight_hh_l0, rnn.bias_ih_l0, rnn.bias_hh_l0, ...,
                    decoder.weight, decoder.bias)
    vocab           [int]  Unicode code points in id order
    cell            "rnn" | "lstm" | "gru"; layers, hidden, embed, vocab_size (int)
    tie, layer_norm 0 or 1: the decoder tied to the embedding (the state_dict then has no
                    decoder.weight), layer-normalised layers (charlm_torch.LNRecurrent)
    step            the training step of the checkpoint; source: its path

Load it with (needs torch; Debian's python3-torch):
    import sys; sys.path.insert(0, "scripts")
    import charlm_torch as ct
    model, meta = ct.load("OUT.pt")
    print(ct.sample(model, meta["vocab"], prime="The ", length=200, seed=1))

Reading the checkpoint needs h5py (python3-h5py); loading OUT.pt needs only torch."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def main(argv):
    if len(argv) != 2 or argv[0].startswith("-"):
        sys.stderr.write("usage: export_torch.py CKPT.h5 OUT.pt\n")
        return 2
    try:
        import charlm_torch as ct
    except ImportError as e:
        sys.stderr.write(f"export_torch.py: {e} (install python3-torch and python3-h5py and run "
                         "with /usr/bin/python3)\n")
        return 1
    ckpt, out = argv
    try:
        blob = ct.export(ckpt, out)
        model = ct.build(blob, blob["state_dict"])  # every name and shape must fit the module
    except (OSError, KeyError, ValueError, RuntimeError) as e:
        sys.stderr.write(f"export_torch.py: {ckpt}: {e}\n")
        return 1
    n = sum(p.numel() for p in model.parameters())
    print(f"{out}: {blob['cell']} {blob['layers']}x{blob['hidden']}, embed {blob['embed']}, "
          f"vocabulary {blob['vocab_size']}, {n} parameters, step {blob['step']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
