"""Low-precision inputs: computation in float32 whatever the dtype, never NaN."""
import warnings

import pytest
import torch

from otlearn.ot import SinkhornConvergenceWarning, sinkhorn


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("seed", range(3))
def test_half_scores_large_magnitude_small_eps(dtype, seed):
    g = torch.Generator().manual_seed(seed)
    scores = ((torch.rand(150, 40, generator=g) * 2 - 1) * 1e4).to(dtype)
    assert scores.abs().max() > 9e3
    # |S| / ε = 1e7 is at float32's resolution (2^24): the error stalls above tol, with a warning
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SinkhornConvergenceWarning)
        result = sinkhorn(scores, 1e-3, eps_scaling=0.5, max_iter=300)
        reference = sinkhorn(scores.float(), 1e-3, eps_scaling=0.5, max_iter=300)
    plan = result.plan()
    assert not torch.isnan(plan).any() and not torch.isnan(result.f).any() and not torch.isnan(result.g).any()
    assert torch.allclose(plan.sum(1), torch.full((150,), 1 / 150), rtol=1e-3)  # rows still exact
    assert torch.equal(result.g, reference.g) and torch.equal(result.f, reference.f)
    assert torch.equal(result.assignments(), reference.assignments())
    assert torch.equal(result.balanced_assignments(), reference.balanced_assignments())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("mode", ["log", "kernel"])
def test_half_scores_without_eps_scaling_warn_but_stay_finite(dtype, mode):
    g = torch.Generator().manual_seed(5)
    scores = ((torch.rand(100, 30, generator=g) * 2 - 1) * 1e4).to(dtype)
    with pytest.warns(SinkhornConvergenceWarning, match="column-marginal error"):
        result = sinkhorn(scores, 1e-3, max_iter=50, mode=mode)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SinkhornConvergenceWarning)
        reference = sinkhorn(scores.float(), 1e-3, max_iter=50, mode=mode)
    assert not result.converged
    assert torch.isfinite(result.g).all() and torch.isfinite(result.f).all()
    assert not torch.isnan(result.plan()).any()
    assert torch.equal(result.g, reference.g)


def test_half_scores_converge_in_float64_compute():
    g = torch.Generator().manual_seed(9)
    scores = ((torch.rand(150, 40, generator=g) * 2 - 1) * 1e4).to(torch.bfloat16)
    result = sinkhorn(scores, 5.0, eps_scaling=0.5, max_iter=5000, dtype=torch.float64)
    assert result.converged and result.error <= 1e-3
    assert torch.isfinite(result.plan()).all()


def test_float64_option_and_output_dtype():
    scores = torch.randn(50, 7, generator=torch.Generator().manual_seed(0)).half()
    r64 = sinkhorn(scores, 0.1, dtype=torch.float64)
    r32 = sinkhorn(scores, 0.1)
    assert r64.g.dtype == torch.float64 and r32.g.dtype == torch.float32
    assert r32.plan().dtype == torch.float32
    assert torch.allclose(r64.plan().float(), r32.plan(), atol=1e-6)
