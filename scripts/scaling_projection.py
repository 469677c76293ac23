#!/usr/bin/env python3
"""Projects charlm's gradient all-reduce to many ranks from a measured link, for the README's
scaling section (scripts/README.md#scaling_projectionpy):

    scripts/scaling_projection.py MULTINODE.txt [--bench BENCH.txt] [--bw GBPS --lat US]

MULTINODE.txt is the output of scripts/cluster/bench_multinode.sh (all-reduce across emulated
nodes over TCP); BENCH.txt the output of scripts/bench.sh (default: the newest full run in
scripts/bench-results/), which gives each benchmark work's gradient size and its time per
window (64 streams x 64 characters at -np 2, each rank 32 streams: weak scaling keeps that
compute per rank).

The link model: a ring all-reduce of n floats over P ranks takes 2(P-1) steps of latency alpha
and moves 2(P-1)/P * 4n bytes through each rank's link of bandwidth B. alpha and B are fitted
to the -np 2 sums of the measurement (t = 2 alpha + 4n / B: alpha from the smallest, B from the
largest), or given with --bw and --lat. charlm sums its gradient in ceil(n / piece) sums, so a
window's all-reduce costs

    t(P) = ceil(n / piece) * 2(P-1) alpha + 2(P-1)/P * 4n / B

counted as not overlapped with backward (an upper bound of the wait). The share of a step is
t / (window + t). Printed per work: t and the share at P = 8, 64, 512 with the fixed piece
(DIST_PIECE) and with the piece charlm uses (dist_piece(P): DIST_PIECE * max(1, P / 8)), and
the smallest P at which the share passes 10% with each."""
import argparse
import glob
import math
import os
import re
import statistics
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIST_PIECE = 256 * 1024  # include/charlm/dist.h
PIECE_RANKS = 8          # dist_piece(): the piece grows in proportion to P beyond this
WINDOW_CHARS = 64 * 64   # scripts/bench.sh: 64 global streams x T = 64


