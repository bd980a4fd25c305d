"""Hard assignments from the column potentials ``g``.

Only the K-vector ``g`` is global, so labels need no N x K communication:

* :func:`argmax_assignments`: ``argmax_k (S_ik + g_k)``, the argmax of each plan row;
* :func:`balanced_assignments`: labels whose global counts equal the integer targets
  ``round(N b_k)`` (largest remainders, so they sum to N) exactly, also when distributed.

Everything stays on the scores' device; collectives go through :mod:`otlearn.comm`.
"""
from __future__ import annotations

import math

import torch

from otlearn.comm import host_values
from otlearn.ot.precision import full_precision
from otlearn.ot.problem import AssignmentProblem


@torch.compiler.disable
def argmax_assignments(problem: AssignmentProblem, g: torch.Tensor) -> torch.Tensor:
    """(n_local,) int64 ``argmax_k (S_ik + g_k)``, computed in row chunks (no host read).

    Uses ``max(1).indices`` (the first maximum, as ``argmax``), which is about 3x faster than
    ``argmax(1)`` on the CPU.
    """
    labels = torch.empty(problem.n_local, dtype=torch.long, device=problem.device)
    with full_precision(problem.device):
        g = g.to(device=problem.device, dtype=problem.dtype)
        for rows in problem.row_blocks():
            labels[rows] = (problem.scores[rows].to(problem.dtype) + g).max(1).indices
    return labels


def column_counts(labels: torch.Tensor, k: int) -> torch.Tensor:
    """(k,) int64 number of entries of ``labels`` per column.

    ``torch.bincount`` reads the largest label back to the host on a GPU (a sync); a scatter-add
    into a K-vector does not.
    """
    counts = torch.zeros(k, dtype=torch.long, device=labels.device)
    return counts.scatter_add_(0, labels.reshape(-1), torch.ones_like(labels.reshape(-1)))


def integer_targets(b: torch.Tensor, n: int) -> torch.Tensor:
    """(K,) int64 counts ``round(n b_k)`` adjusted to sum to ``n``: floors plus the largest remainders.

    Ties among remainders go to the lower column index, so every rank computes the same targets.
    Computed on ``b``'s device without a host read.
    """
    exact = b.double() / b.double().sum() * n
    floors = torch.floor(exact)
    missing = n - floors.sum()
    order = torch.argsort(floors - exact, stable=True)  # largest remainder first, ties by index
    place = torch.empty_like(order)
    place[order] = torch.arange(order.numel(), device=order.device)
    return floors.long() + (place < missing).long()


@torch.compiler.disable
def balanced_assignments(problem: AssignmentProblem, g: torch.Tensor) -> torch.Tensor:
    """(n_local,) int64 labels with global counts exactly ``integer_targets(b, N)``.

    Greedy repair of ``argmax_k (S_ik + g_k)``: while some column holds more rows than its target,
    each over-full column k gives away its ``excess_k`` rows of smallest loss
    ``(S_ic + g_c) − max_{k open} (S_ik + g_k)`` to their best column that is still under target;
    moves are taken in order of increasing loss (ties by global row index) while the destination
    has room. Each round either finishes or fills a column, so at most K rounds run. Only the
    candidate moves (at most the total excess) are exchanged between ranks, and every decision
    depends on global row indices, so W ranks give the labels of one process on the
    concatenated rows. Vectorised: no Python loop over rows; four host reads per round.
    """
    comm, dev, k = problem.comm, problem.device, problem.n_cols
    labels = argmax_assignments(problem, g)
    with full_precision(dev):
        g = g.to(device=dev, dtype=problem.dtype)
        targets = integer_targets(problem.b, problem.n_global).to(dev)
        for _ in range(k + 1):
            counts = comm.all_reduce_(column_counts(labels, k))
            excess = counts - targets
            if not host_values((excess > 0).any().reshape(1))[0]:
                return labels
            loss, moves = _local_candidates(problem, g, labels, excess)
            (loss, moves), _ = comm.all_gather_rows(loss, moves)
            # global order: increasing loss, ties by global row
            order = torch.argsort(moves[:, 0], stable=True)
            loss, moves = loss[order], moves[order]
            order = torch.argsort(loss, stable=True)
            moves = moves[order]
            row, src, dst = moves[:, 0], moves[:, 1], moves[:, 2]
            keep = _rank_within(src) < excess.clamp(min=0)[src]  # each column's excess smallest-loss rows
            room = (-excess).clamp(min=0)
            queued = torch.where(keep, dst, torch.full_like(dst, k))  # dropped moves queue apart
            accept = keep & (_rank_within(queued) < torch.cat([room, room.new_zeros(1)])[queued])
            local = row - problem.row_offset
            mine = accept & (local >= 0) & (local < problem.n_local)
            padded = torch.cat([labels, labels.new_zeros(1)])  # slot n_local takes the moves of other ranks
            padded.scatter_(0, torch.where(mine, local, torch.full_like(local, problem.n_local)), dst)
            labels = padded[: problem.n_local]
    raise RuntimeError("balanced rounding did not finish in K+1 rounds; this is a bug, please report it")


def _rank_within(groups: torch.Tensor) -> torch.Tensor:
    """For each entry, how many earlier entries (in the current order) share its group value."""
    if groups.numel() == 0:
        return groups.clone()
    order = torch.argsort(groups, stable=True)
    sorted_groups = groups[order]
    pos = torch.arange(groups.numel(), device=groups.device)
    first = torch.ones_like(sorted_groups, dtype=torch.bool)
    first[1:] = sorted_groups[1:] != sorted_groups[:-1]
    start = torch.cummax(torch.where(first, pos, torch.zeros_like(pos)), 0).values
    rank = torch.empty_like(pos)
    rank[order] = pos - start
    return rank


def _local_candidates(
    problem: AssignmentProblem, g: torch.Tensor, labels: torch.Tensor, excess: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """This rank's ``excess_k`` smallest-loss moves out of each over-full column k.

    Returns ``loss`` (m,) in the compute dtype and ``moves`` (m, 3) int64 of
    ``(global_row, source, destination)``; the destination is the row's best column among those
    still under target.
    """
    over = excess > 0
    open_cols = excess < 0
    rows = torch.nonzero(over[labels], as_tuple=True)[0]
    values = problem.scores[rows].to(problem.dtype) + g
    current = values.gather(1, labels[rows, None]).squeeze(1)
    best, dest = values.masked_fill(~open_cols, -math.inf).max(1) if rows.numel() else (current, labels[rows])
    loss = current - best
    moves = torch.stack([rows + problem.row_offset, labels[rows], dest], 1)
    order = torch.argsort(loss, stable=True)  # rows ascend already: ties stay by row
    loss, moves = loss[order], moves[order]
    keep = _rank_within(moves[:, 1]) < excess[moves[:, 1]]
    return loss[keep], moves[keep]
