"""otlearn in fixed-iteration mode reproduces SwAV's codes and SeLa's labels."""
import numpy as np
import pytest
import torch

from otlearn.ot import sinkhorn
from otlearn.testing.anchors import sela_sinkhorn_knopp, swav_sinkhorn

from tests.ot.conftest import random_problem


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("mode", ["log", "kernel"])
def test_reproduces_swav_codes(seed, mode):
    batch, k = 64 + 16 * seed, 10 + 7 * seed
    scores, _, _ = random_problem(seed, batch, k, kind="cosine")
    codes = swav_sinkhorn(scores, eps=0.05, n_iters=3)
    result = sinkhorn(scores, 0.05, tol=None, max_iter=3, dtype=torch.float64, mode=mode)
    assert result.n_iters == 3 and not result.converged
    ours = result.plan() * batch  # SwAV's Q rows sum to 1
    np.testing.assert_allclose(ours.numpy(), codes.numpy(), rtol=1e-10, atol=1e-14)
    np.testing.assert_array_equal(ours.argmax(1).numpy(), codes.argmax(1).numpy())


def test_swav_float32_scores_without_overflow():
    """SwAV's kernel-mode exp overflows float16 at cosine > 0.555 (ε = 0.05); ours does not."""
    scores, _, _ = random_problem(3, 128, 20, kind="cosine")
    scores = (scores * 1.8).clamp(-1, 1).half()  # many cosines above 0.555
    assert torch.isinf(torch.exp(scores / 0.05)).any()  # the naive kernel overflows
    result = sinkhorn(scores, 0.05, tol=None, max_iter=3)
    ours = result.plan().double() * 128
    codes = swav_sinkhorn(scores.double(), eps=0.05, n_iters=3)
    assert torch.isfinite(ours).all()
    np.testing.assert_allclose(ours.numpy(), codes.numpy(), atol=1e-5)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("lam", [10.0, 25.0])
def test_reproduces_sela_labels(seed, lam):
    n, k = 300 + 50 * seed, 10 + seed
    log_probs, _, _ = random_problem(seed, n, k, kind="logprob")
    labels, log_r, iters = sela_sinkhorn_knopp(log_probs.numpy(), lam=lam, tol=0.01)
    result = sinkhorn(log_probs, 1.0 / lam, tol=None, max_iter=iters, dtype=torch.float64)
    np.testing.assert_array_equal(result.assignments().numpy(), labels)
    # same cluster potentials up to a constant: g = ε log r + const
    diff = result.g.numpy() - log_r / lam
    assert np.ptp(diff) < 1e-8
