"""Clustering metrics of predicted cluster ids against true classes.

NMI and ARI come from torchmetrics; accuracy under the best one-to-one matching of clusters to
classes uses scipy's Hungarian solver (clusters without a class count as errors).
"""
from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torchmetrics.functional.clustering import adjusted_rand_score, normalized_mutual_info_score


def _as_long(x) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).long().flatten().cpu()
    return t


def _check(pred: torch.Tensor, target: torch.Tensor) -> None:
    if pred.shape != target.shape:
        raise ValueError(f"predictions and targets must have the same length, got {pred.numel()} and {target.numel()}")
    if pred.numel() == 0:
        raise ValueError("cannot score an empty clustering")
    if (pred < 0).any() or (target < 0).any():
        raise ValueError("cluster ids and classes must be >= 0")


def nmi(pred, target) -> float:
    """Normalised mutual information (arithmetic mean normalisation, as scikit-learn's default)."""
    p, t = _as_long(pred), _as_long(target)
    _check(p, t)
    return float(normalized_mutual_info_score(p, t, average_method="arithmetic"))


def ari(pred, target) -> float:
    """Adjusted Rand index."""
    p, t = _as_long(pred), _as_long(target)
    _check(p, t)
    return float(adjusted_rand_score(p, t))


def cluster_accuracy(pred, target) -> float:
    """Accuracy after mapping clusters to classes one-to-one to maximise agreement (Hungarian)."""
    p, t = _as_long(pred).numpy(), _as_long(target).numpy()
    _check(torch.from_numpy(p), torch.from_numpy(t))
    _, p_ids = np.unique(p, return_inverse=True)
    _, t_ids = np.unique(t, return_inverse=True)
    counts = np.zeros((p_ids.max() + 1, t_ids.max() + 1), dtype=np.int64)
    np.add.at(counts, (p_ids, t_ids), 1)
    rows, cols = linear_sum_assignment(-counts)
    return float(counts[rows, cols].sum() / len(p))


def clustering_metrics(pred, target) -> dict[str, float]:
    """``{"nmi", "ari", "acc"}`` of a clustering against true classes."""
    return {"nmi": nmi(pred, target), "ari": ari(pred, target), "acc": cluster_accuracy(pred, target)}
