"""Functions run on each rank by the distributed tests (importable by spawned workers)."""
from __future__ import annotations

import warnings

import torch
import torch.distributed as dist

from otlearn.ot import SinkhornConvergenceWarning, sinkhorn


def solve_shard(rank: int, world_size: int, scores, a, b, sizes, kwargs) -> dict:
    """Solve on this rank's slice of the rows (``sizes`` gives each rank's row count)."""
    start = sum(sizes[:rank])
    rows = slice(start, start + sizes[rank])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SinkhornConvergenceWarning)
        result = sinkhorn(
            scores[rows], kwargs.pop("eps"), a=None if a is None else a[rows], b=b, group=dist.group.WORLD, **kwargs
        )
    return {
        "f": result.f.numpy(),
        "g": result.g.numpy(),
        "plan": result.plan().numpy(),
        "labels": result.assignments().numpy(),
        "balanced": result.balanced_assignments().numpy(),
        "n_iters": result.n_iters,
        "errors": result.errors,
        "converged": result.converged,
    }


def bad_input_on_one_rank(rank: int, world_size: int, case: str) -> str:
    """Every rank must raise the same ValueError, never hang; returns the message."""
    k = 5
    scores = torch.randn(4 + rank, k)
    kwargs = {}
    if case == "k_differs" and rank == 1:
        scores = torch.randn(4, k + 1)
    elif case == "nan" and rank == world_size - 1:
        scores[0, 0] = float("nan")
    elif case == "eps_differs" and rank == 0:
        kwargs["eps"] = 0.2
    elif case == "b_differs" and rank == 1:
        kwargs["b"] = torch.arange(1.0, k + 1)
    elif case == "a_all_zero":
        kwargs["a"] = torch.zeros(scores.shape[0])
    elif case == "a_negative" and rank == 0:
        kwargs["a"] = -torch.ones(scores.shape[0])
    eps = kwargs.pop("eps", 0.1)
    try:
        sinkhorn(scores, eps, group=dist.group.WORLD, **kwargs)
    except ValueError as err:
        return str(err)
    return "no error"


def round_shard(rank: int, world_size: int, scores, sizes) -> "numpy.ndarray":
    """Balanced rounding of ``argmax S`` (g = 0) on this rank's rows."""
    from otlearn.ot import AssignmentProblem, balanced_assignments

    start = sum(sizes[:rank])
    problem = AssignmentProblem.build(scores[start : start + sizes[rank]], 1.0, group=dist.group.WORLD)
    return balanced_assignments(problem, torch.zeros(scores.shape[1], dtype=torch.float32)).numpy()


def count_reads_on_shard(rank: int, world_size: int, mode: str) -> dict:
    """Host reads of a solve on a rank of a gloo group (uneven shards)."""
    from otlearn.ot import AssignmentProblem, SinkhornSolver
    from tests._modes import HostSyncCounter

    torch.manual_seed(rank)
    scores = torch.nn.functional.normalize(torch.randn(60 + 37 * rank, 8), dim=1) @ torch.nn.functional.normalize(
        torch.randn(20, 8, generator=torch.Generator().manual_seed(0)), dim=1).T
    counts = {}
    for iters in (5, 35):
        with HostSyncCounter() as counter:
            problem = AssignmentProblem.build(scores, 0.01, group=dist.group.WORLD)
            SinkhornSolver(tol=None, max_iter=iters, mode=mode)(problem)
        counts[iters] = counter.count
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SinkhornConvergenceWarning)
        with HostSyncCounter() as counter:
            problem = AssignmentProblem.build(scores, 0.01, group=dist.group.WORLD)
            result = SinkhornSolver(tol=1e-12, max_iter=40, check_every=10, mode=mode)(problem)
    return {"fixed_per_iteration": (counts[35] - counts[5]) / 30, "fixed_call": counts[5],
            "tol_reads": counter.count, "checks": len(result.errors)}
