"""Quantizer benchmark: the quantizer alone fitted to a Gaussian mixture, and the cost of a step.

Part 1 (fit): tokens from a 64-component Gaussian mixture in d dimensions; a codebook of K codes
(inits: uniform ±1/K as taming's VQGAN, offset N(3, 0.1), N(0, 1)) trained by Adam through each
arm's loss for ``--steps`` steps of batch 1024; then utilisation (codes used by nearest-neighbour
assignment of 16,384 fresh tokens) and quantisation MSE. Arms: ``nn`` (nearest-neighbour STE),
``optvq`` (OptVQ's exact 5-iteration assignment), ``otlearn`` (tolerance-based OT, argmax codes),
``otlearn_balanced_ema`` (balanced codes per batch and an EMA codebook, the recipe's choice before #12),
``otlearn_default`` (``OTVectorQuantizer``'s documented defaults: k-means init on the first batch, EMA
codebook, dead-code restart, relaxed code marginal with ρ annealed 3 → 0.01 over the fit; it ignores the
init column, as vector-quantize-pytorch does: both are fit once per K and d), and vector-quantize-pytorch's ``VectorQuantize`` with k-means
init and dead-code restart. The last column is otlearn_default's MSE over vector-quantize-pytorch's.

Part 2 (step time): a quantizer training step (forward, backward, Adam) at batch 256 tokens and
K=1024, and a full VQ-VAE training step at batch 256 digits images (4,096 tokens, K=1024), NN vs
OT, median of 50 steps, 2 threads.

    python benchmarks/vq.py [--quick]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings

os.environ.setdefault("OMP_NUM_THREADS", "2")
import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _harness import markdown_table, update_results  # noqa: E402

from otlearn.ot import SinkhornConvergenceWarning, SinkhornSolver  # noqa: E402
from otlearn.vq import OTVectorQuantizer, VQAutoencoder, usage_stats  # noqa: E402


def mixture(n: int, d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(64, d, generator=torch.Generator().manual_seed(1234)) * 2
    return centers[torch.randint(0, 64, (n,), generator=g)] + 0.3 * torch.randn(n, d, generator=g)


def init_codes(kind: str, k: int, d: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(5)
    if kind == "uniform":
        return (torch.rand(k, d, generator=g) * 2 - 1) / k
    if kind == "offset":
        return 3 + 0.1 * torch.randn(k, d, generator=g)
    return torch.randn(k, d, generator=g)


# Arms that make their own codebook (k-means on the first batch) and so ignore the init column: fit once per (K, d).
INIT_FREE_ARMS = ("vqpytorch", "otlearn_default")


def bench_solver() -> SinkhornSolver:
    """The otlearn arms' solver: tolerance 1e-2, at most 200 iterations, kernel reuse."""
    return SinkhornSolver(tol=1e-2, max_iter=200, reuse_kernel=True)


def make_arm(arm: str, k: int, d: int, init: str, steps: int):
    if arm == "vqpytorch":
        from vector_quantize_pytorch import VectorQuantize

        vq = VectorQuantize(dim=d, codebook_size=k, decay=0.8, commitment_weight=1.0, kmeans_init=True,
                            kmeans_iters=10, threshold_ema_dead_code=2)
        return vq, lambda x: vq(x[None])[2].sum(), lambda: vq.codebook.detach().reshape(k, d)
    if arm == "otlearn_default":
        q = OTVectorQuantizer(k, d, solver=bench_solver(),
                              b_penalty_anneal_steps=steps)  # everything else: the documented defaults
        return q, lambda x: q(x).loss, lambda: q.codes().detach()
    recommended = arm == "otlearn_balanced_ema"
    q = OTVectorQuantizer(k, d, assignment={"nn": "nn", "optvq": "optvq", "otlearn": "ot", "otlearn_balanced_ema": "ot"}[arm],
                          codebook_init=init_codes(init, k, d), solver=bench_solver(),
                          rounding="balanced" if recommended else "argmax",
                          codebook_update="ema" if recommended else "gradient", ema_decay=0.8,
                          b_penalty=None, dead_code_threshold=None)  # the arms as measured before #12's defaults
    return q, lambda x: q(x).loss, lambda: q.codes().detach()


