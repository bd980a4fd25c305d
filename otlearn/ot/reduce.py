"""How column statistics are combined across the processes that share the rows.

The solver never communicates anything of size N: each iteration all-reduces K-vectors
(a SUM of column sums, occasionally a MAX of column maxima). :class:`LocalReducer` is the
single-process case; :class:`GroupReducer` wraps a ``torch.distributed`` process group.
"""
from __future__ import annotations

from typing import Any, Protocol

import torch
import torch.distributed as dist


class ColumnReducer(Protocol):
    """Collective operations the solver needs; in-place on K-sized tensors."""

    rank: int
    world_size: int

    def sum_(self, tensor: torch.Tensor) -> torch.Tensor: ...

    def max_(self, tensor: torch.Tensor) -> torch.Tensor: ...

    def all_gather(self, tensor: torch.Tensor) -> list[torch.Tensor]: ...

    def all_gather_object(self, obj: Any) -> list[Any]: ...


class LocalReducer:
    """One process holds every row: every collective is the identity."""

    rank = 0
    world_size = 1

    def sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor

    def max_(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor

    def all_gather(self, tensor: torch.Tensor) -> list[torch.Tensor]:
        return [tensor]

    def all_gather_object(self, obj: Any) -> list[Any]:
        return [obj]


class GroupReducer:
    """Rows sharded over the processes of ``group``; column statistics are all-reduced."""

    def __init__(self, group: dist.ProcessGroup) -> None:
        if not dist.is_available() or not dist.is_initialized():
            raise ValueError(
                "group was given but torch.distributed is not initialized; "
                "call torch.distributed.init_process_group first or pass group=None"
            )
        self.group = group
        self.rank = dist.get_rank(group)
        self.world_size = dist.get_world_size(group)

    def sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM, group=self.group)
        return tensor

    def max_(self, tensor: torch.Tensor) -> torch.Tensor:
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX, group=self.group)
        return tensor

    def all_gather(self, tensor: torch.Tensor) -> list[torch.Tensor]:
        out = [torch.empty_like(tensor) for _ in range(self.world_size)]
        dist.all_gather(out, tensor.contiguous(), group=self.group)
        return out

    def all_gather_object(self, obj: Any) -> list[Any]:
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj, group=self.group)
        return out


def make_reducer(group: dist.ProcessGroup | None) -> ColumnReducer:
    """``None`` is a single process (even when a default group exists): distributed is explicit."""
    if group is None:
        return LocalReducer()
    return GroupReducer(group)
