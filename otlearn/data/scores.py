"""Synthetic score matrices with fixed seeds, shared by the tests and the benchmarks."""
from __future__ import annotations

import torch


def confident_network(n: int, k: int, seed: int) -> torch.Tensor:
    """(n, k) float32 log-probabilities of a confident network late in SeLa training: ``log_softmax`` of
    standard normal logits with +8 on one class per row, classes drawn with Dirichlet(2) shares (clusters of
    unequal size under an equal-size constraint: the slow case for plain Sinkhorn)."""
    g = torch.Generator().manual_seed(seed)
    shares = -torch.log(torch.rand(2, k, generator=g, dtype=torch.float64)).sum(0)  # Gamma(2) draws
    shares = (shares / shares.sum()).float()  # a Dirichlet(2), from the seeded generator
    classes = torch.multinomial(shares, n, replacement=True, generator=g)
    logits = torch.randn(n, k, generator=g)
    logits[torch.arange(n), classes] += 8.0
    return torch.log_softmax(logits, dim=1)
