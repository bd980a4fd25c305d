"""Extract frozen features (and head predictions) of a loader, gathered across processes."""
from __future__ import annotations

from typing import Callable

import torch
from torch.utils.data import DataLoader

from otlearn.comm import Communicator


@torch.no_grad()
def extract(
    module: torch.nn.Module,
    loader: DataLoader,
    fn: Callable[[dict], torch.Tensor],
    device: torch.device | str | None = None,
    group=None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Run ``fn(batch)`` over ``loader`` in eval mode; returns ``(outputs, targets, indices)`` on CPU.

    With an initialised process group, every rank's rows are all-gathered (tensor collectives
    through :mod:`otlearn.comm`) and de-duplicated by dataset index (DistributedSampler padding),
    then sorted by index, so all ranks return the same tensors. ``group``: the process group to
    gather over (default: the world group when initialised with several processes).
    """
    was_training = module.training
    module.eval()
    device = device or next(module.parameters()).device
    outs, targets, indices = [], [], []
    try:
        for batch in loader:
            batch = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
            outs.append(fn(batch).float().cpu())
            targets.append(batch["target"].cpu())
            indices.append(batch["index"].cpu())
    finally:
        module.train(was_training)
    out, tgt, idx = torch.cat(outs), torch.cat(targets), torch.cat(indices)
    comm = Communicator.default() if group is None else Communicator(group)
    (out, tgt, idx), _ = comm.all_gather_rows(out, tgt, idx)
    order = torch.argsort(idx, stable=True)
    out, tgt, idx = out[order], tgt[order], idx[order]
    first = torch.ones_like(idx, dtype=torch.bool)
    first[1:] = idx[1:] != idx[:-1]
    return out[first], tgt[first], idx[first]
