"""Geodesic costs for Point2Mask: an 8-neighbour grid graph over task-oriented maps.

Math. On a grid of ``h x w`` nodes (the image downsampled by ``stride``), every pixel ``p`` is
linked to its 8 neighbours ``q`` by an edge of weight

    w(p, q) = ||S_p − S_q||_1 + w_b · max(B_p, B_q) + w_f · max(0, 1 − cos(E_p, E_q)) + step

where ``S`` are class-probability vectors (C,), ``B`` boundary probabilities and ``E`` pixel
embeddings (D,). Diagonal edges get the same weight form (no √2 factor, as Point2Mask). The
geodesic distance ``d_k(p)`` is the cheapest path cost from point ``k`` to ``p`` (Dijkstra, scipy's
``csgraph``), bilinearly upsampled to the full resolution.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import dijkstra


@dataclass(frozen=True)
class CostWeights:
    """Weights of the edge terms (Point2Mask: semantic 1, boundary 0.1, feature 0.1) and the grid stride.

    Attributes:
        semantic: weight of the L1 distance between neighbouring class-probability vectors.
        boundary: ``w_b``, weight of the larger boundary probability of the two pixels.
        feature: ``w_f``, weight of ``max(0, 1 − cos)`` between neighbouring embeddings.
        step: constant added to every edge (a small length prior; keeps weights > 0).
        stride: the graph is built on maps average-pooled by this factor (Point2Mask: 1/16 of the
            input image, i.e. the stride of its feature maps); distances are upsampled back.
    """

    semantic: float = 1.0
    boundary: float = 0.1
    feature: float = 0.1
    step: float = 1e-3
    stride: int = 1

    def __post_init__(self) -> None:
        for name in ("semantic", "boundary", "feature", "step"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value >= 0):
                raise ValueError(f"CostWeights.{name} must be a finite number >= 0, got {value!r}")
        if not isinstance(self.stride, int) or self.stride < 1:
            raise ValueError(f"CostWeights.stride must be an int >= 1, got {self.stride!r}")


OFFSETS = ((0, 1), (1, 0), (1, 1), (1, -1))  # right, down, down-right, down-left: each undirected edge once


@lru_cache(maxsize=16)
def _grid_edges(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Node index pairs (E,), (E,) of the 8-neighbour grid: for each offset in :data:`OFFSETS`, the
    pairs ``(p, p + offset)`` in row-major order of ``p`` (the order :func:`edge_weights` uses)."""
    idx = torch.arange(h * w).reshape(h, w)
    pairs = [_pairs(idx, dy, dx) for dy, dx in OFFSETS]
    return (torch.cat([p.reshape(-1) for p, _ in pairs]).numpy(), torch.cat([q.reshape(-1) for _, q in pairs]).numpy())


