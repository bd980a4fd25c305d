"""otlearn's plans against independent references: POT in float64 and scipy's exact assignment."""
import numpy as np
import ot
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from otlearn.ot import sinkhorn

from .conftest import plan_from_potentials, random_problem


@pytest.mark.parametrize("mode", ["log", "kernel"])
@pytest.mark.parametrize(
    "seed,n,k,eps,kind",
    [(0, 200, 30, 0.1, "gauss"), (1, 97, 13, 0.05, "cosine"), (2, 300, 50, 0.2, "logprob"), (3, 64, 64, 0.5, "gauss")],
)
def test_plan_matches_pot_float64(mode, seed, n, k, eps, kind):
    scores, a, b = random_problem(seed, n, k, kind=kind)
    result = sinkhorn(scores, eps, a=a, b=b, tol=1e-11, max_iter=200_000, dtype=torch.float64, mode=mode)
    assert result.converged
    reference = ot.bregman.sinkhorn_log(a.numpy(), b.numpy(), -scores.numpy(), eps, stopThr=1e-13, numItermax=500_000)
    plan = plan_from_potentials(result, scores, eps).numpy()  # from f and g: rows are checked, not constructed
    rel = np.abs(plan - reference).max() / reference.max()
    assert rel < 1e-5, f"max relative deviation from POT {rel:.2e}"
    np.testing.assert_allclose(plan.sum(1), a.numpy(), rtol=1e-9)
    np.testing.assert_allclose(plan.sum(0), b.numpy(), rtol=1e-9)
    np.testing.assert_allclose(result.plan().numpy(), plan, rtol=1e-9, atol=1e-15)


@pytest.mark.parametrize("mode", ["log", "kernel"])
def test_float32_plan_close_to_pot(mode):
    scores, a, b = random_problem(7, 500, 40, kind="cosine")
    result = sinkhorn(scores.float(), 0.05, a=a.float(), b=b.float(), tol=1e-5, max_iter=20_000, mode=mode)
    reference = ot.bregman.sinkhorn_log(a.numpy(), b.numpy(), -scores.numpy(), 0.05, stopThr=1e-13, numItermax=100_000)
    rel = np.abs(result.plan().double().numpy() - reference).max() / reference.max()
    assert result.converged and rel < 1e-3, rel


@pytest.mark.parametrize("seed", range(4))
def test_small_eps_recovers_hungarian_permutation(seed):
    n = 25 + 5 * seed
    g = torch.Generator().manual_seed(100 + seed)
    scores = torch.randn(n, n, generator=g, dtype=torch.float64)
    _, perm = linear_sum_assignment(-scores.numpy())
    result = sinkhorn(scores, 1e-2, tol=1e-4, max_iter=50_000, dtype=torch.float64, eps_scaling=0.5)
    np.testing.assert_array_equal(result.assignments().numpy(), perm)
    np.testing.assert_array_equal(result.balanced_assignments().numpy(), perm)


def test_balanced_assignments_are_optimal_on_small_lp():
    """Exactly balanced labels at small ε solve the integer transport LP (N = 3K, equal sizes)."""
    from scipy.optimize import linprog

    g = torch.Generator().manual_seed(11)
    n, k = 24, 8
    scores = torch.randn(n, k, generator=g, dtype=torch.float64)
    result = sinkhorn(scores, 1e-2, tol=1e-4, max_iter=50_000, dtype=torch.float64, eps_scaling=0.5)
    labels = result.balanced_assignments().numpy()
    assert np.bincount(labels, minlength=k).tolist() == [3] * k
    # LP: maximise sum S_ik x_ik, rows sum 1, columns sum 3, 0 <= x <= 1 (totally unimodular)
    rows = np.kron(np.eye(n), np.ones(k))
    cols = np.kron(np.ones(n), np.eye(k))
    lp = linprog(-scores.numpy().ravel(), A_eq=np.vstack([rows, cols]), b_eq=np.r_[np.ones(n), 3 * np.ones(k)], bounds=(0, 1))
    ours = scores.numpy()[np.arange(n), labels].sum()
    assert ours == pytest.approx(-lp.fun, abs=1e-9)
