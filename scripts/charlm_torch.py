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

A model with model.tie has decoder.weight = embedding.weight (one parameter; the checkpoint
stores it once, as embedding.weight). torch.nn has no layer-normalised recurrent layers, so a
model with model.layer_norm has rnn = LNRecurrent, the recurrence of src/README.md §3 written
out step by step in torch operations, with charlm's names (rnn.ln_weight_ih_l0, ...).

torch is needed; h5py only to read charlm checkpoints (.h5)."""
import math

import torch
import torch.nn as nn

CELLS = ("rnn", "lstm", "gru")
FORMAT = "charlm-torch"  # the "format" key of the files export_torch.py writes
FORMAT_VERSION = 1
META_KEYS = ("cell", "layers", "hidden", "embed", "vocab_size")
OPTION_KEYS = ("tie", "layer_norm")  # /model attributes present only when on (0 when absent)
GATES = {"rnn": 1, "lstm": 4, "gru": 3}
LN_EPS = 1e-5  # charlm's, torch.nn.LayerNorm's default


class LNRecurrent(nn.Module):
    """Layer-normalised recurrent layers as charlm computes them (src/README.md §3): for each
    layer, a = gain_ih * LN(x W_ih^T) + b_ih and per step r = gain_hh * LN(h W_hh^T) + b_hh, LN
    normalising each gate block of H units (no affine part of its own); then the cell of a and
    r as nn.RNN / nn.LSTM / nn.GRU computes it from x W_ih^T + b_ih and h W_hh^T + b_hh, except
    that an LSTM outputs h = o * tanh(ln_weight_c * LN(c) + ln_bias_c). Time-major; forward
    as nn.LSTM's: (T, B, E), state -> (T, B, H), state."""

    def __init__(self, cell, embed, hidden, layers):
        super().__init__()
        self.cell, self.hidden, self.layers = cell, hidden, layers
        G, H = GATES[cell], hidden
        for l in range(layers):
            shapes = {"weight_ih": (G * H, embed if l == 0 else H), "weight_hh": (G * H, H),
                      "bias_ih": (G * H,), "bias_hh": (G * H,), "ln_weight_ih": (G * H,),
                      "ln_weight_hh": (G * H,)}
            if cell == "lstm":
                shapes.update({"ln_weight_c": (H,), "ln_bias_c": (H,)})
            for name, shape in shapes.items():
                self.register_parameter(f"{name}_l{l}", nn.Parameter(torch.zeros(shape)))

    def _ln(self, v, gain, bias=None):
        H = self.hidden
        y = nn.functional.layer_norm(v.reshape(*v.shape[:-1], -1, H), (H,), eps=LN_EPS)
        y = y.reshape(v.shape) * gain
        return y if bias is None else y + bias

    def forward(self, x, state=None):
        T, B, H = x.shape[0], x.shape[1], self.hidden
        lstm = self.cell == "lstm"
        if state is None:
            z = x.new_zeros(self.layers, B, H)
            state = (z, z.clone()) if lstm else z
        hs, cs = (state[0], state[1]) if lstm else (state, None)
        h_out, c_out = [], []
        for l in range(self.layers):
            p = {n: getattr(self, f"{n}_l{l}") for n in ("weight_ih", "weight_hh", "bias_ih",
                                                         "bias_hh", "ln_weight_ih", "ln_weight_hh")}
            a = self._ln(x @ p["weight_ih"].t(), p["ln_weight_ih"], p["bias_ih"])
            h, c, out = hs[l], cs[l] if lstm else None, []
            for t in range(T):
                r = self._ln(h @ p["weight_hh"].t(), p["ln_weight_hh"], p["bias_hh"])
                if self.cell == "rnn":
                    h = torch.tanh(a[t] + r)
                elif lstm:
                    i, f, g, o = (a[t] + r).chunk(4, -1)
                    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                    cn = self._ln(c, getattr(self, f"ln_weight_c_l{l}"),
                                  getattr(self, f"ln_bias_c_l{l}"))
                    h = torch.sigmoid(o) * torch.tanh(cn)
                else:
                    ar, az, an = a[t].chunk(3, -1)
                    rr, rz, rn = r.chunk(3, -1)
                    rg, zg = torch.sigmoid(ar + rr), torch.sigmoid(az + rz)
                    h = (1 - zg) * torch.tanh(an + rg * rn) + zg * h
                out.append(h)
            x = torch.stack(out)
            h_out.append(h)
            c_out.append(c)
        hn = torch.stack(h_out)
        return x, ((hn, torch.stack(c_out)) if lstm else hn)


class CharLM(nn.Module):
    """A charlm model: CharLM(cell, vocab_size, embed, hidden, layers, tie=0, layer_norm=0)."""

    def __init__(self, cell, vocab_size, embed, hidden, layers, tie=0, layer_norm=0):
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f"unknown cell {cell!r}; expected one of {', '.join(CELLS)}")
        self.cell = cell
        self.embedding = nn.Embedding(vocab_size, embed)
        if layer_norm:
            self.rnn = LNRecurrent(cell, embed, hidden, layers)
        elif cell == "rnn":
            self.rnn = nn.RNN(embed, hidden, layers, nonlinearity="tanh")
        elif cell == "lstm":
            self.rnn = nn.LSTM(embed, hidden, layers)
        else:
            self.rnn = nn.GRU(embed, hidden, layers)
        self.decoder = nn.Linear(hidden, vocab_size)
        if tie:
            if embed != hidden:
                raise ValueError(f"tie needs embed == hidden (they are {embed} and {hidden})")
            self.decoder.weight = self.embedding.weight

    def forward(self, ids, state=None):
        """ids: (T, B) int64 (time-major, as charlm). state: None (zero) or what a previous call
        returned: h (layers, B, H), or (h, c) for LSTM. Returns logits (T, B, V) and the state
        after the last step."""
        out, state = self.rnn(self.embedding(ids), state)
        return self.decoder(out), state


def _meta_from(d):
    meta = {k: d[k] for k in META_KEYS}
    meta.update({k: int(d.get(k, 0)) for k in OPTION_KEYS})
    meta["vocab"] = [int(c) for c in d["vocab"]]
    for k in ("step", "source"):
        if k in d:
            meta[k] = d[k]
    return meta


def build(meta, state_dict=None, dtype=torch.float32):
    """The CharLM described by meta (cell, layers, hidden, embed, vocab_size, and tie and
    layer_norm when present), in dtype, in evaluation mode, with state_dict loaded (strictly:
    every name and shape must match; a tied model's decoder.weight is its embedding.weight)."""
    tie = meta.get("tie", 0)
    model = CharLM(meta["cell"], meta["vocab_size"], meta["embed"], meta["hidden"], meta["layers"],
                   tie, meta.get("layer_norm", 0))
    if state_dict is not None:
        if tie and "decoder.weight" not in state_dict:
            state_dict = dict(state_dict, **{"decoder.weight": state_dict["embedding.weight"]})
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
        for k in OPTION_KEYS:
            meta[k] = int(g.attrs[k]) if k in g.attrs else 0
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
