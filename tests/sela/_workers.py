"""Per-rank functions for the distributed SeLa tests."""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler

from otlearn.ot import SinkhornSolver
from otlearn.sela.labeling import assign_labels


def label_round_padded(rank: int, world_size: int, logits: list, previous, lam: float, rounding: str,
                       b_penalty=None, priors=None):
    """Each rank takes the indices a padding DistributedSampler gives it (duplicates included)."""
    n = previous.shape[1]
    sampler = DistributedSampler(range(n), num_replicas=world_size, rank=rank, shuffle=True, seed=3)
    idx = torch.tensor(list(iter(sampler)), dtype=torch.long)
    banks = [lg[idx].clone() for lg in logits]
    solver = SinkhornSolver(tol=1e-6, max_iter=5000)
    bank, heads, pots = assign_labels(idx, banks, previous, [None] * len(logits), lam, solver, dist.group.WORLD,
                                      rounding=rounding, dtype=torch.float64, b_penalty=b_penalty, priors=priors)
    return bank.numpy(), [p.numpy() for p in pots], heads, len(idx)


def smooth_padded(rank: int, world_size: int, probs: list, neighbours, alpha: float, steps: int):
    """Each rank smooths the rows a padding DistributedSampler gives it (duplicates included)."""
    from otlearn.comm import Communicator
    from otlearn.sela import NeighbourSmoothing, SelfLabelCallback

    n = neighbours.shape[0]
    sampler = DistributedSampler(range(n), num_replicas=world_size, rank=rank, shuffle=True, seed=5)
    idx = torch.tensor(list(iter(sampler)), dtype=torch.long)
    banks = [p[idx].log().float() for p in probs]
    cb = SelfLabelCallback(smoothing=NeighbourSmoothing(neighbours, alpha=alpha, steps=steps))
    out = cb._smooth(idx, banks, Communicator(dist.group.WORLD))
    return idx.numpy(), [o.numpy() for o in out]
