"""Low-precision inputs and autocast, checked against float64 references that do not share the solver.

* half and bfloat16 scores: the plan rebuilt in float64 from the returned potentials equals POT's
  float64 log-domain plan of the same (half-rounded) scores;
* under ``torch.autocast`` no product of the solver runs with autocast on, and its plan meets the
  marginals to the tolerance in float64 (16-bit products would leave an error floor near 4e-3);
* scores far beyond float32's resolution at a tiny ε: the defaults' plan has the exact LP optimum's
  value (scipy's HiGHS);
* the dtype options and ``dtype="auto"``'s choice.
"""
import warnings

import numpy as np
import ot
import pytest
import torch
from scipy.optimize import linprog

from otlearn.ot import SinkhornConvergenceWarning, sinkhorn

from tests._modes import AutocastSpy

from .conftest import random_problem


def _plan64(result, scores: torch.Tensor, eps: float) -> np.ndarray:
    """The plan ``exp((S + f + g)/ε)`` built independently in float64 from the result's potentials."""
    s = scores.double()
    return torch.exp((s + result.f.double()[:, None] + result.g.double()[None, :]) / eps).numpy()


def _pot64(scores: torch.Tensor, eps: float, a=None, b=None) -> np.ndarray:
    n, k = scores.shape
    a = np.full(n, 1.0 / n) if a is None else a
    b = np.full(k, 1.0 / k) if b is None else b
    return ot.sinkhorn(a, b, -scores.double().numpy(), eps, method="sinkhorn_log", stopThr=1e-11, numItermax=20_000)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("mode", ["log", "kernel"])
@pytest.mark.parametrize("seed", range(3))
def test_half_scores_match_pot_float64_on_the_same_values(dtype, mode, seed):
    scores, _, _ = random_problem(seed, 240, 16, kind="logprob", dtype=torch.float32)
    half = scores.to(dtype)
    result = sinkhorn(half, 0.1, tol=1e-7, max_iter=20_000, mode=mode)
    reference = _pot64(half, 0.1)
    plan = _plan64(result, half, 0.1)
    assert result.converged
    assert np.abs(plan - reference).sum() < 1e-5, np.abs(plan - reference).sum()  # L1 over a plan of mass 1
    np.testing.assert_allclose(plan.sum(1), 1 / 240, rtol=1e-5)
    np.testing.assert_allclose(plan.sum(0), 1 / 16, rtol=1e-5)
    clear = np.sort(reference, 1)[:, -1] > 1.01 * np.sort(reference, 1)[:, -2]  # rows without a near-tie
    assert np.array_equal(result.assignments().numpy()[clear], reference.argmax(1)[clear])


@pytest.mark.parametrize("mode", ["log", "kernel"])
@pytest.mark.parametrize("autocast_dtype", [torch.bfloat16, torch.float16])
def test_under_autocast_the_plan_meets_the_marginals_in_float64(mode, autocast_dtype):
    scores, a, b = random_problem(7, 300, 30, kind="logprob", dtype=torch.float32)
    with torch.autocast("cpu", dtype=autocast_dtype), AutocastSpy() as spy:
        result = sinkhorn(scores, 0.2, a=a.float(), b=b.float(), tol=1e-5, max_iter=20_000, mode=mode,
                          dtype=torch.float32)
    # CPU autocast leaves mv/addmv alone, so the products' precision is checked where CUDA's autocast would act
    assert spy.calls and spy.under_autocast == [], spy.under_autocast
    plan = _plan64(result, scores, 0.2)
    assert result.converged and result.g.dtype == torch.float32
    column_error = np.abs(plan.sum(0) / b.numpy() - 1).max()
    assert column_error < 2e-5, column_error  # 16-bit products would leave ~4e-3
    reference = _pot64(scores, 0.2, a.numpy(), b.numpy())
    assert np.abs(plan - reference).sum() < 1e-4


