"""W gloo processes give the single-process result on the concatenated rows."""
import numpy as np
import pytest
import torch

from otlearn.ot import sinkhorn
from tests._cases import solver_case
from tests._dist import run_workers
from tests._harness import SHARDINGS, assert_sharded_equals_single, shard_sizes

from ._workers import bad_input_on_one_rank, round_shard
from .conftest import random_problem

@pytest.mark.parametrize("world_size,shard", [(w, i) for w in SHARDINGS for i in range(len(SHARDINGS[w]))])
@pytest.mark.parametrize("mode", ["kernel", "log"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_distributed_equals_single_process(world_size, shard, mode, dtype):
    """World sizes x uneven shards (one empty rank) x operators x compute dtypes, non-uniform masses, through
    the shared harness: potentials and plan to the dtype's reduction-order tolerance, labels and balanced labels
    and the iteration count exactly. float64 solves to tol 1e-9 (accelerated); float32 runs 60 fixed iterations,
    so that both sides run the same arithmetic and differ only by the order of their reductions (tolerance-mode
    float32 solves stop on errors that differ at float32's resolution)."""
    sizes = shard_sizes(103, SHARDINGS[world_size][shard])
    scores, a, b = random_problem(world_size * 10 + shard, sum(sizes), 12, kind="logprob", dtype=dtype)
    tol = 1e-9 if dtype == torch.float64 else None
    assert_sharded_equals_single(solver_case, (scores, a), sizes, dict(eps=0.1, mode=mode, dtype=dtype, tol=tol, b=b),
                                 row_outputs=("f", "plan", "argmax", "balanced"), dtype=dtype)


def test_distributed_relaxed_marginal_equals_single_process():
    sizes = shard_sizes(90, SHARDINGS[3][0])
    scores, a, b = random_problem(5, 90, 7, kind="gauss")
    assert_sharded_equals_single(solver_case, (scores, a), sizes,
                                 dict(eps=0.2, mode="log", dtype=torch.float64, tol=1e-10, b=b, b_penalty=0.5),
                                 row_outputs=("f", "plan", "argmax"))


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
