"""Neighbourhood smoothing of SeLa's predictions: the kNN graph, the propagation, the callback's sharded form."""
import numpy as np
import pytest
import torch

from otlearn.sela import NeighbourSmoothing, SelfLabelCallback, knn_graph
from tests._dist import run_workers

from ._workers import smooth_padded


def _dense_w(neighbours: torch.Tensor) -> torch.Tensor:
    n = neighbours.shape[0]
    a = torch.zeros(n, n, dtype=torch.float64)
    a[torch.arange(n).repeat_interleave(neighbours.shape[1]), neighbours.reshape(-1)] = 1.0
    a = ((a + a.T) > 0).double()
    return a / a.sum(1, keepdim=True)


def _probs(seed: int, n: int, k: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(2 * torch.randn(n, k, generator=g, dtype=torch.float64), 1)


@pytest.mark.parametrize("seed", range(3))
def test_knn_graph_is_sklearns_cosine_neighbours(seed):
    from sklearn.neighbors import NearestNeighbors

    g = torch.Generator().manual_seed(seed)
    x = torch.randn(157, 12, generator=g)
    k = 6
    ours = knn_graph(x, k)
    ref = NearestNeighbors(n_neighbors=k + 1, metric="cosine").fit(x.numpy()).kneighbors(return_distance=False)
    ref = ref[:, :k] if ref.shape[1] == k else ref[:, :k]
    for i in range(len(x)):
        assert set(ours[i].tolist()) == set(ref[i].tolist()) and i not in ours[i].tolist()
    assert torch.equal(knn_graph(x, k, chunk_size=7).sort(1).values, ours.sort(1).values)  # chunking changes nothing
    with pytest.raises(ValueError, match=r"k must lie in \[1, N\)"):
        knn_graph(x, len(x))


@pytest.mark.parametrize("seed", range(3))
def test_propagation_matches_its_dense_formula_and_limit(seed):
    """P̃ ← (1 − α) P + α W P̃ with W the row-normalised symmetrised kNN adjacency (dense reference); rows stay
    probability vectors; many steps reach the closed form (1 − α)(I − αW)⁻¹ P."""
    n, k = 90, 7
    neighbours = knn_graph(torch.randn(n, 5, generator=torch.Generator().manual_seed(seed)), 4)
    p = _probs(seed, n, k)
    w = _dense_w(neighbours)
    expected = p
    for _ in range(3):
        expected = 0.5 * p + 0.5 * w @ expected
    out = NeighbourSmoothing(neighbours, alpha=0.5, steps=3)(p)
    assert torch.allclose(out, expected, atol=1e-12)
    assert torch.allclose(out.sum(1), torch.ones(n, dtype=torch.float64), atol=1e-12)
    limit = NeighbourSmoothing(neighbours, alpha=0.8, steps=300)(p)
    closed = 0.2 * torch.linalg.solve(torch.eye(n, dtype=torch.float64) - 0.8 * w, p)
    assert torch.allclose(limit, closed, atol=1e-10)
    assert torch.equal(NeighbourSmoothing(neighbours, alpha=0.0)(p), p)


def test_smoothing_repairs_noisy_predictions_inside_graph_communities():
    """Two well-separated blobs, predictions that point to the wrong blob for 30% of the samples: after smoothing
    over the blobs' kNN graph the argmax follows the blob for at least 90% of them."""
    g = torch.Generator().manual_seed(0)
    n = 200
    truth = torch.arange(n) % 2
    x = torch.randn(n, 3, generator=g) + 6.0 * torch.stack([truth, 1 - truth, torch.zeros(n, dtype=torch.long)], 1)
    wrong = torch.rand(n, generator=g) < 0.3
    noisy = torch.where(wrong, 1 - truth, truth)
    p = torch.full((n, 2), 0.3, dtype=torch.float64)
    p[torch.arange(n), noisy] = 0.7
    before = float((p.argmax(1) == truth).double().mean())
    after = float((NeighbourSmoothing(knn_graph(x, 10), alpha=0.8, steps=10)(p).argmax(1) == truth).double().mean())
    assert before < 0.75 and after >= 0.9, (before, after)


def test_bad_smoothing_arguments_raise_clear_errors():
    nb = knn_graph(torch.randn(20, 3), 3)
    with pytest.raises(ValueError, match=r"alpha must lie in \[0, 1\)"):
        NeighbourSmoothing(nb, alpha=1.0)
    with pytest.raises(ValueError, match="steps must be an int >= 1"):
        NeighbourSmoothing(nb, steps=0)
    with pytest.raises(ValueError, match="dataset indices"):
        NeighbourSmoothing(torch.tensor([[1], [2]]))
    with pytest.raises(ValueError, match=r"\(N, k\) integer tensor"):
        NeighbourSmoothing(torch.rand(20, 3))
    with pytest.raises(ValueError, match="NeighbourSmoothing or None"):
        SelfLabelCallback(smoothing=nb)
    with pytest.raises(ValueError, match=r"probs must be \(N=20, K\)"):
        NeighbourSmoothing(nb)(torch.rand(19, 4))


def test_callback_smooths_the_whole_bank_and_refuses_a_partial_one():
    from otlearn.comm import Communicator

    n, k = 60, 5
    nb = knn_graph(torch.randn(n, 4, generator=torch.Generator().manual_seed(1)), 5)
    sm = NeighbourSmoothing(nb, alpha=0.5, steps=3)
    p = _probs(3, n, k)
    cb = SelfLabelCallback(smoothing=sm)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(2))
    out = cb._smooth(order, [p[order].log().float()], Communicator())[0]
    assert torch.allclose(out.double().exp(), sm(p)[order], atol=1e-6)  # rows follow the bank's index order
    with pytest.raises(ValueError, match="visited 59 of 60"):
        cb._smooth(order[:59], [p[order[:59]].log().float()], Communicator())


@pytest.mark.parametrize("world_size", [2, 3])
def test_sharded_smoothing_equals_single_process(world_size):
    """W gloo processes with a padding sampler (duplicates across ranks, uneven shards): each rank's rows equal the
    single-process smoothing's rows."""
    from otlearn.comm import Communicator

    n, ks = 101, [7, 3]
    nb = knn_graph(torch.randn(n, 6, generator=torch.Generator().manual_seed(world_size)), 5)
    probs = [_probs(10 + h, n, k) for h, k in enumerate(ks)]
    single = SelfLabelCallback(smoothing=NeighbourSmoothing(nb, alpha=0.6, steps=4))._smooth(
        torch.arange(n), [p.log().float() for p in probs], Communicator())
    outs = run_workers(smooth_padded, world_size, probs, nb, 0.6, 4)
    assert sum(len(idx) for idx, _ in outs) > n  # the sampler padded: some index sat on two ranks
    for idx, banks in outs:
        for h in range(len(ks)):
            np.testing.assert_array_equal(banks[h], single[h].numpy()[idx])