def dist_piece(p):
    return DIST_PIECE * max(1, p // PIECE_RANKS)


def fit_link(text):
    """(alpha s, B bytes/s, points) from the -np 2 whole-buffer sums of bench_multinode.sh: alpha
    from the smallest sum (t = 2 alpha at P = 2), B from the largest (t = 2 alpha + 4n / B). The
    sums in between are faster than that B (the model is conservative for them) and printed."""
    pts = sorted((int(n), float(ms) * 1e-3) for n, ms in
                 re.findall(r"^np=2 ALLREDUCE ranks=2 floats=(\d+) piece=0 median_ms=([\d.]+)",
                            text, re.M))
    if len(pts) < 2:
        sys.exit("scaling_projection: fewer than 2 'np=2 ALLREDUCE ... piece=0' lines")
    alpha = pts[0][1] / 2
    n, t = pts[-1]
    return alpha, 4 * n / (t - 2 * alpha), pts


def ring(n, p, piece, alpha, bw):
    if p < 2:
        return 0.0
    return math.ceil(n / piece) * 2 * (p - 1) * alpha + 2 * (p - 1) / p * 4 * n / bw


def works(bench):
    """{work: (gradient floats, seconds per window)} from a bench.sh output."""
    floats = {w: int(n) for w, n in
              re.findall(r"^\s*(\w+): ALLREDUCE ranks=\d+ floats=(\d+) piece=0 ", bench, re.M)}
    cps = {}
    default_kernels = bench.split("\n== OpenBLAS AVX-512")[0]
    for w, c in re.findall(r"^run (\w+) rep \d+: charlm ([\d.]+) chars/s", default_kernels,
                           re.M):
        cps.setdefault(w, []).append(float(c))
    return {w: (floats[w], WINDOW_CHARS / statistics.median(cps[w])) for w in floats if w in cps}


def crossing(n, window, alpha, bw, piece_of, limit=0.10):
    """The smallest P at which the all-reduce passes `limit` of a step, or None below 2^24."""
    share = lambda p: (lambda t: t / (window + t))(ring(n, p, piece_of(p), alpha, bw))
    hi = 2
    while share(hi) <= limit:
        hi *= 2
        if hi > 1 << 24:
            return None
    lo = hi // 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if share(mid) <= limit else (lo, mid)
    return hi


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("multinode", help="output of scripts/cluster/bench_multinode.sh")
    ap.add_argument("--bench", help="output of scripts/bench.sh (default: newest full run)")
    ap.add_argument("--bw", type=float, help="link bandwidth in GB/s instead of the fitted one")
    ap.add_argument("--lat", type=float, help="latency per ring step in us instead of fitted")
    a = ap.parse_args()
    text = open(a.multinode).read()
    bench_path = a.bench or sorted(p for p in glob.glob(os.path.join(
        ROOT, "scripts", "bench-results", "2*.txt")) if "quick" not in p)[-1]
    table = works(open(bench_path).read())
    alpha, bw, pts = fit_link(text)
    src = f"fitted to {len(pts)} -np 2 sums of {os.path.basename(a.multinode)}"
    if a.bw or a.lat:
        bw = a.bw * 1e9 if a.bw else bw
        alpha = a.lat * 1e-6 if a.lat else alpha
        src = "given"
    print(f"link ({src}): alpha = {alpha * 1e6:.1f} us per ring step, B = {bw / 1e9:.3f} GB/s")
    print("model against the measurement (whole-buffer sums):")
    for p, n, ms in re.findall(r"^np=(\d) ALLREDUCE ranks=\d+ floats=(\d+) piece=0 "
                               r"median_ms=([\d.]+)", text, re.M):
        print(f"  P={p} n={int(n):>8}: measured {float(ms):8.3f} ms, model "
              f"{ring(int(n), int(p), int(n), alpha, bw) * 1e3:8.3f} ms")
    for w, p, ms in re.findall(r"^(\w+) np=(\d) ALLREDUCE ranks=\d+ floats=\d+ piece=[1-9]\d* "
                               r"median_ms=([\d.]+)", text, re.M):
        n = table.get(w, (None,))[0]
        if n:
            print(f"  {w} P={p} in pieces of {DIST_PIECE}: measured {float(ms):.3f} ms, model "
                  f"{ring(n, int(p), DIST_PIECE, alpha, bw) * 1e3:.3f} ms")
    for m in re.finditer(r"^CHARLM work=(\w+) np=(\d+) .*?chars_per_s=([\d.]+).*?all-reduce wait "
                         r"([\d.]+)%", text, re.M):
        print(f"  charlm {m.group(1)} -np {m.group(2)} across the nodes: {float(m.group(3)):.0f} "
              f"chars/s, all-reduce wait {m.group(4)}% (slowest rank)")
    print(f"\nprojection (windows of {os.path.basename(bench_path)}; no overlap counted):\n")
    print("| work | gradient | window | P | all-reduce, fixed piece | share | with dist_piece(P) "
          "| share |")
    print("|---|---|---|---|---|---|---|---|")
    for w, (n, window) in table.items():
        for p in (8, 64, 512):
            tf = ring(n, p, DIST_PIECE, alpha, bw)
            ta = ring(n, p, dist_piece(p), alpha, bw)
            print(f"| {w} | {4 * n / 1e6:.1f} MB | {window * 1e3:.0f} ms | {p} | "
                  f"{tf * 1e3:.1f} ms | {100 * tf / (window + tf):.1f}% | "
                  f"{ta * 1e3:.1f} ms | {100 * ta / (window + ta):.1f}% |")
    print("\nthe all-reduce passes 10% of a step at P =")
    for w, (n, window) in table.items():
        pf = crossing(n, window, alpha, bw, lambda p: DIST_PIECE)
        pa = crossing(n, window, alpha, bw, dist_piece)
        print(f"  {w}: {pf} with the fixed piece, {pa} with dist_piece(P)")


if __name__ == "__main__":
    main()
