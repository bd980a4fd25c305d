"""Relaxed column marginals: ``max <P, S> + ε H(P) − ρ KL(P^T 1 ‖ b)`` with exact rows (``b_penalty = ρ``)."""
import math
import warnings

import numpy as np
import ot
import pytest
import torch

from otlearn.ot import AssignmentProblem, SinkhornSolver, sinkhorn
from tests._dist import run_workers

from ._workers import solve_shard
from .conftest import random_problem


def pot_semi_relaxed(scores, a, b, eps, rho):
    """POT's unbalanced Sinkhorn in float64 with an infinite row penalty (exact rows) and entropy H(P)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # POT warns that reg_type="entropy" ignores c
        return ot.unbalanced.sinkhorn_unbalanced(
            a.numpy(), b.numpy(), -scores.numpy(), eps, (math.inf, rho), reg_type="entropy",
            numItermax=200_000, stopThr=1e-15,
        )


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("rho", [0.05, 1.0, 20.0])
@pytest.mark.parametrize("mode,acceleration", [("kernel", "anderson"), ("log", "anderson"), ("kernel", "none")])
def test_relaxed_plan_equals_pot_unbalanced(seed, rho, mode, acceleration):
    scores, a, b = random_problem(seed, 60, 9, kind="gauss")
    eps = 0.5
    a, b = a / a.sum(), b / b.sum()
    reference = pot_semi_relaxed(scores, a, b, eps, rho)
    result = sinkhorn(scores, eps, a=a, b=b, b_penalty=rho, tol=1e-11, max_iter=20_000, dtype=torch.float64,
                      mode=mode, acceleration=acceleration)
    assert result.converged
    plan = result.plan().numpy()
    np.testing.assert_allclose(plan, reference, rtol=1e-6, atol=1e-6 * reference.max())
    np.testing.assert_allclose(plan.sum(1), a.numpy(), rtol=1e-10)  # rows stay exact
    # optimality: g = −ρ log(c / b) up to a constant
    cols = plan.sum(0)
    shifted = result.g.numpy() + rho * np.log(cols / b.numpy())
    assert np.ptp(shifted) < 1e-6 * max(1.0, rho)


@pytest.mark.parametrize("seed", range(2))
def test_large_rho_recovers_the_balanced_plan(seed):
    scores, a, b = random_problem(10 + seed, 80, 7, kind="logprob")
    hard = sinkhorn(scores, 0.1, a=a, b=b, tol=1e-10, max_iter=20_000, dtype=torch.float64)
    gaps = []
    for rho in (1e2, 1e4, 1e6):
        relaxed = sinkhorn(scores, 0.1, a=a, b=b, b_penalty=rho, tol=1e-10, max_iter=20_000, dtype=torch.float64)
        gaps.append(float((relaxed.plan() - hard.plan()).abs().max()))
    # the gap shrinks like 1/ρ: a factor 100 per step of ρ
    assert all(50 < big / small < 200 for big, small in zip(gaps, gaps[1:])) and gaps[2] < 1e-6, gaps
    assert sinkhorn(scores, 0.1, a=a, b=b, b_penalty=math.inf, tol=1e-6).problem.b_penalty is None


def test_small_rho_follows_the_scores():
    """ρ → 0: the columns stop constraining, each row goes to its own softmax (cluster sizes follow the data)."""
    scores, _, _ = random_problem(4, 200, 6, kind="logprob")
    scores[:, 0] += 2.0  # column 0 is preferred
    relaxed = sinkhorn(scores, 0.1, b_penalty=1e-4, tol=1e-9, max_iter=20_000, dtype=torch.float64)
    free = torch.softmax(scores / 0.1, dim=1) / 200
    torch.testing.assert_close(relaxed.plan(), free, atol=1e-5, rtol=0)
    counts = torch.bincount(relaxed.assignments(), minlength=6)
    assert counts[0] > 1.5 * 200 / 6  # far from balanced (the hard marginal gives 33 or 34)
    assert torch.equal(relaxed.assignments(), scores.argmax(1))


@pytest.mark.parametrize("world_size,sizes,mode", [(2, [41, 0], "kernel"), (3, [13, 30, 22], "log"), (3, [20, 0, 31], "kernel")])
def test_relaxed_distributed_equals_single_process(world_size, sizes, mode):
    scores, a, b = random_problem(70 + world_size, sum(sizes), 8, kind="logprob")
    shared = dict(eps=0.1, tol=1e-9, max_iter=20_000, dtype=torch.float64, mode=mode, b_penalty=0.3)
    single = sinkhorn(scores, a=a, b=b, **shared)
    outs = run_workers(solve_shard, world_size, scores, a, b, sizes, dict(shared))
    assert len({o["n_iters"] for o in outs}) == 1  # every rank took the same host decisions
    for o in outs:
        assert o["converged"]
        np.testing.assert_allclose(o["g"], single.g.numpy(), rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(np.concatenate([o["plan"] for o in outs]), single.plan().numpy(), rtol=1e-7, atol=1e-15)
    np.testing.assert_array_equal(np.concatenate([o["labels"] for o in outs]), single.assignments().numpy())


@pytest.mark.parametrize("rho", [0.0, -1.0, math.nan, "1"])
def test_bad_b_penalty_raises(rho):
    with pytest.raises(ValueError, match="b_penalty must be a number > 0"):
        sinkhorn(torch.randn(5, 3), 0.1, b_penalty=rho)


def test_relaxed_error_is_against_the_targets_of_g():
    scores, _, b = random_problem(5, 90, 5, kind="gauss")
    result = sinkhorn(scores, 0.3, b=b, b_penalty=0.5, tol=1e-8, max_iter=5000, dtype=torch.float64)
    g = result.g
    targets = b / b.sum() * torch.exp(-g / 0.5)
    targets = targets / targets.sum()
    cols = result.plan().sum(0)
    assert float((cols / targets - 1).abs().max()) <= 1e-8 and result.error <= 1e-8
