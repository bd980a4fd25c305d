"""T linear clustering heads over shared features (SeLa's multi-head, e.g. 10 x 3000)."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


class MultiHead(nn.Module):
    """``features (B, D) -> [logits (B, K_t) for t in heads]``.

    Args:
        in_dim: feature dimension D.
        num_clusters: K for every head (int, with ``num_heads``) or one K per head (list).
        num_heads: T when ``num_clusters`` is an int.
    """

    def __init__(self, in_dim: int, num_clusters: int | Sequence[int], num_heads: int = 1) -> None:
        super().__init__()
        ks = [int(num_clusters)] * num_heads if isinstance(num_clusters, int) else [int(k) for k in num_clusters]
        if not ks or min(ks) < 1:
            raise ValueError(f"num_clusters must be >= 1 for at least one head, got {num_clusters!r}")
        self.num_clusters = ks
        self.heads = nn.ModuleList(nn.Linear(in_dim, k) for k in ks)

    def forward(self, features: torch.Tensor) -> list[torch.Tensor]:
        return [head(features) for head in self.heads]
