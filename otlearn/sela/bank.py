"""The per-process logit bank of a label round, keyed by dataset index.

A label pass over a sharded loader leaves each rank with rows ``(index, logits per head)``. A
``DistributedSampler`` pads its shards by repeating indices, so the same index can sit on two
ranks: :func:`owned_rows` keeps each index on exactly one rank (the lowest that saw it), which
costs one all-gather of N integers — never of logits. Collectives go through
:mod:`otlearn.comm` (on NCCL the integers travel on the GPU and come back to the CPU).
"""
from __future__ import annotations

import torch

import torch.distributed as dist

from otlearn.comm import Communicator, resolve


def unique_first(indices: torch.Tensor) -> torch.Tensor:
    """Positions of the first occurrence of each distinct value in ``indices`` (sorted by value)."""
    if indices.numel() == 0:
        return torch.zeros(0, dtype=torch.long, device=indices.device)
    order = torch.argsort(indices, stable=True)
    sorted_idx = indices[order]
    first = torch.ones_like(sorted_idx, dtype=torch.bool)
    first[1:] = sorted_idx[1:] != sorted_idx[:-1]
    return order[first]


def owned_rows(indices: torch.Tensor, comm: Communicator | dist.ProcessGroup | None) -> torch.Tensor:
    """Positions (into ``indices``) of the rows this rank owns: local duplicates dropped, and an
    index present on several ranks kept only on the lowest of them."""
    comm = resolve(comm)
    keep = unique_first(indices)
    if not comm.distributed:
        return keep
    mine = indices[keep]
    (everyone,), sizes = comm.all_gather_rows(mine)
    lower = everyone[: sum(sizes[: comm.rank])]
    return keep[~torch.isin(mine, lower)]


def gather_labels(
    indices: torch.Tensor, labels: torch.Tensor, n: int, comm: Communicator | dist.ProcessGroup | None
) -> torch.Tensor:
    """Assemble the global (T, N) label bank from every rank's ``indices`` (n,) and ``labels`` (T, n).

    Costs one all-gather of (T + 1) x n integers per rank. Entries no rank labelled are -1.
    """
    out = torch.full((labels.shape[0], n), -1, dtype=torch.long)
    (all_indices, all_labels), _ = resolve(comm).all_gather_rows(indices.cpu(), labels.cpu().T)
    out[:, all_indices] = all_labels.T
    return out