def fit_arm(arm: str, k: int, d: int, init: str, steps: int) -> dict[str, float]:
    torch.manual_seed(0)
    module, loss_fn, codes_fn = make_arm(arm, k, d, init, steps)
    params = [p for p in module.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=1e-2) if params else None
    for step in range(steps):
        x = mixture(1024, d, seed=step)
        loss = loss_fn(x)
        if opt is not None:
            opt.zero_grad()
            loss.backward()
            opt.step()
    test = mixture(16384, d, seed=10**6)
    codes = codes_fn()
    idx = torch.cdist(test, codes).argmin(1)
    stats = usage_stats(torch.bincount(idx, minlength=k))
    return {"utilization": stats["utilization"], "mse": float((test - codes[idx]).square().mean())}


def step_time(fn, repeats: int = 50) -> float:
    for _ in range(5):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def quantizer_step(assignment: str, batch: int, k: int, d: int = 16):
    q = OTVectorQuantizer(k, d, assignment=assignment)  # the defaults: an EMA codebook, so the gradient goes to x
    x = torch.randn(batch, d, requires_grad=True)  # stands in for an encoder's output
    opt = torch.optim.Adam([x, *q.parameters()], lr=1e-3)

    def run():
        loss = q(x).loss
        opt.zero_grad()
        loss.backward()
        opt.step()

    return run


def autoencoder_step(assignment: str, batch: int, k: int):
    from otlearn.data import Digits

    model = VQAutoencoder(hidden=32, latent_dim=16, num_codes=k, assignment=assignment)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    images = Digits("train").images[:batch]

    def run():
        quantized, _, vq_loss = model.quantize(images)
        loss = torch.nn.functional.mse_loss(model.decoder(quantized), images) + vq_loss
        opt.zero_grad()
        loss.backward()
        opt.step()

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "RESULTS.md"))
    args = parser.parse_args()
    torch.set_num_threads(2)
    warnings.filterwarnings("ignore", category=SinkhornConvergenceWarning)
    steps = args.steps or (50 if args.quick else 300)
    ks = [256] if args.quick else [256, 1024, 4096]
    dims = [8] if args.quick else [8, 32]
    inits = ["uniform", "offset", "normal"]
    arms = ["nn", "vqpytorch", "optvq", "otlearn", "otlearn_balanced_ema", "otlearn_default"]
    rows = []
    init_free: dict[tuple[int, int], dict[str, dict[str, float]]] = {}  # (K, d) -> the init-free arms' cells, fit once
    t0 = time.time()
    for k in ks:
        for d in dims:
            for init in inits:
                if (k, d) not in init_free:
                    init_free[(k, d)] = {arm: fit_arm(arm, k, d, init, steps) for arm in INIT_FREE_ARMS}
                cells = {arm: fit_arm(arm, k, d, init, steps) for arm in arms if arm not in INIT_FREE_ARMS}
                cells.update(init_free[(k, d)])
                rows.append([k, d, init] + [f"{cells[a]['utilization']:.3f} / {cells[a]['mse']:.3g}" for a in arms]
                            + [f"{cells['otlearn_default']['mse'] / cells['vqpytorch']['mse']:.3f}"])
                print(rows[-1], flush=True)
    fit_table = markdown_table(["K", "d", "codebook init"] + [f"{a}: util / MSE" for a in arms]
                               + ["MSE otlearn_default / vqpytorch"], rows)

    timing_rows = []
    for label, factory, size in [("quantizer alone, 256 tokens", quantizer_step, 256),
                                 ("VQ-VAE step, 256 digits images (4,096 tokens)", autoencoder_step, 256)]:
        t_nn = step_time(factory("nn", size, 1024))
        t_ot = step_time(factory("ot", size, 1024))
        t_optvq = step_time(factory("optvq", size, 1024))
        timing_rows.append([label, t_nn * 1e3, t_optvq * 1e3, t_ot * 1e3, t_ot / t_nn])
        print(timing_rows[-1], flush=True)
    time_table = markdown_table(["training step, K=1024", "NN ms", "OptVQ-exact ms", "otlearn OT ms", "OT / NN"], timing_rows)
    body = (f"Command: `python benchmarks/vq.py{' --quick' if args.quick else ''}`; {steps} Adam steps of batch 1024 per fit; "
            f"utilisation = codes used by NN assignment of 16,384 fresh mixture tokens; 2 threads; total {time.time() - t0:.0f} s.\n\n"
            + fit_table + "\n\nStep time (median of 50):\n\n" + time_table + "\n")
    update_results(args.out, "Vector quantization (CPU" + (", quick)" if args.quick else ")"), body)
    print(body)


if __name__ == "__main__":
    main()
