#!/usr/bin/python3
"""PyTorch reference trainer for charlm's speed benchmark (scripts/bench.sh).

Usage:
    /usr/bin/python3 scripts/torch_ref.py --corpus FILE|DIR [--cell lstm|gru|rnn]
        [--layers 2] [--hidden 512] [--embed 512] [--streams 64] [--seq 64]
        [--nproc 2] [--warmup 3] [--windows 20] [--lr 0.002] [--clip 5] [--no-pin]

The same model and data layout as `charlm train`:
  - vocabulary: the sorted Unicode code points of the corpus (whole corpus = training ids,
    as charlm with data.val_frac=0);
  - S = --streams global streams; stream s is the contiguous slice [s*L, (s+1)*L] of the ids,
    L = (N-1) // S; process r of P owns the S/P consecutive streams r*S/P .. (r+1)*S/P-1;
  - windows of T = --seq steps; the hidden state of every stream is carried into the next
    window (detached: truncated BPTT); at the end of the L // T windows of an epoch it is reset;
  - Embedding(V, E) -> nn.LSTM / nn.GRU / nn.RNN(tanh) (L layers, H units, time-major) ->
    Linear(H, V); mean cross-entropy over the window; Adam; global-norm clipping;
  - DistributedDataParallel over the gloo backend (loopback only), one process per core, one
    thread each (OMP_NUM_THREADS=1, OPENBLAS_NUM_THREADS=1, torch.set_num_threads(1)): the
    fastest PyTorch set-up on a small multi-core CPU machine. DDP averages the gradients over
    P processes, so the optimizer sees the mean over all S*T characters, as in charlm.

Timing: --warmup windows run first (not timed), then all processes meet in a barrier and
--windows windows are timed up to a final barrier. Process 0 prints one machine-readable line:
    RESULT chars_per_s=<float> windows=<n> seconds=<float> chars=<n> loss=<float> ...

Quality mode (--time-limit SECONDS): the time-to-quality reference. The last --val-frac of the
corpus is held out (as charlm's data.val_frac) and scored whole, as charlm scores it: its
predictions dealt to the same S streams, each from a zero state, in windows of T. Training runs
until the time limit by process 0's clock (agreed by all after every window), validating every
--eval-every-s seconds and at the end, with what PyTorch offers for regularisation and schedules:
--dropout (nn.LSTM's between layers, and on the embedding and the top layer's output), a
cosine schedule over the time budget with --warmup-frac (--schedule cosine), or the
word-language-model's lr / 4 on a plateau of the validation loss (--schedule plateau). Process 0
writes one JSON line per validation to --curve FILE ({"seconds", "step", "val_loss", "lr"}) and
prints RESULT val_loss=<float> steps=<n> seconds=<float> chars_per_s=<float> at the end.
"""

import argparse
import json
import math
import os
import sys
import tempfile
import time

# One thread per process; must be set before torch (and its OpenMP runtime) loads. Debian's
# torch calls the system BLAS (OpenBLAS, pthread build), whose own thread pool ignores
# torch.set_num_threads and would otherwise start one thread per core in every process.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.nn.parallel import DistributedDataParallel as DDP  # noqa: E402

TEXT_PROBE = 8 << 10  # a NUL byte in the first 8 KiB marks a binary file (charlm's rule)


def corpus_files(path):
    """A file, or the regular non-hidden text files directly inside a directory, sorted."""
    if not os.path.isdir(path):
        return [path]
    files = []
    for name in sorted(os.listdir(path)):
        full = os.path.join(path, name)
        if name.startswith(".") or not os.path.isfile(full):
            continue
        with open(full, "rb") as f:
            if b"\0" in f.read(TEXT_PROBE):
                continue
        files.append(full)
    if not files:
        sys.exit(f"torch_ref: no text files in {path}")
    return files


def load_ids(path):
    text = "".join(open(f, encoding="utf-8").read() for f in corpus_files(path))
    points = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    vocab = np.unique(points)  # sorted code points
    ids = torch.from_numpy(np.searchsorted(vocab, points).astype(np.int64))
    return ids, len(vocab)


class CharRNN(nn.Module):
    def __init__(self, cell, vocab, embed, hidden, layers, dropout=0.0):
        super().__init__()
        self.embedding = nn.Embedding(vocab, embed)
        kinds = {"lstm": nn.LSTM, "gru": nn.GRU}
        inner = dropout if layers > 1 else 0.0
        if cell == "rnn":
            self.rnn = nn.RNN(embed, hidden, layers, nonlinearity="tanh", dropout=inner)
        else:
            self.rnn = kinds[cell](embed, hidden, layers, dropout=inner)
        self.drop = nn.Dropout(dropout)
        self.decoder = nn.Linear(hidden, vocab)

    def forward(self, x, state):  # x (T, B) -> logits (T*B, V)
        out, state = self.rnn(self.drop(self.embedding(x)), state)
        out = self.drop(out)
        return self.decoder(out.reshape(-1, out.shape[-1])), state


