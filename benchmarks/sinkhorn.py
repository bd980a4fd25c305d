"""Sinkhorn benchmark: otlearn against POT (kernel and log domain, numpy float64 and torch float32)
and a SwAV-style 3-iteration loop, on the problems otlearn's methods meet.

Every metric is computed by this harness from the plan each solver returns:
* time to reach a max relative marginal error (rows and columns) of 1e-2, 1e-3, 1e-4
  (median of ``--repeats`` runs, 2 threads). Every solver runs the same Sinkhorn iteration, so
  POT is run for otlearn's iteration count and then for more (x1.2 steps) until its own plan meets
  the target;
* agreement of each row's argmax with a float64 reference (otlearn float64 at tol 1e-7);
* peak resident memory above the inputs while solving;
* otlearn's time per iteration against the floor of two reads of the N x K scores at the read
  bandwidth measured in the same run;
* otlearn plain (``acceleration="none"``) next to the default (Anderson): iterations and times, and
  the time to tol 1e-6 of each (where ``dtype="auto"`` computes in float64);
* warm start: iterations to 1e-3 from the previous g after perturbing the scores (noise of
  standard deviation ε/100), against a cold start;
* SwAV-size codes: B ∈ {256, 4096} samples, K=3000 prototypes, ε=0.05, 3 fixed iterations: otlearn
  (log-safe, ``tol=None, max_iter=3, return_plan=True``) against the plain float32 3-iteration kernel
  loop as SwAV and lightly write it (``exp(S/ε)`` without a max shift), with the largest code
  difference to a float64 reference.

Usage: ``python benchmarks/sinkhorn.py [--quick] [--repeats R] [--out benchmarks/RESULTS.md]``.
"""
from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time
import warnings

os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "2")
os.environ.setdefault("MKL_NUM_THREADS", "2")

import numpy as np  # noqa: E402
import ot  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _harness import PeakMemory, markdown_table, median_time, read_bandwidth_gbs, update_results  # noqa: E402

from otlearn.data.scores import confident_network  # noqa: E402
from otlearn.ot import SinkhornConvergenceWarning, sinkhorn  # noqa: E402
from otlearn.testing.anchors import swav_sinkhorn  # noqa: E402

TARGETS = (1e-2, 1e-3, 1e-4)
TIME_BUDGET_S = 30.0  # one POT run slower than this is reported as "> budget"


