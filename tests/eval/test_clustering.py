"""Clustering metrics against scikit-learn and brute force."""
import itertools

import numpy as np
import pytest
import torch
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from otlearn.eval import ari, cluster_accuracy, clustering_metrics, nmi


@pytest.mark.parametrize("seed", range(5))
def test_nmi_ari_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    target = rng.integers(0, 6, 300)
    pred = np.where(rng.random(300) < 0.6, (target + 2) % 6, rng.integers(0, 8, 300))
    assert nmi(pred, target) == pytest.approx(normalized_mutual_info_score(target, pred), abs=1e-5)
    assert ari(pred, target) == pytest.approx(adjusted_rand_score(target, pred), abs=1e-5)


@pytest.mark.parametrize("seed", range(5))
def test_cluster_accuracy_is_best_permutation(seed):
    rng = np.random.default_rng(100 + seed)
    target = rng.integers(0, 5, 120)
    pred = np.where(rng.random(120) < 0.5, (target * 3 + 1) % 5, rng.integers(0, 5, 120))
    best = max(np.mean(np.array(perm)[pred] == target) for perm in itertools.permutations(range(5)))
    assert cluster_accuracy(pred, target) == pytest.approx(best)


def test_perfect_and_relabelled_clustering():
    target = torch.arange(100) % 7
    metrics = clustering_metrics((target + 3) % 7, target)
    assert metrics == pytest.approx({"nmi": 1.0, "ari": 1.0, "acc": 1.0})


def test_more_clusters_than_classes_counts_extra_as_errors():
    target = np.array([0, 0, 1, 1])
    pred = np.array([0, 1, 2, 3])
    assert cluster_accuracy(pred, target) == 0.5


@pytest.mark.parametrize("pred,target,match", [([0, 1], [0], "same length"), ([], [], "empty"), ([-1, 0], [0, 0], ">= 0")])
def test_bad_input(pred, target, match):
    with pytest.raises(ValueError, match=match):
        clustering_metrics(pred, target)
