"""kNN against scikit-learn's weighted neighbours classifier; linear probe against logistic regression."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier

from otlearn.eval import knn_accuracy, knn_predict, linear_probe


def _blobs(seed, n, d=16, classes=5, noise=1.5):
    g = torch.Generator().manual_seed(seed)
    centers = 3 * torch.randn(classes, d, generator=g)
    y = torch.randint(0, classes, (n,), generator=g)
    return centers[y] + noise * torch.randn(n, d, generator=g), y


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("k,temperature", [(1, 0.07), (10, 0.07), (25, 0.5)])
def test_knn_matches_sklearn_weighted(seed, k, temperature):
    x, y = _blobs(seed, 400)
    xtr, ytr, xte = x[:300], y[:300], x[300:]
    ours = knn_predict(xtr, ytr, xte, k=k, temperature=temperature, chunk_size=37)
    ntr, nte = F.normalize(xtr, dim=1).double().numpy(), F.normalize(xte, dim=1).double().numpy()
    # cosine distance d = 1 - cos, weight exp(cos/T) = exp((1 - d)/T)
    ref = KNeighborsClassifier(n_neighbors=k, metric="cosine", algorithm="brute",
                               weights=lambda d: np.exp((1 - d) / temperature)).fit(ntr, ytr.numpy())
    np.testing.assert_array_equal(ours.numpy(), ref.predict(nte))


def test_knn_accuracy_and_errors():
    xtr, ytr = _blobs(0, 200, noise=0.1)
    assert knn_accuracy(xtr, ytr, xtr, ytr, k=5) == 1.0
    with pytest.raises(ValueError, match="same D"):
        knn_predict(xtr, ytr, torch.zeros(3, 7))
    with pytest.raises(ValueError, match="NaN"):
        knn_predict(xtr, ytr, torch.full((2, 16), float("nan")))
    with pytest.raises(ValueError, match="k must be"):
        knn_predict(xtr, ytr, xtr, k=0)


@pytest.mark.parametrize("seed", range(2))
def test_linear_probe_close_to_logistic_regression(seed):
    x, y = _blobs(seed, 900, noise=3.0)
    xtr, ytr, xte, yte = x[:600], y[:600], x[600:], y[600:]
    ours = linear_probe(xtr, ytr, xte, yte, seed=seed)
    mean, std = xtr.mean(0), xtr.std(0)
    ref = LogisticRegression(max_iter=2000).fit(((xtr - mean) / std).numpy(), ytr.numpy())
    ref_acc = ref.score(((xte - mean) / std).numpy(), yte.numpy())
    assert abs(ours.accuracy - ref_acc) < 0.03, (ours.accuracy, ref_acc)
    assert 1 <= ours.epochs <= 300 and 0 < ours.val_accuracy <= 1
