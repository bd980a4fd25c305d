"""Neighbourhood smoothing of the label pass's predictions over a fixed k-nearest-neighbour graph.

Math. With ``A`` the (N, N) 0/1 adjacency of a k-nearest-neighbour graph made symmetric
(``A_ij = 1`` when j is among i's k neighbours or i among j's) and ``W = D⁻¹ A`` its row-normalised
form, the predictions ``P`` (N, K) of one head are replaced before the label solve by

    P̃⁽⁰⁾ = P,    P̃⁽ᵗ⁺¹⁾ = (1 − α) P + α W P̃⁽ᵗ⁾,    t < steps

(personalised-PageRank propagation: the limit is ``(1 − α)(I − αW)⁻¹ P``). Each row stays a
probability vector; the label solve then uses ``log P̃`` as its scores (cost ``−log P̃``, ε = 1/λ).
The graph is fixed (built once, e.g. from the raw inputs or from any other embedding), so it
couples the labels of samples that are close in that space: a partition that cuts through a
dense neighbourhood of the graph costs more than one that follows it.

Distributed: every rank holds the whole (N, K) probability matrix of a head for the propagation
(one all-gather of the label pass's rows per head), so it is meant for datasets where N·K fits in
each process's memory. Every rank computes the same ``P̃`` and keeps its own rows, so W processes
give the labels of one.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F


def knn_graph(features: torch.Tensor, k: int, chunk_size: int = 2048) -> torch.Tensor:
    """(N, k) int64 indices of each row's k nearest other rows by cosine similarity.

    Args:
        features: (N, D) one row per sample (flattened inputs or an embedding); rows are L2-normalised.
        k: neighbours per sample, 1 <= k < N (the sample itself is excluded).
        chunk_size: rows of the (chunk, N) similarity block computed at a time (memory ``chunk · N``).
    """
    if features.dim() < 2:
        raise ValueError(f"features must be (N, D), got shape {tuple(features.shape)}")
    x = F.normalize(features.reshape(features.shape[0], -1).double(), dim=1)
    n = x.shape[0]
    if not 1 <= k < n:
        raise ValueError(f"k must lie in [1, N) = [1, {n}), got {k}")
    out = torch.empty(n, k, dtype=torch.long, device=x.device)
    for start in range(0, n, chunk_size):
        sim = x[start:start + chunk_size] @ x.T
        rows = torch.arange(sim.shape[0], device=x.device)
        sim[rows, rows + start] = -float("inf")  # never one's own neighbour
        out[start:start + chunk_size] = sim.topk(k, dim=1).indices
    return out


@dataclass(eq=False)  # holds tensors: compared by identity
class NeighbourSmoothing:
    """Propagate each head's predictions over a fixed kNN graph before its label solve (see the module docstring).

    Args:
        neighbours: (N, k) int64 dataset indices of each sample's neighbours (e.g. :func:`knn_graph`), N = the
            label dataset's length.
        alpha: α in [0, 1), the weight of the neighbours (0 = no smoothing).
        steps: propagation steps (>= 1).
    """

    neighbours: torch.Tensor
    alpha: float = 0.5
    steps: int = 3
    _matrix: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        nb = self.neighbours
        if not isinstance(nb, torch.Tensor) or nb.dim() != 2 or nb.dtype not in (torch.int32, torch.int64):
            raise ValueError(f"neighbours must be an (N, k) integer tensor, got {getattr(nb, 'shape', type(nb))} "
                             f"{getattr(nb, 'dtype', '')}")
        n = nb.shape[0]
        if nb.numel() and (int(nb.min()) < 0 or int(nb.max()) >= n):
            raise ValueError(f"neighbours must be dataset indices in [0, N={n}), got values in "
                             f"[{int(nb.min())}, {int(nb.max())}]")
        if not 0.0 <= self.alpha < 1.0:
            raise ValueError(f"alpha must lie in [0, 1), got {self.alpha!r}")
        if not (isinstance(self.steps, int) and self.steps >= 1):
            raise ValueError(f"steps must be an int >= 1, got {self.steps!r}")

    @property
    def num_samples(self) -> int:
        return int(self.neighbours.shape[0])

    def matrix(self, device: torch.device) -> torch.Tensor:
        """(N, N) sparse float64 ``W = D⁻¹ A`` on ``device`` (built once per device)."""
        key = str(device)
        if key not in self._matrix:
            n, k = self.neighbours.shape
            rows = torch.arange(n).repeat_interleave(k)
            cols = self.neighbours.reshape(-1).long().cpu()
            pairs = torch.unique(torch.cat([torch.stack([rows, cols]), torch.stack([cols, rows])], 1), dim=1)
            degree = torch.bincount(pairs[0], minlength=n).double()
            values = 1.0 / degree[pairs[0]]
            self._matrix[key] = torch.sparse_coo_tensor(pairs, values, (n, n), check_invariants=True).coalesce().to(device)
        return self._matrix[key]

    def __call__(self, probs: torch.Tensor) -> torch.Tensor:
        """(N, K) smoothed probabilities of (N, K) row-stochastic ``probs`` (computed in float64)."""
        if probs.dim() != 2 or probs.shape[0] != self.num_samples:
            raise ValueError(f"probs must be (N={self.num_samples}, K), got {tuple(probs.shape)}")
        p = probs.double()
        if self.alpha == 0.0:
            return p
        w = self.matrix(p.device)
        smoothed = p
        for _ in range(self.steps):
            smoothed = (1.0 - self.alpha) * p + self.alpha * torch.sparse.mm(w, smoothed)
        return smoothed
