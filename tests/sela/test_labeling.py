"""The label step: W ranks (uneven, padded shards) give the labels of one process; counts balanced."""
import numpy as np
import pytest
import torch

from otlearn.ot import SinkhornSolver
from otlearn.sela.bank import owned_rows, unique_first
from otlearn.sela.labeling import assign_labels
from tests._dist import run_workers

from ._workers import label_round_padded


def _logits(seed: int, n: int, ks: list[int]) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [3 * torch.randn(n, k, generator=g) for k in ks]


def test_unique_first_and_owned_rows_single_process():
    idx = torch.tensor([5, 3, 5, 1, 3, 9])
    assert sorted(idx[unique_first(idx)].tolist()) == [1, 3, 5, 9]
    assert unique_first(idx).tolist() == [3, 1, 0, 5]  # first occurrences, ordered by value
    assert owned_rows(idx, None).tolist() == unique_first(idx).tolist()


@pytest.mark.parametrize("world_size,n", [(2, 101), (3, 100)])
@pytest.mark.parametrize("rounding", ["argmax", "balanced", "relaxed"])
def test_distributed_label_round_equals_single(world_size, n, rounding):
    ks = [7, 4]
    logits = _logits(world_size + n, n, ks)
    previous = torch.stack([torch.randperm(n, generator=torch.Generator().manual_seed(1)) % k for k in ks])
    solver = SinkhornSolver(tol=1e-6, max_iter=5000)
    extra = {}
    if rounding == "relaxed":  # KL-relaxed cluster sizes towards a long-tailed prior, argmax labels
        rounding = "argmax"
        extra = dict(b_penalty=0.5, priors=[0.5 ** torch.arange(float(k)) for k in ks])
    single, _, single_g = assign_labels(torch.arange(n), [lg.clone() for lg in logits], previous, [None, None],
                                        10.0, solver, None, rounding=rounding, dtype=torch.float64, **extra)
    outs = run_workers(label_round_padded, world_size, logits, previous, 10.0, rounding, *extra.values())
    assert sum(o[3] for o in outs) > n  # the sampler padded: some index sat on two ranks
    for bank, pots, heads, _ in outs:
        np.testing.assert_array_equal(bank, single.numpy())
        for h in range(2):
            np.testing.assert_allclose(pots[h], single_g[h].numpy(), rtol=1e-8, atol=1e-10)
        assert all(hd["labelled"] == n for hd in heads)
    if rounding == "balanced":
        for h, k in enumerate(ks):
            counts = np.bincount(single[h].numpy(), minlength=k)
            assert counts.max() - counts.min() <= 1


@pytest.mark.parametrize("acceleration", ["none", "anderson"])
def test_argmax_labels_nearly_balanced_and_warm_start(acceleration):
    n, ks = 600, [10]
    logits = _logits(0, n, ks)
    previous = torch.zeros(1, n, dtype=torch.long)
    solver = SinkhornSolver(tol=1e-4, max_iter=5000, acceleration=acceleration)
    bank, heads, pots = assign_labels(torch.arange(n), [logits[0].clone()], previous, [None], 10.0, solver, None,
                                      rounding="argmax")
    counts = np.bincount(bank[0].numpy(), minlength=10)
    assert counts.min() >= 50 and counts.max() <= 70  # equal-size clusters up to argmax rounding
    assert heads[0]["changed"] == pytest.approx(float((bank[0] != 0).float().mean()))
    # a second round from slightly changed logits, warm-started, needs far fewer iterations
    moved = logits[0] + 1e-3 * torch.randn(n, 10, generator=torch.Generator().manual_seed(5))
    _, cold, _ = assign_labels(torch.arange(n), [moved.clone()], bank, [None], 10.0, solver, None, rounding="argmax")
    _, warm, _ = assign_labels(torch.arange(n), [moved.clone()], bank, pots, 10.0, solver, None, rounding="argmax")
    assert warm[0]["iterations"] * 3 <= cold[0]["iterations"]


def test_indices_not_seen_keep_previous_labels():
    n = 50
    logits = _logits(2, 30, [5])
    previous = torch.full((1, n), 4, dtype=torch.long)
    solver = SinkhornSolver(tol=1e-4, max_iter=2000)
    bank, heads, _ = assign_labels(torch.arange(30), logits, previous, [None], 5.0, solver, None)
    assert (bank[0, 30:] == 4).all() and heads[0]["labelled"] == 30


def test_relaxed_labels_follow_imbalanced_predictions_and_reject_balanced_rounding():
    """Logits from 4 imbalanced groups (shares 0.55/0.25/0.15/0.05): hard SeLa forces 4 equal clusters,
    the relaxed marginal keeps the group sizes."""
    g = torch.Generator().manual_seed(0)
    n, k = 800, 4
    groups = torch.multinomial(torch.tensor([0.55, 0.25, 0.15, 0.05]), n, replacement=True, generator=g)
    logits = torch.randn(n, k, generator=g) + 4.0 * torch.nn.functional.one_hot(groups, k)
    previous = torch.zeros(1, n, dtype=torch.long)
    solver = SinkhornSolver(tol=1e-6, max_iter=5000)
    hard, _, _ = assign_labels(torch.arange(n), [logits.clone()], previous, [None], 10.0, solver, None, rounding="balanced")
    relaxed, heads, _ = assign_labels(torch.arange(n), [logits.clone()], previous, [None], 10.0, solver, None,
                                      rounding="argmax", b_penalty=0.3)
    truth = np.bincount(groups.numpy(), minlength=k)
    assert np.bincount(hard[0].numpy(), minlength=k).tolist() == [200] * 4
    relaxed_counts = np.bincount(relaxed[0].numpy(), minlength=k)
    assert np.abs(relaxed_counts - truth).max() <= 0.05 * n, (relaxed_counts, truth)
    assert (relaxed[0] == groups).float().mean() > (hard[0] == groups).float().mean() + 0.2
    assert heads[0]["converged"]
    with pytest.raises(ValueError, match="balanced rounding needs hard"):
        assign_labels(torch.arange(n), [logits.clone()], previous, [None], 10.0, solver, None, rounding="balanced",
                      b_penalty=0.3)
