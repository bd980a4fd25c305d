"""One no-grad pass of a module over a loader, and frozen features gathered across processes.

:func:`collect` is the pass every evaluation and the SeLa label round share: any batch format
(dicts, or tuples/lists such as solo-learn's ``(index, views, target)``) with the entries it needs
named by key or position. :func:`extract` gathers its output over the ranks.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Protocol, Sequence, runtime_checkable

import torch
from lightning_fabric.utilities.apply_func import move_data_to_device
from torch.utils.data import DataLoader

from otlearn.comm import Communicator

Key = str | int


@runtime_checkable
class EmbeddingModel(Protocol):
    """What :class:`~otlearn.eval.KNNEvalCallback` and :func:`evaluate_representation` need of a module."""

    def embed(self, batch: Any) -> torch.Tensor:
        """(B, D) features of ``batch``."""
        ...


def batch_entry(batch: Any, key: Key, what: str) -> torch.Tensor:
    """``batch[key]`` as a (B,) integer tensor (``what`` names it in the error)."""
    try:
        value = batch[key]
    except (KeyError, IndexError, TypeError) as err:
        raise TypeError(
            f"the batch ({type(batch).__name__}) has no {what} at {key!r}; name where batches hold it "
            f"(a dict key, or a position for tuple batches such as solo-learn's (index, views, target): 0)") from err
    if not isinstance(value, torch.Tensor) or value.dim() != 1 or value.dtype.is_floating_point:
        raise TypeError(f"batch[{key!r}] ({what}) must be a (B,) integer tensor, got {type(value).__name__} "
                        f"{tuple(getattr(value, 'shape', ()))}")
    return value


@torch.no_grad()
def collect(
    module: torch.nn.Module,
    loader: DataLoader,
    fn: Callable[[Any], torch.Tensor | Sequence[torch.Tensor]],
    entries: Mapping[str, Key],
    *,
    device: torch.device | str | None = None,
    to_cpu: bool = True,
    on_batch: Callable[[], None] | None = None,
    transfer: Callable[[Any], Any] | None = None,
) -> tuple[dict[str, torch.Tensor], list[torch.Tensor]] | None:
    """Run ``fn(batch)`` over ``loader`` with ``module`` in eval mode (restored afterwards).

    Args:
        fn: returns one (B, …) tensor or a sequence of them (e.g. one per head).
        entries: batch entries to keep, ``{name: key or position}``, each a (B,) integer tensor
            (e.g. ``{"index": "index", "target": "target"}``).
        device: where batches go (default: the module's parameters' device).
        transfer: moves a batch to the device instead (e.g. a LightningModule's ``transfer_batch_to_device``,
            so that a module's own batch types and hooks apply); default: every tensor of the collection.
        to_cpu: move the outputs to the CPU (entries always are).
        on_batch: called after each batch (progress reporting).

    Returns:
        ``(entries {name: (n,)}, outputs [(n, …) per output of fn])`` concatenated over batches, the
        outputs in float32; ``None`` when the loader yields nothing.
    """
    was_training = module.training
    module.eval()
    device = device or next(module.parameters()).device
    kept: dict[str, list[torch.Tensor]] = {name: [] for name in entries}
    outputs: list[list[torch.Tensor]] | None = None
    try:
        for batch in loader:
            batch = transfer(batch) if transfer is not None else move_data_to_device(batch, device)
            out = fn(batch)
            out = [out] if isinstance(out, torch.Tensor) else list(out)
            if outputs is None:
                outputs = [[] for _ in out]
            elif len(out) != len(outputs):
                raise ValueError(f"fn returned {len(out)} outputs for one batch and {len(outputs)} for another")
            for store, value in zip(outputs, out):
                value = value.detach().float()
                store.append(value.cpu() if to_cpu else value)
            for name, key in entries.items():
                kept[name].append(batch_entry(batch, key, name).cpu())
            if on_batch is not None:
                on_batch()
    finally:
        module.train(was_training)
    if outputs is None:
        return None
    return {name: torch.cat(values) for name, values in kept.items()}, [torch.cat(values) for values in outputs]


def extract(
    module: torch.nn.Module,
    loader: DataLoader,
    fn: Callable[[Any], torch.Tensor],
    device: torch.device | str | None = None,
    group=None,
    *,
    index_key: Key = "index",
    target_key: Key = "target",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Run ``fn(batch)`` over ``loader`` in eval mode; returns ``(outputs, targets, indices)`` on CPU.

    With an initialised process group, every rank's rows are all-gathered (tensor collectives
    through :mod:`otlearn.comm`) and de-duplicated by dataset index (DistributedSampler padding),
    then sorted by index, so all ranks return the same tensors. ``group``: the process group to
    gather over (default: the world group when initialised with several processes).
    ``index_key``/``target_key``: where batches hold indices and targets (keys or tuple positions).
    """
    collected = collect(module, loader, fn, {"index": index_key, "target": target_key}, device=device)
    if collected is None:
        raise ValueError("extract: the loader yielded no batches")
    entries, (out,) = collected
    comm = Communicator.default() if group is None else Communicator(group)
    (out, tgt, idx), _ = comm.all_gather_rows(out, entries["target"], entries["index"])
    order = torch.argsort(idx, stable=True)
    out, tgt, idx = out[order], tgt[order], idx[order]
    first = torch.ones_like(idx, dtype=torch.bool)
    first[1:] = idx[1:] != idx[:-1]
    return out[first], tgt[first], idx[first]
