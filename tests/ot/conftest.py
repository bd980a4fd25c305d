import numpy as np
import pytest
import torch


def random_problem(seed: int, n: int, k: int, *, kind: str = "gauss", dtype=torch.float64):
    """Seeded random scores (n, k) and non-uniform masses a (n,), b (k,)."""
    g = torch.Generator().manual_seed(seed)
    if kind == "gauss":
        scores = torch.randn(n, k, generator=g, dtype=dtype)
    elif kind == "logprob":
        scores = torch.log_softmax(3 * torch.randn(n, k, generator=g, dtype=dtype), dim=1)
    elif kind == "cosine":
        x = torch.nn.functional.normalize(torch.randn(n, 16, generator=g, dtype=dtype), dim=1)
        c = torch.nn.functional.normalize(torch.randn(k, 16, generator=g, dtype=dtype), dim=1)
        scores = x @ c.T
    else:
        raise ValueError(kind)
    a = torch.rand(n, generator=g, dtype=dtype) + 0.1
    b = torch.rand(k, generator=g, dtype=dtype) + 0.1
    return scores, a / a.sum(), b / b.sum()


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def plan_from_potentials(result, scores: torch.Tensor, eps: float) -> torch.Tensor:
    """(n, K) float64 plan ``exp((S_ik + f_i + g_k)/ε)`` built from the result's potentials alone — not
    :meth:`SinkhornResult.plan`, whose rows are ``a_i softmax(...)`` and so exact by construction."""
    s = scores.double()
    return torch.exp((s + result.f.double()[:, None] + result.g.double()[None, :]) / eps)
