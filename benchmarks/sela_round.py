"""One SeLa label round at scale: N=100k samples, K=1000 clusters, T=2 heads, W=1 and W=2 processes.

Each rank holds its shard of the logit banks (8 x cosine similarities of noisy 64-d cluster features to K centres),
then runs otlearn's label step (distributed Sinkhorn per head with λ=10, balanced rounding, label
all-gather). Reports the wall time of the round (slowest rank, median of ``--repeats``), solver
iterations, and each rank's peak resident memory above what it held before the round (the banks
are allocated before measuring). Writes the table to ``benchmarks/RESULTS.md``.

    python benchmarks/sela_round.py [--n 100000 --k 1000 --heads 2 --repeats 3]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "2")
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from _harness import PeakMemory, markdown_table, update_results  # noqa: E402

from otlearn.ot import SinkhornSolver  # noqa: E402
from otlearn.sela.labeling import assign_labels  # noqa: E402


def make_logits(n: int, k: int, heads: int, rows: slice, block: int = 1000) -> list[torch.Tensor]:
    """Logits of rows ``rows`` of a fixed (n, k) problem per head: rows are drawn in blocks of
    ``block`` from seeds (head, block index), so every sharding sees the same global problem."""
    out = []
    for h in range(heads):
        centers = torch.randn(k, 64, generator=torch.Generator().manual_seed(1000 + h))
        centers = torch.nn.functional.normalize(centers, dim=1)
        parts = []
        for b0 in range(rows.start // block * block, rows.stop, block):
            g = torch.Generator().manual_seed(10_000 * (h + 1) + b0 // block)
            m = min(block, n - b0)
            feats = centers[torch.randint(0, k, (m,), generator=g)] + 1.5 * torch.randn(m, 64, generator=g) / 8
            lo, hi = max(rows.start, b0) - b0, min(rows.stop, b0 + m) - b0
            parts.append(8 * torch.nn.functional.normalize(feats[lo:hi], dim=1) @ centers.T)
        out.append(torch.cat(parts) if parts else torch.zeros(0, k))
    return out


def one_rank(rank: int, world: int, n: int, k: int, heads: int, repeats: int, threads: int, acceleration: str = "auto") -> dict:
    torch.set_num_threads(threads)
    group = dist.group.WORLD if world > 1 else None
    rows = slice(rank * n // world, (rank + 1) * n // world)
    indices = torch.arange(rows.start, rows.stop)
    previous = torch.zeros(heads, n, dtype=torch.long)
    solver = SinkhornSolver(tol=1e-3, max_iter=1000, acceleration=acceleration)
    times, peaks, iters = [], [], []
    for _ in range(repeats):
        banks = make_logits(n, k, heads, rows)
        if group is not None:
            dist.barrier()
        with PeakMemory() as mem:
            t0 = time.perf_counter()
            _, diag, _ = assign_labels(indices, banks, previous, [None] * heads, 10.0, solver, group, rounding="balanced")
            times.append(time.perf_counter() - t0)
        peaks.append(mem.mib)
        iters.append([d["iterations"] for d in diag])
        del banks
    return {"time": statistics.median(times), "peak": max(peaks), "iters": iters[-1], "rows": rows.stop - rows.start}


def _worker(rank, world, port, args, queue):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        queue.put((rank, one_rank(rank, world, *args)))
    finally:
        dist.destroy_process_group()


def run(world: int, args: tuple) -> list[dict]:
    if world == 1:
        return [one_rank(0, 1, *args)]
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(r, world, port, args, queue)) for r in range(world)]
    for p in procs:
        p.start()
    results = dict(queue.get(timeout=3600) for _ in range(world))
    for p in procs:
        p.join()
    return [results[r] for r in range(world)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--k", type=int, default=1000)
    parser.add_argument("--heads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "RESULTS.md"))
    args = parser.parse_args()
    rows = []
    for world, acceleration, repeats in ((1, "auto", args.repeats), (2, "auto", args.repeats), (1, "none", 1)):
        threads = max(1, 2 // world)  # the machine's 2 cores shared by the ranks
        results = run(world, (args.n, args.k, args.heads, repeats, threads, acceleration))
        bank_mib = args.n // world * args.k * 4 * args.heads / 2**20
        label = "Anderson (default)" if acceleration == "auto" else "none (plain)"
        rows.append([world, threads, label, max(r["time"] for r in results), str(results[0]["iters"]),
                     " / ".join(f"{r['peak']:.0f}" for r in results), f"{bank_mib:.0f}"])
        print(rows[-1], flush=True)
    table = markdown_table(["W processes", "threads each", "acceleration", "round seconds (median)", "solver iterations per head",
                            "peak MiB per rank above the banks", "bank MiB per rank (T x n_local x K float32)"], rows)
    body = (f"N={args.n}, K={args.k}, T={args.heads} heads, λ=10, tol 1e-3, balanced rounding; 2 CPU cores shared by "
            f"the ranks (gloo); median of {args.repeats} (the plain arm: 1 run). Command: `python benchmarks/sela_round.py`.\n\n" + table +
            "\n\nPeak memory above the banks is the solver's kernel (n_local x K float32) plus one head's log-softmax "
            "scores and the label bank; no rank ever holds an N x K matrix, and the communication per iteration is "
            "one all-reduce of K floats.\n")
    update_results(args.out, "SeLa label round (CPU)", body)
    print(body)


if __name__ == "__main__":
    main()