# ----------------------------------------------------------------------------- problems
def gaussian_mixture_cosine(n: int, k: int, dim: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(64, dim, generator=g)
    x = centers[torch.randint(0, 64, (n,), generator=g)] + 0.7 * torch.randn(n, dim, generator=g)
    protos = torch.randn(k, dim, generator=g)
    return torch.nn.functional.normalize(x, dim=1) @ torch.nn.functional.normalize(protos, dim=1).T


def optvq_scores(n: int, k: int, dim: int, seed: int) -> torch.Tensor:
    """−A with A = cdist(z, codes) standardised over the whole matrix, minus its minimum (OptVQ's "all")."""
    g = torch.Generator().manual_seed(seed)
    centers = 3 * torch.randn(32, dim, generator=g)
    z = centers[torch.randint(0, 32, (n,), generator=g)] + torch.randn(n, dim, generator=g)
    codes = torch.randn(k, dim, generator=g)
    dist = torch.cdist(z, codes)
    dist = (dist - dist.mean()) / (dist.std() + 1e-6)
    return -(dist - dist.min())


def problems(quick: bool) -> list[dict]:
    if quick:
        return [
            dict(name="(i) cosine GMM, quick", scores=gaussian_mixture_cosine(1024, 512, 128, 0), eps=[0.05]),
            dict(name="(iv) overhead", scores=gaussian_mixture_cosine(256, 64, 128, 3), eps=[0.05]),
        ]
    g = torch.Generator().manual_seed(2)
    dirichlet = torch.distributions.Dirichlet(torch.full((512,), 0.5))
    torch.manual_seed(2)
    b = dirichlet.sample().double()
    b = (b + 1e-12) / (b + 1e-12).sum()
    del g
    return [
        dict(name="(i) N=4096 K=3000 cosine GMM", scores=gaussian_mixture_cosine(4096, 3000, 128, 0), eps=[0.05, 0.025]),
        dict(name="(ii) N=16384 K=1024 OptVQ distances", scores=optvq_scores(16384, 1024, 8, 1), eps=[0.1]),
        dict(name="(iii) N=4096 K=512 Dirichlet(0.5) b", scores=gaussian_mixture_cosine(4096, 512, 128, 2), eps=[0.05], b=b),
        dict(name="(iv) N=256 K=64 overhead", scores=gaussian_mixture_cosine(256, 64, 128, 3), eps=[0.05]),
        dict(name="(v) N=10000 K=100 confident network", scores=confident_network(10_000, 100, 4), eps=[0.1]),
    ]


# ----------------------------------------------------------------------------- metrics
def marginal_error(plan: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """max over rows and columns of |marginal / target − 1| (targets > 0)."""
    plan = np.asarray(plan, dtype=np.float64)
    if not np.all(np.isfinite(plan)):
        return math.inf
    rows = np.abs(plan.sum(1) / a - 1).max()
    cols = np.abs(plan.sum(0)[b > 0] / b[b > 0] - 1).max()
    return float(max(rows, cols))


def to_numpy(plan) -> np.ndarray:
    return plan.double().numpy() if isinstance(plan, torch.Tensor) else np.asarray(plan, dtype=np.float64)


# ----------------------------------------------------------------------------- solvers
def make_pot(kind: str, backend: str, scores: torch.Tensor, a: np.ndarray, b: np.ndarray, eps: float):
    """A callable ``n_iters -> plan`` for POT's ``sinkhorn`` (kernel) or ``sinkhorn_log``."""
    if backend == "numpy64":
        m, aa, bb = (-scores.double()).numpy(), a, b
    else:
        m = -scores.float()
        aa, bb = torch.from_numpy(a).float(), torch.from_numpy(b).float()
    method = ot.sinkhorn if kind == "sinkhorn" else ot.bregman.sinkhorn_log

    def run(n_iters: int):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return method(aa, bb, m, eps, numItermax=n_iters, stopThr=0.0)

    return run


def time_to_target(run, start_iters: int, target: float, a, b, repeats: int) -> dict:
    """Smallest tried iteration count whose plan meets ``target``; its median time and the plan.

    A run projected (from a 2-iteration run) to take longer than ``TIME_BUDGET_S`` is not made:
    the cell then reads "> budget" with the projected time.
    """
    n = max(1, start_iters)
    t0 = time.perf_counter()
    run(2)
    projected = (time.perf_counter() - t0) / 2 * n
    if projected > TIME_BUDGET_S:
        return dict(time=math.nan, iters=n, err=math.nan, plan=None, note=f"> {TIME_BUDGET_S:.0f} s (projected {projected:.0f} s)")
    for _ in range(25):
        t0 = time.perf_counter()
        plan = to_numpy(run(n))
        once = time.perf_counter() - t0
        err = marginal_error(plan, a, b)
        if err <= target:
            break
        if once > TIME_BUDGET_S or not math.isfinite(err):
            return dict(time=math.nan, iters=n, err=err, plan=plan, note=f"> {once:.0f}s" if math.isfinite(err) else "NaN/Inf")
        n = int(math.ceil(n * 1.2)) + 1
    else:
        return dict(time=math.nan, iters=n, err=err, plan=plan, note="not reached")
    reps = repeats if once * repeats < 4 * TIME_BUDGET_S else max(1, int(4 * TIME_BUDGET_S // max(once, 1e-9)))
    t, _ = median_time(lambda: run(n), reps)
    return dict(time=t, iters=n, err=err, plan=plan, note="")


def benchmark_problem(spec: dict, eps: float, repeats: int, bandwidth: float) -> tuple[str, dict]:
    scores = spec["scores"].float().contiguous()
    n, k = scores.shape
    a = np.full(n, 1.0 / n)
    b = spec.get("b", torch.full((k,), 1.0 / k, dtype=torch.float64)).numpy()
    b_t = torch.from_numpy(b)
    reference = sinkhorn(scores, eps, b=b_t, tol=1e-7, max_iter=100_000, dtype=torch.float64)
    ref_argmax = reference.assignments().numpy()

    rows, summary = [], {"n": n, "k": k, "eps": eps}

    def otlearn_run(tol, acceleration="auto", max_iter=100_000):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SinkhornConvergenceWarning)
            return sinkhorn(scores, eps, b=b_t.float(), tol=tol, max_iter=max_iter, acceleration=acceleration)

    def otlearn_rows(acceleration: str) -> dict:
        out = {}
        for target in TARGETS:
            t, res = median_time(lambda: otlearn_run(target, acceleration, max_iter=20_000), repeats)
            plan = to_numpy(res.plan())
            out[target] = dict(time=t, iters=res.n_iters, err=marginal_error(plan, a, b), plan=plan, mode=res.mode,
                               dtype=str(res.dtype).replace("torch.float", "f"))
        return out

    ours = otlearn_rows("auto")
    plain = otlearn_rows("none")
    with PeakMemory() as mem:
        otlearn_run(1e-3)
    for label, arm in (("otlearn", ours), ("otlearn plain (acceleration='none')", plain)):
        agree = float((arm[1e-3]["plan"].argmax(1) == ref_argmax).mean())
        rows.append([f"{label} ({arm[1e-3]['mode']}, {arm[1e-3]['dtype']})"] + [arm[t]["time"] * 1e3 for t in TARGETS]
                    + [arm[1e-3]["iters"], agree, mem.mib if arm is ours else math.nan, arm[1e-3]["time"] / ours[1e-3]["time"]])
    summary["otlearn"] = {t: ours[t]["time"] for t in TARGETS}
    summary["iters"] = ours[1e-3]["iters"]
    summary["plain_iters"] = plain[1e-3]["iters"]
    # high precision: tol 1e-6 (dtype "auto" computes in float64 there), accelerated against plain
    tight = {}
    for acc in ("auto", "none"):
        t, res = median_time(lambda: otlearn_run(1e-6, acc, max_iter=20_000), max(1, repeats // 2))
        tight[acc] = dict(time=t, iters=res.n_iters, converged=res.converged, dtype=str(res.dtype).replace("torch.float", "f"))
    summary["tight"] = tight

    for kind in ("sinkhorn", "sinkhorn_log"):
        for backend in ("numpy64", "torch32"):
            run = make_pot(kind, backend, scores, a, b, eps)
            results = {t: time_to_target(run, ours[t]["iters"], t, a, b, repeats) for t in TARGETS}
            if results[1e-3]["plan"] is not None:
                with PeakMemory() as mem:
                    run(results[1e-3]["iters"])
                agree, peak = float((results[1e-3]["plan"].argmax(1) == ref_argmax).mean()), mem.mib
            else:
                agree, peak = math.nan, math.nan
            cells = [r["time"] * 1e3 if r["note"] == "" else r["note"] for r in (results[t] for t in TARGETS)]
            ratio = results[1e-3]["time"] / ours[1e-3]["time"]
            rows.append([f"POT {kind} ({backend})"] + cells + [results[1e-3]["iters"], agree, peak, ratio])
            summary[f"{kind}_{backend}"] = {t: results[t]["time"] for t in TARGETS}

    t_swav, q = median_time(lambda: swav_sinkhorn(scores, eps=eps, n_iters=3), repeats)
    q_plan = q.numpy() / n
    swav_err = marginal_error(q_plan, a, b)
    rows.append(["SwAV-style 3 iterations (f64)", f"{t_swav*1e3:.3g} (err {swav_err:.2g})", "–", "–", 3,
                 float((q_plan.argmax(1) == ref_argmax).mean()), math.nan, math.nan])

    # time per iteration (kernel mode, fixed iterations) against the bandwidth floor
    def fixed(it):
        return sinkhorn(scores, eps, b=b_t.float(), tol=None, max_iter=it, mode="kernel")

    t_lo, _ = median_time(lambda: fixed(5), repeats)
    t_hi, _ = median_time(lambda: fixed(45), repeats)
    per_iter = (t_hi - t_lo) / 40
    floor = 2 * n * k * 4 / (bandwidth * 1e9)
    summary["per_iter"], summary["floor"] = per_iter, floor

    # warm start after a slight perturbation
    first = otlearn_run(1e-3)
    noise = torch.randn(scores.shape, generator=torch.Generator().manual_seed(7)) * (eps / 100)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SinkhornConvergenceWarning)
        cold = sinkhorn(scores + noise, eps, b=b_t.float(), tol=1e-3, max_iter=100_000)
        warm = sinkhorn(scores + noise, eps, b=b_t.float(), tol=1e-3, max_iter=100_000, init_g=first.g)
    summary["cold"], summary["warm"] = cold.n_iters, warm.n_iters

    header = ["solver", "ms to 1e-2", "ms to 1e-3", "ms to 1e-4", "iters to 1e-3", "argmax agree", "peak MiB", "time ratio vs otlearn @1e-3"]
    text = f"### {spec['name']}, eps={eps}\n\n" + markdown_table(header, rows)
    text += (f"\n\nTo tol 1e-6: accelerated {tight['auto']['time']*1e3:.3g} ms ({tight['auto']['iters']} iterations, "
             f"{tight['auto']['dtype']}{'' if tight['auto']['converged'] else ', NOT converged'}), plain "
             f"{tight['none']['time']*1e3:.3g} ms ({tight['none']['iters']} iterations, {tight['none']['dtype']}"
             f"{'' if tight['none']['converged'] else ', NOT converged in 20,000'}): "
             f"{tight['none']['time'] / tight['auto']['time']:.1f}x less time.")
    text += (f"\notlearn time per iteration {per_iter*1e3:.3g} ms; floor (2 reads of {n}x{k} float32 at "
             f"{bandwidth:.1f} GB/s) {floor*1e3:.3g} ms; ratio {per_iter/floor:.2f}x. "
             f"Warm start: {warm.n_iters} iterations to 1e-3 vs {cold.n_iters} cold "
             f"({cold.n_iters / max(warm.n_iters, 1):.1f}x fewer).\n")
    return text, summary


def swav_rows(repeats: int) -> tuple[str, list[tuple[int, float]]]:
    """The SwAV-size table; returns (markdown, [(B, otlearn / plain time ratio)])."""
    rows, ratios = [], []
    for batch in (256, 4096):
        scores = gaussian_mixture_cosine(batch, 3000, 128, 11).float().contiguous()
        reference = swav_sinkhorn(scores.double(), eps=0.05, n_iters=3)

        def ours():
            return sinkhorn(scores, 0.05, tol=None, max_iter=3, return_plan=True).plan() * batch

        t_plain, plain = median_time(lambda: swav_sinkhorn(scores, eps=0.05, n_iters=3, dtype=torch.float32), max(repeats, 10))
        t_ours, codes = median_time(ours, max(repeats, 10))
        ratios.append((batch, t_ours / t_plain))
        rows.append([f"B={batch}, K=3000", t_plain * 1e3, t_ours * 1e3, t_ours / t_plain,
                     float((plain.double() - reference).abs().max()), float((codes.double() - reference).abs().max())])
    text = markdown_table(["problem (3 fixed iterations, ε=0.05)", "plain SwAV/lightly loop ms", "otlearn ms",
                           "otlearn / plain (target <= 1.3)", "plain max |code − f64|", "otlearn max |code − f64|"], rows)
    return "### SwAV-size codes\n\n" + text + "\n", ratios


def verdicts(summaries: list[dict]) -> str:
    lines = ["### Targets", "", "| problem | eps | iterations to 1e-3: plain → accelerated (cut, >= 2x) | vs POT sinkhorn_log (np64), >= 5x | vs POT sinkhorn (best backend), >= 1.5x | to 1e-6: plain / accelerated time | per-iteration / floor, <= 2x | warm-start iteration cut, >= 3x |", "|---|---|---|---|---|---|---|---|"]
    for s in summaries:
        t = 1e-3
        ours = s["otlearn"][t]
        log_ratio = s["sinkhorn_log_numpy64"][t] / ours
        kern = min(x for x in (s["sinkhorn_numpy64"][t], s["sinkhorn_torch32"][t]) if x == x) if any(
            x == x for x in (s["sinkhorn_numpy64"][t], s["sinkhorn_torch32"][t])) else math.nan
        tight = s["tight"]
        lines.append(f"| {s['name']} | {s['eps']} | {s['plain_iters']} → {s['iters']} ({s['plain_iters'] / s['iters']:.1f}x) | "
                     f"{log_ratio:.1f}x | {kern / ours:.2f}x | {tight['none']['time'] / tight['auto']['time']:.1f}x"
                     f"{'' if tight['none']['converged'] else ' (plain not converged)'} | "
                     f"{s['per_iter'] / s['floor']:.2f}x | {s['cold'] / max(s['warm'], 1):.1f}x |")
    return "\n".join(lines) + "\n(ratios > 1 mean otlearn is faster; NaN means the reference did not reach 1e-3 within the budget)\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small problems, 3 repeats: about a minute")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--only", default=None, help="run only the problems whose name starts with this, e.g. '(v)'")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "RESULTS.md"))
    args = parser.parse_args()
    torch.set_num_threads(2)
    repeats = args.repeats or (3 if args.quick else 5)
    bandwidth = read_bandwidth_gbs()
    parts, summaries = [], []
    t0 = time.time()
    for spec in problems(args.quick):
        if args.only and not spec["name"].startswith(args.only):
            continue
        for eps in spec["eps"]:
            text, summary = benchmark_problem(spec, eps, repeats, bandwidth)
            summary["name"] = spec["name"]
            print(text, flush=True)
            parts.append(text)
            summaries.append(summary)
    swav_text, _ = swav_rows(repeats) if not args.quick else ("", [])
    print(swav_text, flush=True)
    header = (f"Machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
              f"torch {torch.__version__}, POT {ot.__version__}; read bandwidth {bandwidth:.1f} GB/s; "
              f"median of {repeats} runs; total {time.time() - t0:.0f} s. "
              f"Command: `python benchmarks/sinkhorn.py{' --quick' if args.quick else ''}`.\n")
    body = header + "\n" + verdicts(summaries) + "\n" + swav_text + "\n" + "\n".join(parts)
    print(verdicts(summaries))
    section = "Sinkhorn solver (CPU, quick)" if args.quick else "Sinkhorn solver (CPU)"
    update_results(args.out, section, body)
    print(f"wrote {args.out} [{section}]")


if __name__ == "__main__":
    main()
