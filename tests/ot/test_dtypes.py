"""Low-precision inputs: computation in float32 or float64 whatever the input dtype, never NaN; dtype="auto"
and eps_scaling="auto" solve scores far beyond float32's resolution by default."""
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
    # forced float32: |S| / ε = 1e7 is at float32's resolution (2^24): the error stalls above tol, with a warning
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SinkhornConvergenceWarning)
        result = sinkhorn(scores, 1e-3, eps_scaling=0.5, max_iter=300, dtype=torch.float32)
        reference = sinkhorn(scores.float(), 1e-3, eps_scaling=0.5, max_iter=300, dtype=torch.float32)
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
    with pytest.warns(SinkhornConvergenceWarning, match="error .* > tol"):
        result = sinkhorn(scores, 1e-3, max_iter=50, mode=mode, eps_scaling=None, dtype=torch.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SinkhornConvergenceWarning)
        reference = sinkhorn(scores.float(), 1e-3, max_iter=50, mode=mode, eps_scaling=None, dtype=torch.float32)
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


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("mode", ["kernel", "log"])
def test_defaults_solve_bfloat16_scores_far_beyond_float32(seed, mode):
    """bfloat16 scores up to 3e4 at ε = 1e-3 (|S|/ε = 3e7 > 2^24): the defaults pick float64 and ε-scaling."""
    g = torch.Generator().manual_seed(100 + seed)
    scores = ((torch.rand(500, 40, generator=g) * 2 - 1) * 3e4).to(torch.bfloat16)
    assert scores.abs().max() > 2.9e4
    with warnings.catch_warnings():
        warnings.simplefilter("error", SinkhornConvergenceWarning)  # no warning may be raised
        result = sinkhorn(scores, 1e-3, tol=1e-3, mode=mode)
    assert result.dtype == torch.float64 and result.g.dtype == torch.float64
    assert len(result.stages) > 1 and result.stages[-1] == 1e-3
    assert all(b < a for a, b in zip(result.stages, result.stages[1:]))
    assert result.converged and result.error <= 1e-3
    plan = result.plan()
    assert torch.isfinite(plan).all() and torch.isfinite(result.g).all() and torch.isfinite(result.f).all()
    counts = torch.bincount(result.balanced_assignments(), minlength=40)
    assert counts.tolist() == [13] * 20 + [12] * 20 or sorted(counts.tolist()) == [12] * 20 + [13] * 20


def test_auto_dtype_keeps_float32_when_it_resolves_the_tolerance():
    g = torch.Generator().manual_seed(3)
    scores = torch.log_softmax(3 * torch.randn(300, 20, generator=g), dim=1)  # |S| ~ 15, ε = 0.1
    assert sinkhorn(scores, 0.1, tol=1e-3).dtype == torch.float32
    assert sinkhorn(scores, 0.1, tol=1e-7).dtype == torch.float64  # 2^-24 · |S|/ε > tol/10
    assert sinkhorn(scores, 0.1, tol=1e-7, dtype=torch.float32, max_iter=20).dtype == torch.float32
