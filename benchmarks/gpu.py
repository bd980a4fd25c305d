"""GPU figures: the solver against the device's bandwidth, a SeLa round at ImageNet size, the OT
quantizer against nearest neighbour, SwAV-size codes. Run by ``make gpu-check`` on a CUDA machine;
writes the ``GPU figures`` section of ``benchmarks/RESULTS.md`` (every row there is a GPU figure).

Each part is timed with ``torch.cuda.synchronize()`` around it (median of repeats); a part that
fails is reported as failed in the table, the others still run.

    python benchmarks/gpu.py [--quick] [--out benchmarks/RESULTS.md]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import traceback
import warnings

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from _harness import markdown_table, update_results  # noqa: E402

from otlearn.ot import AssignmentProblem, SinkhornConvergenceWarning, SinkhornSolver, sinkhorn  # noqa: E402
from otlearn.testing.anchors import swav_sinkhorn  # noqa: E402


def cuda_time(fn, repeats: int = 5) -> tuple[float, object]:
    out = fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def read_bandwidth() -> float:
    x = torch.ones(1 << 30, device="cuda")  # 4 GiB of float32
    t, _ = cuda_time(lambda: x.sum(), 10)
    del x
    return (4 << 30) / t / 1e9


def per_iteration(n: int, k: int, bandwidth: float) -> list[list]:
    """Fixed-iteration time per iteration (difference of 25 and 5 iterations) against 2 reads of N x K."""
    gen = torch.Generator(device="cuda").manual_seed(0)
    scores = torch.log_softmax(3 * torch.randn(n, k, device="cuda", generator=gen), dim=1)
    problem = AssignmentProblem.trusted(scores, 0.1)
    rows = []
    floor = 2 * n * k * 4 / (bandwidth * 1e9)
    for mode in ("kernel", "log"):
        solver = lambda it: SinkhornSolver(tol=None, max_iter=it, mode=mode, max_kernel_bytes=1 << 40)(problem)  # noqa: E731
        t5, _ = cuda_time(lambda: solver(5), 3)
        t25, _ = cuda_time(lambda: solver(25), 3)
        per = (t25 - t5) / 20
        rows.append([f"N={n:,} K={k} {mode}", per * 1e3, floor * 1e3, per / floor, torch.cuda.max_memory_allocated() / 2**30])
        torch.cuda.reset_peak_memory_stats()
    return rows


def sela_round(n: int, k: int) -> list[list]:
    from otlearn.sela.labeling import assign_labels

    rows = []
    for label, solver in [("default (auto mode, tol 1e-3)", SinkhornSolver(tol=1e-3, max_iter=2000)),
                          ("kernel mode, tol 1e-3", SinkhornSolver(tol=1e-3, max_iter=2000, mode="kernel",
                                                                    max_kernel_bytes=1 << 40))]:
        logits = torch.randn(n, k, device="cuda", generator=torch.Generator(device="cuda").manual_seed(1))
        previous = torch.randint(0, k, (1, n))
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        t0 = time.perf_counter()
        bank, heads, _ = assign_labels(torch.arange(n), [logits], previous, [None], 25.0, solver, None, rounding="balanced")
        torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
        peak = (torch.cuda.max_memory_allocated() - base) / 2**30
        sizes = torch.bincount(bank[0], minlength=k)
        rows.append([f"N={n:,} K={k} λ=25 {label}", seconds, heads[0]["iterations"], heads[0]["converged"],
                     f"{int(sizes.min())}-{int(sizes.max())}", peak])
        del logits, bank
        torch.cuda.empty_cache()
    return rows


def quantizer_step(tokens: int, k: int, dim: int = 32) -> list[list]:
    from otlearn.vq import OPTVQ_SETTINGS, OTVectorQuantizer

    rows, times = [], {}
    for assignment in ("nn", "ot", "optvq"):
        torch.manual_seed(0)
        settings = {} if assignment == "ot" else OPTVQ_SETTINGS  # ot: the recommended defaults
        q = OTVectorQuantizer(k, dim, assignment=assignment, **settings).cuda()
        x = torch.nn.Parameter(torch.randn(tokens, dim, device="cuda"))
        opt = torch.optim.Adam([x, *q.parameters()], lr=1e-3)

        def step():
            out = q(x)
            opt.zero_grad()
            out.loss.backward()
            opt.step()
            return out

        t, out = cuda_time(step, 10)
        times[assignment] = t
        used = float(out.stats["used_fraction"])
        rows.append([f"{assignment}, {tokens:,} tokens, K={k}", t * 1e3, t / times["nn"], used])
    return rows


def swav_codes(batch: int, k: int) -> list[list]:
    x = torch.nn.functional.normalize(torch.randn(batch, 128, device="cuda"), dim=1)
    c = torch.nn.functional.normalize(torch.randn(k, 128, device="cuda"), dim=1)
    scores = x @ c.T

    def plain():  # SwAV's / lightly's float32 loop, no stabilisation
        return swav_sinkhorn(scores, eps=0.05, n_iters=3, dtype=torch.float32)

    t_plain, _ = cuda_time(plain, 20)
    t_ours, _ = cuda_time(lambda: sinkhorn(scores, 0.05, tol=None, max_iter=3, return_plan=True).plan() * batch, 20)
    return [[f"B={batch} K={k}, 3 iterations", t_plain * 1e3, t_ours * 1e3, t_ours / t_plain]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller problems (about a minute)")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "RESULTS.md"))
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("benchmarks/gpu.py: no CUDA device; nothing measured")
        return
    warnings.simplefilter("ignore", SinkhornConvergenceWarning)
    scale = 8 if args.quick else 1
    n_big, tokens = 1_280_000 // scale, 65_536 // scale
    t0 = time.time()
    bandwidth = read_bandwidth()
    parts = [f"Device: {torch.cuda.get_device_name()}, torch {torch.version.cuda and torch.__version__} (CUDA "
             f"{torch.version.cuda}); read bandwidth {bandwidth:.0f} GB/s (sum over 4 GiB). "
             f"Command: `python benchmarks/gpu.py{' --quick' if args.quick else ''}` (`make gpu-check`). "
             "**All figures in this section are GPU figures.**\n"]
    sections = [
        ("Time per iteration against the bandwidth floor (2 reads of N x K float32)",
         ["problem", "ms / iteration", "floor ms", "ratio", "peak GiB"], lambda: per_iteration(n_big, 3000, bandwidth)),
        ("SeLa label round at ImageNet size (one head)",
         ["round", "seconds", "iterations", "converged", "cluster sizes", "peak GiB above the logits"],
         lambda: sela_round(n_big, 3000)),
        ("OT quantizer training step against nearest neighbour",
         ["step", "ms", "/ NN", "codes used in the batch"], lambda: quantizer_step(tokens, 16384)),
        ("SwAV-size codes", ["problem", "plain loop ms", "otlearn ms", "otlearn / plain"],
         lambda: swav_codes(4096, 3000) + swav_codes(4096, 65536)),
    ]
    for title, header, run in sections:
        try:
            rows = run()
            text = f"### {title}\n\n" + markdown_table(header, rows) + "\n"
        except Exception:  # noqa: BLE001 - report and go on with the other parts
            text = f"### {title}\n\nFAILED:\n\n```\n{traceback.format_exc()[-2000:]}\n```\n"
        print(text, flush=True)
        parts.append(text)
        torch.cuda.empty_cache()
    parts[0] = parts[0].rstrip() + f" Total {time.time() - t0:.0f} s.\n"
    update_results(args.out, "GPU figures" + (" (quick)" if args.quick else ""), "\n".join(parts))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
