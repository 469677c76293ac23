"""charlm models in PyTorch: the same network as charlm (src/README.md §3), built from torch.nn with
the parameter names of charlm's checkpoints, so a trained model can be checked against PyTorch
(tests/test_torch_reference.py) or used from Python (scripts/export_torch.py).

    import sys; sys.path.insert(0, "scripts")
    import charlm_torch as ct
    model, meta = ct.load("model.pt")          # or a charlm checkpoint: ct.load("ckpt.h5")
    print(ct.sample(model, meta["vocab"], prime="The ", length=200, seed=1))
    ids = ct.encode(open("text.txt", encoding="utf-8").read(), meta["vocab"])
    print(ct.score(model, ids), "nats/char")

The module: embedding = nn.Embedding(V, E); rnn = nn.RNN(tanh) / nn.LSTM / nn.GRU (E -> H,
`layers` layers, time-major: batch_first=False, dropout 0); decoder = nn.Linear(H, V). Its
state_dict has exactly the names of a checkpoint's /model group (embedding.weight,
rnn.weight_ih_l0, ..., decoder.bias), and PyTorch's gate order is charlm's (LSTM i, f, g, o; GRU
r, z, n), so the tensors are copied as they are. The vocabulary is the list of Unicode code points
in id order (a checkpoint's /vocab).

torch is needed; h5py only to read charlm checkpoints (.h5)."""
import math

import torch
import torch.nn as nn

CELLS = ("rnn", "lstm", "gru")
FORMAT = "charlm-torch"  # the "format" key of the files export_torch.py writes
FORMAT_VERSION = 1
META_KEYS = ("cell", "layers", "hidden", "embed", "vocab_size")


class CharLM(nn.Module):
    """A charlm model: CharLM(cell, vocab_size, embed, hidden, layers)."""

    def __init__(self, cell, vocab_size, embed, hidden, layers):
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f"unknown cell {cell!r}; expected one of {', '.join(CELLS)}")
        self.cell = cell
        self.embedding = nn.Embedding(vocab_size, embed)
        if cell == "rnn":
            self.rnn = nn.RNN(embed, hidden, layers, nonlinearity="tanh")
        elif cell == "lstm":
            self.rnn = nn.LSTM(embed, hidden, layers)
        else:
            self.rnn = nn.GRU(embed, hidden, layers)
        self.decoder = nn.Linear(hidden, vocab_size)

    def forward(self, ids, state=None):
        """ids: (T, B) int64 (time-major, as charlm). state: None (zero) or what a previous call
        returned: h (layers, B, H), or (h, c) for LSTM. Returns logits (T, B, V) and the state
        after the last step."""
        out, state = self.rnn(self.embedding(ids), state)
        return self.decoder(out), state


def _meta_from(d):
    meta = {k: d[k] for k in META_KEYS}
    meta["vocab"] = [int(c) for c in d["vocab"]]
    for k in ("step", "source"):
        if k in d:
            meta[k] = d[k]
    return meta


def build(meta, state_dict=None, dtype=torch.float32):
    """The CharLM described by meta (cell, layers, hidden, embed, vocab_size), in dtype, in
    evaluation mode, with state_dict loaded (strictly: every name and shape must match)."""
    model = CharLM(meta["cell"], meta["vocab_size"], meta["embed"], meta["hidden"], meta["layers"])
    if state_dict is not None:
        model.load_state_dict(state_dict, strict=True)
    return model.to(dtype).eval()


def read_checkpoint(path):
    """(state_dict, meta) of a charlm checkpoint: the float32 tensors of /model by name, and
    meta = {cell, layers, hidden, embed, vocab_size, vocab (code points), step, source}."""
    import h5py

    with h5py.File(path, "r") as f:
        g = f["model"]
        cell = g.attrs["cell"]
        meta = {"cell": cell.decode() if isinstance(cell, bytes) else str(cell)}
        for k in META_KEYS[1:]:
            meta[k] = int(g.attrs[k])
        meta["vocab"] = [int(c) for c in f["vocab"][()]]
        meta["step"] = int(f.attrs["step"]) if "step" in f.attrs else None
        meta["source"] = str(path)
        sd = {name: torch.from_numpy(g[name][()]) for name in g}
    return sd, meta