@pytest.mark.parametrize("seed", range(3))
def test_half_scores_far_beyond_float32_reach_the_lp_optimum_by_default(seed):
    """bfloat16 scores of magnitude 1e4 at ε = 1e-3 (|S|/ε = 1e7, float32's resolution): the defaults
    (float64, ε-scaling) converge, and the value ``<P, S>`` of the plan rebuilt in float64 is within
    1e-5 of the exact LP optimum (the entropic gap is at most ε log(NK) ≈ 0.008 per unit mass)."""
    g = torch.Generator().manual_seed(seed)
    scores = ((torch.rand(120, 30, generator=g) * 2 - 1) * 1e4).to(torch.bfloat16)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SinkhornConvergenceWarning)
        result = sinkhorn(scores, 1e-3)
    assert result.dtype == torch.float64 and len(result.stages) > 1 and result.converged
    s = scores.double().numpy()
    plan = _plan64(result, scores, 1e-3)
    n, k = s.shape
    rows = np.kron(np.eye(n), np.ones(k))  # Σ_k P_ik = 1/n
    cols = np.kron(np.ones(n), np.eye(k))  # Σ_i P_ik = 1/k
    lp = linprog(-s.reshape(-1), A_eq=np.vstack([rows, cols]), b_eq=np.concatenate([np.full(n, 1 / n), np.full(k, 1 / k)]),
                 bounds=(0, None), method="highs")
    assert lp.status == 0
    best, ours = -lp.fun, float((plan * s).sum())
    assert abs(best - ours) <= 1e-5 * abs(best), (best, ours)


def test_float64_option_and_output_dtype():
    scores = torch.randn(50, 7, generator=torch.Generator().manual_seed(0)).half()
    r64 = sinkhorn(scores, 0.1, dtype=torch.float64, tol=1e-9, max_iter=10_000)
    r32 = sinkhorn(scores, 0.1)
    assert r64.g.dtype == torch.float64 and r32.g.dtype == torch.float32
    assert r32.plan().dtype == torch.float32 and r64.plan().dtype == torch.float64
    np.testing.assert_allclose(_plan64(r64, scores, 0.1), _pot64(scores, 0.1), atol=1e-10)


@pytest.mark.parametrize("seed", range(2))
@pytest.mark.parametrize("mode", ["kernel", "log"])
def test_defaults_solve_bfloat16_scores_far_beyond_float32(seed, mode):
    """bfloat16 scores up to 3e4 at ε = 1e-3 (|S|/ε = 3e7 > 2^24): the defaults pick float64 and ε-scaling,
    and the plan rebuilt in float64 meets the column marginal to tol."""
    g = torch.Generator().manual_seed(100 + seed)
    scores = ((torch.rand(500, 40, generator=g) * 2 - 1) * 3e4).to(torch.bfloat16)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SinkhornConvergenceWarning)  # no warning may be raised
        result = sinkhorn(scores, 1e-3, tol=1e-3, mode=mode)
    assert result.dtype == torch.float64 and result.stages[-1] == 1e-3
    assert all(b < a for a, b in zip(result.stages, result.stages[1:]))
    plan = _plan64(result, scores, 1e-3)
    # rows: exact up to rebuilding exp((S + f + g)/ε) at |S|/ε = 3e7 in float64 (≈ 3e7 · 2^-53 per entry)
    assert np.abs(plan.sum(0) * 40 - 1).max() <= 1e-3 and np.abs(plan.sum(1) * 500 - 1).max() <= 1e-6
    counts = torch.bincount(result.balanced_assignments(), minlength=40)
    assert sorted(counts.tolist()) == [12] * 20 + [13] * 20


def test_auto_dtype_keeps_float32_when_it_resolves_the_tolerance():
    g = torch.Generator().manual_seed(3)
    scores = torch.log_softmax(3 * torch.randn(300, 20, generator=g), dim=1)  # |S| ~ 15, ε = 0.1
    assert sinkhorn(scores, 0.1, tol=1e-3).dtype == torch.float32
    assert sinkhorn(scores, 0.1, tol=1e-7).dtype == torch.float64  # 2^-24 · |S|/ε > tol/10
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SinkhornConvergenceWarning)
        assert sinkhorn(scores, 0.1, tol=1e-7, dtype=torch.float32, max_iter=20).dtype == torch.float32