def _pairs(x: torch.Tensor, dy: int, dx: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Views of ``x`` (..., h, w) at p and at its neighbour q = p + (dy, dx), matching :func:`_grid_edges`."""
    h, w = x.shape[-2:]
    if dx >= 0:
        return x[..., : h - dy, : w - dx], x[..., dy:, dx:]
    return x[..., : h - dy, -dx:], x[..., dy:, : w + dx]


def edge_weights(
    probs: torch.Tensor,
    boundary: torch.Tensor | None = None,
    embeddings: torch.Tensor | None = None,
    weights: CostWeights = CostWeights(),
) -> torch.Tensor:
    """Weights (E,) of the 8-neighbour grid edges of one image, in :func:`_grid_edges` order.

    Args:
        probs: (C, h, w) class probabilities (already at the graph resolution).
        boundary: (h, w) boundary probabilities in [0, 1], or ``None`` (term dropped).
        embeddings: (D, h, w) pixel embeddings, or ``None`` (term dropped).
    """
    parts = []
    probs = probs.double()
    boundary = boundary.double() if boundary is not None and weights.boundary > 0 else None
    unit = F.normalize(embeddings.double(), dim=0) if embeddings is not None and weights.feature > 0 else None
    for dy, dx in OFFSETS:
        p, q = _pairs(probs, dy, dx)
        edge = weights.semantic * (p - q).abs().sum(0) + weights.step
        if boundary is not None:
            bp, bq = _pairs(boundary, dy, dx)
            edge = edge + weights.boundary * torch.maximum(bp, bq)
        if unit is not None:
            ep, eq = _pairs(unit, dy, dx)
            edge = edge + weights.feature * (1.0 - (ep * eq).sum(0)).clamp_min(0.0)
        parts.append(edge.reshape(-1))
    return torch.cat(parts)


def _csr(weights_e: torch.Tensor, shape: tuple[int, int]) -> csr_matrix:
    h, w = shape
    src, dst = _grid_edges(h, w)
    data = weights_e.detach().cpu().numpy().astype(np.float64)
    return csr_matrix((data, (src, dst)), shape=(h * w, h * w))


def _dijkstra(graph: csr_matrix, shape: tuple[int, int], sources: torch.Tensor) -> torch.Tensor:
    h, w = shape
    nodes = (sources[:, 0] * w + sources[:, 1]).cpu().numpy()
    if len(nodes) == 0:
        return torch.zeros((0, h, w), dtype=torch.float64)
    dist = dijkstra(graph, directed=False, indices=nodes)
    return torch.from_numpy(np.ascontiguousarray(dist)).reshape(len(nodes), h, w)


def geodesic_distances(weights_e: torch.Tensor, shape: tuple[int, int], sources: torch.Tensor) -> torch.Tensor:
    """(K, h, w) float64 shortest-path costs from each source node over the grid graph.

    Args:
        weights_e: (E,) edge weights from :func:`edge_weights` (finite, >= 0).
        shape: the grid's ``(h, w)``.
        sources: (K, 2) int64 ``(y, x)`` grid coordinates.
    """
    return _dijkstra(_csr(weights_e, shape), shape, sources)


def downsample(x: torch.Tensor, stride: int) -> torch.Tensor:
    """Average-pool (..., H, W) maps by ``stride`` (ceil mode, so every pixel belongs to a node)."""
    if stride == 1:
        return x
    lead = x.shape[:-2]
    y = F.avg_pool2d(x.reshape(-1, 1, *x.shape[-2:]).double(), stride, stride, ceil_mode=True)
    return y.reshape(*lead, *y.shape[-2:])


def upsample(dist: torch.Tensor, size: tuple[int, int], stride: int) -> torch.Tensor:
    """Bilinearly upsample (K, h, w) distances to (K, H, W) (identity when ``stride == 1``)."""
    if stride == 1:
        return dist
    big = F.interpolate(dist[None], scale_factor=stride, mode="bilinear", align_corners=False)[0]
    return big[:, : size[0], : size[1]]


@dataclass
class GeodesicGraph:
    """One image's weighted grid graph, built once and queried for any seeds (e.g. the original
    points, then the reseeded centroids).

    Attributes:
        graph: (h·w, h·w) CSR matrix of edge weights (each undirected edge once).
        grid: the graph's ``(h, w)``.
        size: the image's ``(H, W)``.
        stride: pooling factor between image and graph.
    """

    graph: csr_matrix
    grid: tuple[int, int]
    size: tuple[int, int]
    stride: int

    @classmethod
    def build(cls, probs: torch.Tensor, boundary: torch.Tensor | None = None, embeddings: torch.Tensor | None = None,
              weights: CostWeights = CostWeights()) -> "GeodesicGraph":
        """From full-resolution maps: ``probs`` (C, H, W), ``boundary`` (H, W), ``embeddings`` (D, H, W)."""
        s = weights.stride
        small = downsample(probs, s)
        b_small = downsample(boundary, s) if boundary is not None else None
        e_small = downsample(embeddings, s) if embeddings is not None else None
        grid = tuple(small.shape[-2:])
        return cls(_csr(edge_weights(small, b_small, e_small, weights), grid), grid, tuple(probs.shape[-2:]), s)

    def distances(self, seeds: torch.Tensor) -> torch.Tensor:
        """(K, H, W) distances from full-resolution ``seeds`` (K, 2) ``(y, x)``, upsampled to the image."""
        grid_seeds = torch.div(seeds, self.stride, rounding_mode="floor")
        return upsample(_dijkstra(self.graph, self.grid, grid_seeds), self.size, self.stride)


def point_distances(
    probs: torch.Tensor,
    seeds: torch.Tensor,
    boundary: torch.Tensor | None = None,
    embeddings: torch.Tensor | None = None,
    weights: CostWeights = CostWeights(),
) -> torch.Tensor:
    """(K, H, W) geodesic distances from full-resolution ``seeds`` (K, 2) ``(y, x)`` on one image's maps
    (:meth:`GeodesicGraph.build` then :meth:`GeodesicGraph.distances`)."""
    return GeodesicGraph.build(probs, boundary, embeddings, weights).distances(seeds)
