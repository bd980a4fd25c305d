"""Weighted cosine kNN classification of frozen features (InstDisc / SeLa / solo-learn protocol).

Features are L2-normalised; each query takes its k most similar memory samples, weights each
neighbour by ``exp(cos / T)`` and predicts the class with the largest summed weight.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def knn_predict(
    train_features: torch.Tensor,
    train_targets: torch.Tensor,
    query_features: torch.Tensor,
    k: int = 20,
    temperature: float = 0.07,
    num_classes: int | None = None,
    chunk_size: int = 1024,
) -> torch.Tensor:
    """(Q,) predicted classes for ``query_features`` (Q, D) from a memory (N, D) with targets (N,)."""
    if train_features.dim() != 2 or query_features.dim() != 2 or train_features.shape[1] != query_features.shape[1]:
        raise ValueError(
            f"features must be (N, D) and (Q, D) with the same D, got {tuple(train_features.shape)} and "
            f"{tuple(query_features.shape)}"
        )
    if train_targets.shape != (train_features.shape[0],):
        raise ValueError(f"train_targets must have shape ({train_features.shape[0]},), got {tuple(train_targets.shape)}")
    if k < 1 or temperature <= 0:
        raise ValueError(f"k must be >= 1 and temperature > 0, got k={k}, temperature={temperature}")
    for name, x in (("train_features", train_features), ("query_features", query_features)):
        if not torch.isfinite(x).all():
            raise ValueError(f"{name} contain NaN/Inf")
    num_classes = num_classes or int(train_targets.max()) + 1
    k = min(k, train_features.shape[0])
    memory = F.normalize(train_features.float(), dim=1)
    targets = train_targets.long()
    preds = []
    for start in range(0, query_features.shape[0], chunk_size):
        q = F.normalize(query_features[start : start + chunk_size].float(), dim=1)
        sim, idx = (q @ memory.T).topk(k, dim=1)
        weights = (sim / temperature).exp()
        votes = torch.zeros(q.shape[0], num_classes, dtype=weights.dtype)
        votes.scatter_add_(1, targets[idx], weights)
        preds.append(votes.argmax(1))
    return torch.cat(preds)


def knn_accuracy(train_features, train_targets, query_features, query_targets, k: int = 20, temperature: float = 0.07) -> float:
    """Top-1 accuracy of :func:`knn_predict` on ``query_targets``."""
    pred = knn_predict(train_features, train_targets, query_features, k=k, temperature=temperature,
                       num_classes=int(max(train_targets.max(), query_targets.max())) + 1)
    return float((pred == query_targets.long()).float().mean())
