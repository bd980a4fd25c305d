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