def zero_state(cell, layers, batch, hidden):
    h = torch.zeros(layers, batch, hidden)
    return (h, torch.zeros_like(h)) if cell == "lstm" else h


def detach(state):
    if isinstance(state, tuple):
        return tuple(s.detach() for s in state)
    return state.detach()


def train_window(ddp, opt, shard, state, cursor, T, clip):
    """One window of truncated BPTT on the (B, L+1) shard at window index cursor: forward from
    state, mean cross-entropy, backward (DDP averages the gradients), clip, step. Returns the
    loss (a tensor) and the detached state to carry."""
    chunk = shard[:, cursor * T:cursor * T + T + 1].t()  # (T+1, B)
    x, y = chunk[:-1].contiguous(), chunk[1:].reshape(-1)
    logits, new_state = ddp(x, state)
    loss = F.cross_entropy(logits, y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if clip > 0:
        nn.utils.clip_grad_norm_(ddp.parameters(), clip)
    opt.step()
    return loss, detach(new_state)


def val_streams(n_val, S):
    """charlm's dealing of the n_val - 1 validation predictions to S streams: (start, length)."""
    pred = n_val - 1
    q, rho = divmod(pred, S)
    return [(s * q + min(s, rho), q + (s < rho)) for s in range(S)]


def validate(model, cell, args, val, streams):
    """The summed loss of this process's validation streams (a list of (start, length) into the
    val ids) and their prediction count, each stream from a zero state, windows of T, padding not
    scored."""
    T, B = args.seq, len(streams)
    longest = max(n for _, n in streams)
    x = torch.zeros(longest, B, dtype=torch.long)
    y = torch.full((longest, B), -100, dtype=torch.long)
    for b, (st, n) in enumerate(streams):
        x[:n, b] = val[st:st + n]
        y[:n, b] = val[st + 1:st + n + 1]
    model.eval()
    total, state = 0.0, zero_state(cell, args.layers, B, args.hidden)
    with torch.no_grad():
        for t0 in range(0, longest, T):
            logits, state = model(x[t0:t0 + T], state)
            total += F.cross_entropy(logits, y[t0:t0 + T].reshape(-1), ignore_index=-100,
                                     reduction="sum").item()
    model.train()
    return total, sum(n for _, n in streams)


def quality(rank, args, ids, V):
    """Trains until --time-limit, validating on the held-out tail (see the module's docstring)."""
    P, S, T = args.nproc, args.streams, args.seq
    B = S // P
    n_train = int(len(ids) * (1 - args.val_frac))
    train, val = ids[:n_train], ids[n_train:]
    L = (len(train) - 1) // S
    nwin = L // T
    s0 = rank * B
    shard = torch.stack([train[(s0 + b) * L:(s0 + b) * L + L + 1] for b in range(B)])
    mine = val_streams(len(val), S)[s0:s0 + B]
    torch.manual_seed(args.seed)
    model = CharRNN(args.cell, V, args.embed, args.hidden, args.layers, args.dropout)
    ddp = DDP(model)
    opt = torch.optim.Adam(ddp.parameters(), lr=args.lr)
    state = zero_state(args.cell, args.layers, B, args.hidden)
    cursor = step = bad = 0
    best = float("inf")
    scale = 1.0
    curve = open(args.curve, "w") if args.curve and rank == 0 else None

    def val_loss():
        total, n = validate(model, args.cell, args, val, mine)
        t = torch.tensor([total, float(n)], dtype=torch.float64)
        dist.all_reduce(t)
        return (t[0] / t[1]).item()

    def record(seconds, loss, lr):
        if curve:
            curve.write(json.dumps({"seconds": round(seconds, 2), "step": step,
                                    "val_loss": loss, "lr": lr}) + "\n")
            curve.flush()

    t0 = time.perf_counter()
    next_eval = args.eval_every_s
    while True:
        elapsed = time.perf_counter() - t0
        flag = torch.tensor([elapsed], dtype=torch.float64)
        dist.broadcast(flag, 0)  # process 0's clock decides, for every process
        elapsed = flag.item()
        if elapsed >= args.time_limit:
            break
        if elapsed >= next_eval:
            loss = val_loss()
            if args.schedule == "plateau":
                if loss < best - 1e-4:
                    best, bad = loss, 0
                else:
                    bad += 1
                    if bad >= args.patience:
                        scale, bad = scale / 4, 0
            record(elapsed, loss, args.lr * scale)
            next_eval += args.eval_every_s
        frac = elapsed / args.time_limit
        if args.schedule == "cosine":
            w = args.warmup_frac
            scale = frac / w if frac < w else 0.5 * (1 + math.cos(math.pi * (frac - w) / (1 - w)))
        for g in opt.param_groups:
            g["lr"] = args.lr * scale
        loss, state = train_window(ddp, opt, shard, state, cursor, T, args.clip)
        step += 1
        cursor += 1
        if cursor == nwin:
            cursor, state = 0, zero_state(args.cell, args.layers, B, args.hidden)
    train_seconds = time.perf_counter() - t0
    loss = val_loss()
    record(time.perf_counter() - t0, loss, args.lr * scale)
    if rank == 0:
        print(f"RESULT val_loss={loss:.4f} steps={step} seconds={train_seconds:.1f} "
              f"chars_per_s={step * S * T / train_seconds:.1f} vocab={V} nproc={P} "
              f"torch={torch.__version__}", flush=True)


def worker(rank, args, init_method):
    torch.set_num_threads(1)
    if not args.no_pin and hasattr(os, "sched_setaffinity"):
        cpus = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpus[rank % len(cpus)]})
    dist.init_process_group("gloo", init_method=init_method, rank=rank, world_size=args.nproc)
    P, S, T = args.nproc, args.streams, args.seq
    B = S // P

    ids, V = load_ids(args.corpus)
    if args.time_limit:
        quality(rank, args, ids, V)
        dist.destroy_process_group()
        return
    L = (len(ids) - 1) // S
    nwin = L // T
    if nwin < 1:
        sys.exit(f"torch_ref: corpus too small for {S} streams x {T} steps")
    s0 = rank * B
    # (B, L+1): this process's streams, each with its one-character look-ahead
    shard = torch.stack([ids[(s0 + b) * L:(s0 + b) * L + L + 1] for b in range(B)])

    torch.manual_seed(args.seed)
    model = CharRNN(args.cell, V, args.embed, args.hidden, args.layers)
    ddp = DDP(model)
    opt = torch.optim.Adam(ddp.parameters(), lr=args.lr)
    state = zero_state(args.cell, args.layers, B, args.hidden)
    cursor = 0
    loss_val = float("nan")

    def window():
        nonlocal state, cursor, loss_val
        loss, state = train_window(ddp, opt, shard, state, cursor, T, args.clip)
        cursor += 1
        if cursor == nwin:  # epoch wrap
            cursor = 0
            state = zero_state(args.cell, args.layers, B, args.hidden)
        loss_val = loss.item()

    for _ in range(args.warmup):
        window()
    dist.barrier()
    t0 = time.perf_counter()
    for _ in range(args.windows):
        window()
    dist.barrier()
    seconds = time.perf_counter() - t0
    if rank == 0:
        chars = S * T * args.windows
        nparams = sum(p.numel() for p in model.parameters())
        print(f"RESULT chars_per_s={chars / seconds:.1f} windows={args.windows} "
              f"seconds={seconds:.3f} chars={chars} loss={loss_val:.4f} vocab={V} "
              f"params={nparams} nproc={P} threads={torch.get_num_threads()} "
              f"torch={torch.__version__}", flush=True)
    dist.destroy_process_group()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--cell", choices=["lstm", "gru", "rnn"], default="lstm")
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--embed", type=int, default=None, help="default: = hidden")
    ap.add_argument("--streams", type=int, default=64, help="global streams S")
    ap.add_argument("--seq", type=int, default=64, help="window length T")
    ap.add_argument("--nproc", type=int, default=2, help="DDP processes (one per core)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed windows first")
    ap.add_argument("--windows", type=int, default=20, help="timed windows")
    ap.add_argument("--lr", type=float, default=0.002)
    ap.add_argument("--clip", type=float, default=5.0)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--no-pin", action="store_true", help="do not pin process r to CPU r")
    q = ap.add_argument_group("quality mode (time to quality)")
    q.add_argument("--time-limit", type=float, default=0, help="train for SECONDS, then validate")
    q.add_argument("--val-frac", type=float, default=0.1, help="held-out tail of the corpus")
    q.add_argument("--eval-every-s", type=float, default=60, help="validation interval")
    q.add_argument("--dropout", type=float, default=0.0)
    q.add_argument("--schedule", choices=["constant", "cosine", "plateau"], default="constant")
    q.add_argument("--warmup-frac", type=float, default=0.02, help="cosine: warm-up share")
    q.add_argument("--patience", type=int, default=1, help="plateau: validations without gain")
    q.add_argument("--curve", help="JSON lines of the validations (process 0)")
    args = ap.parse_args()
    if args.embed is None:
        args.embed = args.hidden
    if args.streams % args.nproc:
        ap.error("--streams must be a multiple of --nproc")

    with tempfile.TemporaryDirectory(prefix="torch_ref.") as tmp:
        # rendezvous through a file: no network port needed (gloo itself uses loopback)
        init_method = "file://" + os.path.join(tmp, "rendezvous")
        if args.nproc == 1:
            worker(0, args, init_method)
        else:
            mp.spawn(worker, args=(args, init_method), nprocs=args.nproc, join=True)


if __name__ == "__main__":
    main()
