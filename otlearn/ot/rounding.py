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


def argmax_assignments(problem: AssignmentProblem, g: torch.Tensor) -> torch.Tensor:
    """(n_local,) int64 ``argmax_k (S_ik + g_k)``, computed in row chunks."""
    labels = torch.empty(problem.n_local, dtype=torch.long, device=problem.device)
    for rows in problem.row_blocks():
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
    concatenated rows. Vectorised: no Python loop over rows.
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
        local = _local_candidates(problem, g, labels, excess)
        cand = _gather_rows(red, local)
        # global order: increasing loss, ties by global row
        cand = cand[torch.argsort(cand[:, 1], stable=True)]
        cand = cand[torch.argsort(cand[:, 0], stable=True)]
        src, dst = cand[:, 2].long(), cand[:, 3].long()
        keep = _rank_within(src) < excess.clamp(min=0).cpu()[src]  # each column's excess smallest-loss rows
        cand, dst = cand[keep], dst[keep]
        accept = _rank_within(dst) < (-excess).clamp(min=0).cpu()[dst]  # while the destination has room
        moves = cand[accept]
        rows = moves[:, 1].long() - problem.row_offset
        mine = (rows >= 0) & (rows < problem.n_local)
        labels[rows[mine].to(labels.device)] = moves[mine, 3].long().to(labels.device)
    raise RuntimeError("balanced rounding did not finish in K+1 rounds; this is a bug, please report it")


def _rank_within(groups: torch.Tensor) -> torch.Tensor:
    """For each entry, how many earlier entries (in the current order) share its group value."""
    if groups.numel() == 0:
        return groups.clone()
    order = torch.argsort(groups, stable=True)
    sorted_groups = groups[order]
    pos = torch.arange(groups.numel())
    first = torch.ones_like(sorted_groups, dtype=torch.bool)
    first[1:] = sorted_groups[1:] != sorted_groups[:-1]
    start = torch.cummax(torch.where(first, pos, torch.zeros_like(pos)), 0).values
    rank = torch.empty_like(pos)
    rank[order] = pos - start
    return rank


def _gather_rows(red, local: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's (m_r, 4) float64 candidate rows (variable m_r)."""
    if red.world_size == 1:
        return local
    sizes = red.all_gather(torch.tensor([local.shape[0]], dtype=torch.long, device=local.device))
    longest = int(max(int(s) for s in sizes))
    padded = torch.zeros(longest, 4, dtype=local.dtype, device=local.device)
    padded[: local.shape[0]] = local
    parts = red.all_gather(padded)
    return torch.cat([p[: int(s)] for p, s in zip(parts, sizes)]).cpu()


def _local_candidates(
    problem: AssignmentProblem, g: torch.Tensor, labels: torch.Tensor, excess: torch.Tensor
) -> torch.Tensor:
    """This rank's ``excess_k`` smallest-loss moves out of each over-full column k.

    Returns a (m, 4) float64 tensor of ``(loss, global_row, source, destination)``; the destination
    is the row's best column among those still under target. Float64 holds row indices exactly
    up to 2^53.
    """
    over = excess > 0
    open_cols = excess < 0
    rows = torch.nonzero(over[labels], as_tuple=True)[0]
    if rows.numel() == 0:
        return torch.zeros(0, 4, dtype=torch.float64)
    values = problem.scores[rows].to(problem.dtype) + g
    current = values.gather(1, labels[rows, None]).squeeze(1)
    best, dest = values.masked_fill(~open_cols, -math.inf).max(1)
    cand = torch.stack([(current - best).double(), (rows + problem.row_offset).double(),
                        labels[rows].double(), dest.double()], 1).cpu()
    cand = cand[torch.argsort(cand[:, 0], stable=True)]  # rows ascend already: ties stay by row
    keep = _rank_within(cand[:, 2].long()) < excess.cpu()[cand[:, 2].long()]
    return cand[keep]
