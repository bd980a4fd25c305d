"""Anderson acceleration: fewer iterations, the same solution, a dual objective that never decreases."""
import warnings

import numpy as np
import pytest
import torch

from otlearn.data.scores import confident_network as confident_scores
from otlearn.ot import SinkhornConvergenceWarning, sinkhorn


def confident_network(seed: int, n: int = 2000, k: int = 50) -> torch.Tensor:
    return confident_scores(n, k, seed).double()


def semi_dual(scores: torch.Tensor, g: torch.Tensor, eps: float) -> float:
    """D(g) = Σ_i a_i f_i(g) + Σ_k b_k g_k with the exact row update f(g), uniform masses, float64."""
    n, k = scores.shape
    f = eps * (np.log(1.0 / n) - torch.logsumexp((scores + g) / eps, dim=1))
    return float(f.mean() + g.mean())


@pytest.mark.parametrize("seed", range(2))
@pytest.mark.parametrize("mode", ["kernel", "log"])
def test_fewer_iterations_same_solution(seed, mode):
    scores = confident_network(seed)
    plain = sinkhorn(scores, 0.1, tol=1e-4, max_iter=50_000, dtype=torch.float64, mode=mode, acceleration="none")
    fast = sinkhorn(scores, 0.1, tol=1e-4, max_iter=50_000, dtype=torch.float64, mode=mode)
    assert plain.converged and fast.converged and fast.acceleration == "anderson"
    assert fast.n_iters * 4 <= plain.n_iters, (fast.n_iters, plain.n_iters)
    # both plans are within tolerance of the same solution; on this ill-conditioned problem a column error
    # of 1e-4 still leaves entries (each ≤ 1/N) about 0.2% apart
    torch.testing.assert_close(fast.plan(), plain.plan(), rtol=0, atol=4e-3 / scores.shape[0])
    assert (fast.assignments() == plain.assignments()).float().mean() > 0.99


@pytest.mark.parametrize("seed", range(2))
def test_safeguard_keeps_the_dual_objective_monotone(seed):
    """On a peaked problem some extrapolated steps overshoot (the safeguard rejects them); the accepted
    iterates, replayed by prefix (the solver is deterministic), never decrease the dual objective."""
    scores = confident_network(10 + seed, n=600, k=30)
    eps = 0.1
    values, rejected = [], 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SinkhornConvergenceWarning)
        for t in range(1, 80):
            result = sinkhorn(scores, eps, tol=1e-14, max_iter=t, dtype=torch.float64, mode="kernel", eps_scaling=None)
            values.append(semi_dual(scores, result.g, eps))
            rejected = result.n_rejected
    steps = np.diff(values)
    assert rejected > 0, "no step was rejected: this problem does not exercise the safeguard"
    assert steps.min() >= -1e-12 * abs(values[-1]), steps.min()
    assert values[-1] > values[0]


def test_fallback_after_rejection_is_the_plain_step():
    """A rejection leaves the iterate unchanged and the next step is plain: the error never jumps up by
    more than the plain step could move it, and the final plan converges."""
    scores = confident_network(3, n=1500, k=40)
    result = sinkhorn(scores, 0.1, tol=1e-6, max_iter=5000, dtype=torch.float64, eps_scaling=None)
    assert result.converged and result.n_rejected > 0
    assert result.n_rejected < result.n_iters / 3  # most extrapolations are kept
    assert torch.isfinite(result.plan()).all()


def test_fixed_mode_defaults_to_the_plain_iteration():
    """tol=None reproduces SwAV/OptVQ's fixed iterations unless acceleration is asked for."""
    scores = confident_network(4, n=300, k=20)
    plain = sinkhorn(scores, 0.1, tol=None, max_iter=150, acceleration="none", dtype=torch.float64)
    default = sinkhorn(scores, 0.1, tol=None, max_iter=150, dtype=torch.float64)
    fast = sinkhorn(scores, 0.1, tol=None, max_iter=150, acceleration="anderson", dtype=torch.float64)
    assert default.acceleration == "none" and torch.equal(default.g, plain.g)
    assert fast.acceleration == "anderson" and fast.error < plain.error / 100


def test_bad_acceleration_options_raise():
    from otlearn.ot import SinkhornSolver

    with pytest.raises(ValueError, match="acceleration must be"):
        SinkhornSolver(acceleration="nesterov")
    with pytest.raises(ValueError, match="memory must be"):
        SinkhornSolver(memory=0)
    with pytest.raises(ValueError, match="mixing must be"):
        SinkhornSolver(mixing=2.5)