def load_checkpoint(path, dtype=torch.float32):
    """(model, meta) from a charlm checkpoint (.h5); needs h5py."""
    sd, meta = read_checkpoint(path)
    return build(meta, sd, dtype), meta


def export(ckpt_path, out_path):
    """Writes the model of a charlm checkpoint as a PyTorch file: torch.save of
    {"format": "charlm-torch", "format_version": 1, "state_dict": {name: float32 tensor},
     "vocab": [code points], "cell", "layers", "hidden", "embed", "vocab_size", "step",
     "source"}. Returns that dict."""
    sd, meta = read_checkpoint(ckpt_path)
    blob = {"format": FORMAT, "format_version": FORMAT_VERSION, "state_dict": sd}
    blob.update(meta)
    torch.save(blob, out_path)
    return blob


def load(path, dtype=torch.float32):
    """(model, meta) from a file of export() (.pt) or a charlm checkpoint (.h5, by its HDF5
    signature)."""
    with open(path, "rb") as f:
        is_h5 = f.read(8) == b"\x89HDF\r\n\x1a\n"
    if is_h5:
        return load_checkpoint(path, dtype)
    blob = torch.load(path, map_location="cpu")
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise ValueError(f"{path}: not a file of scripts/export_torch.py")
    meta = _meta_from(blob)
    return build(meta, blob["state_dict"], dtype), meta


def encode(text, vocab, skip_unknown=False):
    """The ids (a list of int) of text under vocab (code points in id order). A character not
    in vocab raises ValueError naming it and its code point, or is dropped with skip_unknown."""
    index = {cp: i for i, cp in enumerate(vocab)}
    ids = []
    for ch in text:
        i = index.get(ord(ch))
        if i is None:
            if skip_unknown:
                continue
            raise ValueError(f"character {ch!r} (U+{ord(ch):04X}) is not in the vocabulary")
        ids.append(i)
    return ids


def decode(ids, vocab):
    """The text of ids under vocab."""
    return "".join(chr(vocab[int(i)]) for i in ids)


def _dtype_of(model):
    return next(model.parameters()).dtype


@torch.no_grad()
def score(model, ids):
    """Mean loss (nats/char) of the len(ids) - 1 predictions of ids, as one stream from a zero
    state: `charlm eval` on one rank with --batch 1."""
    x = torch.as_tensor(ids, dtype=torch.int64).view(-1, 1)
    logits, _ = model(x[:-1])
    return nn.functional.cross_entropy(logits.view(-1, logits.shape[-1]).to(torch.float64),
                                       x[1:].view(-1)).item()


@torch.no_grad()
def sample(model, vocab, prime="", length=200, temperature=1.0, seed=None):
    """Generates `length` characters after prime (included in the result): temperature 0 is
    greedy, else sampling from softmax(logits / temperature) with torch.Generator(seed). Without
    a prime the model starts after a newline (not printed), as `charlm sample`."""
    gen = torch.Generator()
    if seed is not None:
        gen.manual_seed(seed)
    ids = encode(prime, vocab)
    out = list(ids)
    if not ids:
        ids = [vocab.index(10) if 10 in vocab else 0]
    logits, state = model(torch.tensor(ids, dtype=torch.int64).view(-1, 1))
    for _ in range(length):
        last = logits[-1, 0].to(torch.float64)
        if temperature == 0:
            nxt = int(torch.argmax(last))
        else:
            nxt = int(torch.multinomial(torch.softmax(last / temperature, dim=-1), 1,
                                        generator=gen))
        out.append(nxt)
        logits, state = model(torch.tensor([[nxt]], dtype=torch.int64), state)
    return decode(out, vocab)


def bits(nats):
    """nats/char -> bits/char."""
    return nats / math.log(2.0)
