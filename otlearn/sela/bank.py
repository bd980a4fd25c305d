"""The per-process logit bank of a label round, keyed by dataset index.

A label pass over a sharded loader leaves each rank with rows ``(index, logits per head)``. A
``DistributedSampler`` pads its shards by repeating indices, so the same index can sit on two
ranks: :func:`owned_rows` keeps each index on exactly one rank (the lowest that saw it), which
costs one all-gather of N integers — never of logits.
"""
from __future__ import annotations

import torch
import torch.distributed as dist


def unique_first(indices: torch.Tensor) -> torch.Tensor:
    """Positions of the first occurrence of each distinct value in ``indices`` (sorted by value)."""
    if indices.numel() == 0:
        return torch.zeros(0, dtype=torch.long)
    order = torch.argsort(indices, stable=True)
    sorted_idx = indices[order]
    first = torch.ones_like(sorted_idx, dtype=torch.bool)
    first[1:] = sorted_idx[1:] != sorted_idx[:-1]
    return order[first]


def owned_rows(indices: torch.Tensor, group: dist.ProcessGroup | None) -> torch.Tensor:
    """Positions (into ``indices``) of the rows this rank owns: local duplicates dropped, and an
    index present on several ranks kept only on the lowest of them."""
    keep = unique_first(indices)
    if group is None:
        return keep
    mine = indices[keep]
    world = dist.get_world_size(group)
    rank = dist.get_rank(group)
    sizes = [torch.zeros(1, dtype=torch.long) for _ in range(world)]
    dist.all_gather(sizes, torch.tensor([mine.numel()]), group=group)
    longest = int(max(s.item() for s in sizes))
    padded = torch.full((longest,), -1, dtype=torch.long)
    padded[: mine.numel()] = mine
    gathered = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(gathered, padded, group=group)
    lower = torch.cat([g[g >= 0] for g in gathered[:rank]]) if rank > 0 else torch.zeros(0, dtype=torch.long)
    taken = torch.isin(mine, lower)
    return keep[~taken]


def gather_labels(
    indices: torch.Tensor, labels: torch.Tensor, n: int, group: dist.ProcessGroup | None
) -> torch.Tensor:
    """Assemble the global (T, N) label bank from every rank's ``indices`` (n,) and ``labels`` (T, n).

    Costs one all-gather of (T + 1) x n integers per rank. Entries no rank labelled are -1.
    """
    out = torch.full((labels.shape[0], n), -1, dtype=torch.long)
    if group is None:
        out[:, indices] = labels.cpu()
        return out
    world = dist.get_world_size(group)
    packed = torch.cat([indices[None].cpu(), labels.cpu()], 0)
    sizes = [torch.zeros(1, dtype=torch.long) for _ in range(world)]
    dist.all_gather(sizes, torch.tensor([packed.shape[1]]), group=group)
    longest = int(max(s.item() for s in sizes))
    padded = torch.full((packed.shape[0], longest), -1, dtype=torch.long)
    padded[:, : packed.shape[1]] = packed
    gathered = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(gathered, padded, group=group)
    for part, size in zip(gathered, sizes):
        part = part[:, : int(size.item())]
        out[:, part[0]] = part[1:]
    return out
