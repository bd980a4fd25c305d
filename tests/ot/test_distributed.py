"""W gloo processes give the single-process result on the concatenated rows."""
import numpy as np
import pytest
import torch

from otlearn.ot import sinkhorn
from tests._dist import run_workers

from ._workers import bad_input_on_one_rank, round_shard, solve_shard
from .conftest import random_problem

CASES = [
    # world size, rows per rank (uneven, one empty rank), mode, non-uniform masses
    (2, [70, 33], "kernel", False),
    (2, [0, 90], "log", True),
    (3, [50, 0, 41], "kernel", True),
    (3, [17, 60, 23], "log", False),
]


@pytest.mark.parametrize("world_size,sizes,mode,weighted", CASES)
def test_distributed_equals_single_process(world_size, sizes, mode, weighted):
    n, k = sum(sizes), 12
    scores, a, b = random_problem(world_size * 10 + len(mode), n, k, kind="logprob")
    if not weighted:
        a, b = None, None
    shared = dict(eps=0.1, tol=1e-9, max_iter=20_000, dtype=torch.float64, mode=mode)
    single = sinkhorn(scores, a=a, b=b, **{**shared, "eps": 0.1})
    outs = run_workers(solve_shard, world_size, scores, a, b, sizes, dict(shared))
    assert all(o["n_iters"] == single.n_iters for o in outs)
    for o in outs:
        np.testing.assert_allclose(o["g"], single.g.numpy(), rtol=1e-9, atol=1e-12)
        assert o["converged"]
    plan = np.concatenate([o["plan"] for o in outs])
    np.testing.assert_allclose(plan, single.plan().numpy(), rtol=1e-8, atol=1e-18)
    np.testing.assert_array_equal(np.concatenate([o["labels"] for o in outs]), single.assignments().numpy())
    balanced = np.concatenate([o["balanced"] for o in outs])
    np.testing.assert_array_equal(balanced, single.balanced_assignments().numpy())


def test_distributed_balanced_rounding_of_skewed_argmax():
    """A skewed argmax must be repaired by moving rows across ranks' shards, as one process would."""
    from otlearn.ot import AssignmentProblem, balanced_assignments

    sizes = [40, 75, 0]
    scores, _, _ = random_problem(99, sum(sizes), 9, kind="gauss", dtype=torch.float32)
    scores[:, 0] += 1.5  # most rows prefer column 0
    g = torch.zeros(9)
    single = balanced_assignments(AssignmentProblem.build(scores, 1.0), g).numpy()
    assert np.bincount(scores.argmax(1).numpy(), minlength=9).max() > 40  # far from balanced
    outs = run_workers(round_shard, 3, scores, sizes)
    np.testing.assert_array_equal(np.concatenate(outs), single)
    assert np.bincount(single, minlength=9).tolist() == [13] * 7 + [12] * 2  # 115 = 9*12 + 7


@pytest.mark.parametrize(
    "case,match",
    [
        ("k_differs", "K differs across ranks"),
        ("nan", "rank 1: scores contain 1 NaN/Inf"),
        ("eps_differs", "eps differs across ranks"),
        ("b_differs", "b differ across ranks"),
        ("a_all_zero", "sum to 0"),
        ("a_negative", "rank 0: a has negative entries"),
    ],
)
def test_bad_input_on_one_rank_raises_everywhere(case, match):
    messages = run_workers(bad_input_on_one_rank, 2, case, timeout=60)
    for message in messages:
        assert match in message, message
