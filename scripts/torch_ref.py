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
"""

import argparse
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
    def __init__(self, cell, vocab, embed, hidden, layers):
        super().__init__()
        self.embedding = nn.Embedding(vocab, embed)
        kinds = {"lstm": nn.LSTM, "gru": nn.GRU}
        if cell == "rnn":
            self.rnn = nn.RNN(embed, hidden, layers, nonlinearity="tanh")
        else:
            self.rnn = kinds[cell](embed, hidden, layers)
        self.decoder = nn.Linear(hidden, vocab)

    def forward(self, x, state):  # x (T, B) -> logits (T*B, V)
        out, state = self.rnn(self.embedding(x), state)
        return self.decoder(out.reshape(-1, out.shape[-1])), state


def zero_state(cell, layers, batch, hidden):
    h = torch.zeros(layers, batch, hidden)
    return (h, torch.zeros_like(h)) if cell == "lstm" else h


def detach(state):
    if isinstance(state, tuple):
        return tuple(s.detach() for s in state)
    return state.detach()


def worker(rank, args, init_method):
    torch.set_num_threads(1)
    if not args.no_pin and hasattr(os, "sched_setaffinity"):
        cpus = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpus[rank % len(cpus)]})
    dist.init_process_group("gloo", init_method=init_method, rank=rank, world_size=args.nproc)
    P, S, T = args.nproc, args.streams, args.seq
    B = S // P

    ids, V = load_ids(args.corpus)
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
        chunk = shard[:, cursor * T:cursor * T + T + 1].t()  # (T+1, B)
        x, y = chunk[:-1].contiguous(), chunk[1:].reshape(-1)
        logits, new_state = ddp(x, state)
        loss = F.cross_entropy(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if args.clip > 0:
            nn.utils.clip_grad_norm_(ddp.parameters(), args.clip)
        opt.step()
        state = detach(new_state)
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
