"""Evaluate a trained representation on a train/test pair of loaders: the numbers every report uses."""
from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import DataLoader

from otlearn.eval.clustering import clustering_metrics
from otlearn.eval.features import extract
from otlearn.eval.knn import knn_accuracy
from otlearn.eval.linear import linear_probe


def evaluate_representation(
    module: torch.nn.Module,
    train_loader: DataLoader,
    test_loader: DataLoader,
    knn_k: int = 20,
    knn_temperature: float = 0.07,
    head: int | None = 0,
    seed: int = 0,
) -> dict[str, Any]:
    """Metrics of ``module`` (implementing ``embed`` and optionally ``sela_logits``) on held-out data.

    Returns ``{"knn", "linear"}`` from frozen ``embed`` features (memory/fit = train, query = test)
    and, when ``head`` is not None, ``{"nmi", "ari", "acc"}`` of that head's argmax on the test set,
    plus ``"test_pred"``, ``"test_target"`` and ``"test_features"`` for plots.
    """
    train_x, train_y, _ = extract(module, train_loader, module.embed)
    test_x, test_y, _ = extract(module, test_loader, module.embed)
    out: dict[str, Any] = {
        "knn": knn_accuracy(train_x, train_y, test_x, test_y, k=knn_k, temperature=knn_temperature),
        "linear": linear_probe(train_x, train_y, test_x, test_y, seed=seed).accuracy,
        "test_features": test_x,
        "test_target": test_y,
    }
    if head is not None:
        pred, _, _ = extract(module, test_loader, lambda b: module.sela_logits(b)[head].argmax(1))
        out.update(clustering_metrics(pred.long(), test_y))
        out["test_pred"] = pred.long()
    return out
