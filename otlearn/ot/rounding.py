"""Hard assignments from the column potentials ``g``.

Only the K-vector ``g`` is global, so labels need no N x K communication:

* :func:`argmax_assignments`: ``argmax_k (S_ik + g_k)``, the argmax of each plan row;
* :func:`balanced_assignments`: labels whose global counts equal the integer targets
  ``round(N b_k)`` (largest remainders, so they sum to N) exactly, also when distributed.
"""
from __future__ import annotations

import math

import torch

from otlearn.ot.problem import AssignmentProblem


def _row_chunks(n: int, n_cols: int):
    size = max(1, (1 << 20) // max(n_cols, 1))
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


def argmax_assignments(problem: AssignmentProblem, g: torch.Tensor) -> torch.Tensor:
    """(n_local,) int64 ``argmax_k (S_ik + g_k)``, computed in row chunks."""
    labels = torch.empty(problem.n_local, dtype=torch.long, device=problem.device)
    for rows in _row_chunks(problem.n_local, problem.n_cols):
        labels[rows] = (problem.scores[rows].to(problem.dtype) + g).argmax(1)
    return labels


def integer_targets(b: torch.Tensor, n: int) -> torch.Tensor:
    """(K,) int64 counts ``round(n b_k)`` adjusted to sum to ``n``: floors plus the largest remainders.

    Ties among remainders go to the lower column index, so every rank computes the same targets.
    """
    exact = b.double() / b.double().sum() * n
    targets = torch.floor(exact).long()
    missing = n - int(targets.sum())
    if missing > 0:
        remainders = (exact - torch.floor(exact)).cpu()
        order = sorted(range(len(remainders)), key=lambda k: (-float(remainders[k]), k))
        for k in order[:missing]:
            targets[k] += 1
    return targets


def balanced_assignments(problem: AssignmentProblem, g: torch.Tensor) -> torch.Tensor:
    """(n_local,) int64 labels with global counts exactly ``integer_targets(b, N)``.

    Greedy repair of ``argmax_k (S_ik + g_k)``: while some column holds more rows than its target,
    each over-full column k gives away its ``excess_k`` rows of smallest loss
    ``(S_ic + g_c) − max_{k open} (S_ik + g_k)`` to their best column that is still under target;
    moves are taken in order of increasing loss (ties by global row index) while the destination
    has room. Each round either finishes or fills a column, so at most K rounds run. Only the
    candidate moves (at most the total excess) are exchanged between ranks, and every decision
    depends on global row indices, so W ranks give the labels of one process on the
    concatenated rows.
    """
    red = problem.reducer
    labels = argmax_assignments(problem, g)
    targets = integer_targets(problem.b, problem.n_global).to(problem.device)
    for _ in range(problem.n_cols + 1):
        counts = torch.bincount(labels, minlength=problem.n_cols).to(torch.long)
        red.sum_(counts)
        excess = counts - targets
        if not bool((excess > 0).any()):
            return labels
        candidates = _local_candidates(problem, g, labels, excess)
        gathered = [c for part in red.all_gather_object(candidates) for c in part]
        gathered.sort(key=lambda c: (c[0], c[1]))
        quota = excess.clamp(min=0).tolist()
        room = (-excess).clamp(min=0).tolist()
        taken = [0] * problem.n_cols
        lo, hi = problem.row_offset, problem.row_offset + problem.n_local
        for loss, global_row, source, dest in gathered:
            if taken[source] >= quota[source]:
                continue  # not among this column's excess smallest-loss rows
            taken[source] += 1
            if room[dest] <= 0:
                continue
            room[dest] -= 1
            if lo <= global_row < hi:
                labels[global_row - lo] = dest
    raise RuntimeError("balanced rounding did not finish in K+1 rounds; this is a bug, please report it")


def _local_candidates(
    problem: AssignmentProblem, g: torch.Tensor, labels: torch.Tensor, excess: torch.Tensor
) -> list[tuple[float, int, int, int]]:
    """This rank's ``excess_k`` smallest-loss moves out of each over-full column k.

    Returns ``(loss, global_row, source, destination)`` tuples; the destination is the row's best
    column among those still under target.
    """
    over = excess > 0
    open_cols = excess < 0
    rows = torch.nonzero(over[labels], as_tuple=True)[0]
    if rows.numel() == 0:
        return []
    values = problem.scores[rows].to(problem.dtype) + g
    current = values.gather(1, labels[rows, None]).squeeze(1)
    masked = values.masked_fill(~open_cols, -math.inf)
    best, dest = masked.max(1)
    loss = (current - best).double().cpu().tolist()
    src = labels[rows].cpu().tolist()
    dst = dest.cpu().tolist()
    glob = (rows + problem.row_offset).cpu().tolist()
    by_source: dict[int, list[tuple[float, int, int, int]]] = {}
    for item in zip(loss, glob, src, dst):
        by_source.setdefault(item[2], []).append(item)
    quota = excess.tolist()
    out: list[tuple[float, int, int, int]] = []
    for source, items in by_source.items():
        items.sort(key=lambda c: (c[0], c[1]))
        out += items[: quota[source]]
    return out
