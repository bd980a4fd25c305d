"""Property tests on fresh random problems: marginals and exact balanced counts."""
import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from otlearn.ot import integer_targets, sinkhorn

from .conftest import plan_from_potentials


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    n=st.integers(1, 80),
    k=st.integers(1, 25),
    eps=st.floats(0.03, 3.0),
    scale=st.floats(0.1, 20.0),
    mode=st.sampled_from(["log", "kernel"]),
    uniform=st.booleans(),
)
def test_marginals_within_tol(seed, n, k, eps, scale, mode, uniform):
    g = torch.Generator().manual_seed(seed)
    scores = scale * torch.randn(n, k, generator=g)
    a = None if uniform else torch.rand(n, generator=g) + 0.05
    b = None if uniform else torch.rand(k, generator=g) + 0.05
    tol = 1e-3
    result = sinkhorn(scores, eps, a=a, b=b, tol=tol, max_iter=100_000, mode=mode, dtype=torch.float64)
    assert result.converged
    plan = plan_from_potentials(result, scores, eps)  # from f and g, so rows are checked, not constructed
    assert torch.allclose(plan.float(), result.plan().float(), rtol=1e-5, atol=1e-12)
    a_ref = torch.full((n,), 1.0 / n, dtype=torch.float64) if a is None else a.double() / a.double().sum()
    b_ref = torch.full((k,), 1.0 / k, dtype=torch.float64) if b is None else b.double() / b.double().sum()
    assert torch.allclose(plan.sum(1), a_ref, rtol=1e-8, atol=0)  # f is the exact row update of g
    col_err = (plan.sum(0) / b_ref - 1).abs().max().item()
    assert col_err <= tol * (1 + 1e-7)
    assert abs(col_err - result.error) < 1e-7  # the reported error is the real one


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    n=st.integers(1, 200),
    k=st.integers(1, 30),
    eps=st.floats(0.01, 2.0),
    skew=st.booleans(),
)
def test_balanced_assignment_counts_exact(seed, n, k, eps, skew):
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(n, k, generator=g) * 3
    b = torch.rand(k, generator=g) ** 3 + 1e-3 if skew else None
    result = sinkhorn(scores, eps, b=b, tol=1e-2, max_iter=200, mode="log")
    labels = result.balanced_assignments()
    b_ref = torch.full((k,), 1.0 / k) if b is None else b
    targets = integer_targets(b_ref, n)
    assert int(targets.sum()) == n
    assert torch.equal(torch.bincount(labels, minlength=k), targets)
    # targets are round(N b_k) up to the unit adjustment that makes them sum to N
    exact = (b_ref.double() / b_ref.double().sum() * n).numpy()
    assert np.all(np.abs(targets.numpy() - exact) < 1.0)
