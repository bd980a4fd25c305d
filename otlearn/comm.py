"""The one module of otlearn that calls ``torch.distributed``.

Every collective of the library goes through a :class:`Communicator`: the solver's K-vector
reductions, balanced rounding's exchange of candidate moves, the SeLa label bank, the quantizer's
normalisation statistics and EMA codebook, the codebook monitor, feature gathering for evaluation
and the panoptic-quality sync. It decides the communication device once per group:

* NCCL takes CUDA tensors only: the current CUDA device;
* gloo: the CPU;
* any other backend (MPI, a composite ``"cpu:gloo,cuda:nccl"``): each tensor stays where it is.

Each tensor is moved to that device for the collective and the result is moved back to the
tensor's own device, so callers keep their tensors wherever they live (labels on the CPU, scores
on the GPU) and never send a CPU tensor to NCCL.

Host reads (a value the Python code must branch on) go through :func:`host_values`: it is the
one explicit device-to-host copy, so a GPU run synchronises only where the code says so.
Nothing on a hot path pickles: variable-size gathers are tensor collectives (sizes first, then
padded rows); :meth:`Communicator.all_gather_object` exists for error paths only.
"""
from __future__ import annotations

from typing import Any, Literal, Sequence

import torch
import torch.distributed as dist

ReduceOp = Literal["sum", "max", "min"]


def host_values(tensor: torch.Tensor) -> list:
    """``tensor`` as a Python list, through one device-to-host copy (one sync on a GPU).

    The host copy's first element is then read with ``.item()``: free (it is already on the host),
    but it shows the read to a ``TorchDispatchMode`` as one ``_local_scalar_dense`` also on a
    CPU-only machine, where tests count host reads.
    """
    host = tensor.cpu()
    if host.numel():
        (host if host.dim() == 1 else host.reshape(-1))[0].item()
    return host.tolist()


def default_group() -> dist.ProcessGroup | None:
    """The default (world) group when ``torch.distributed`` is initialised with more than one
    process, else ``None`` (one process: every collective is the identity)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return dist.group.WORLD
    return None


def release_process_group() -> None:
    """Destroy the default process group if one is alive; a no-op otherwise (safe to call twice).

    Lightning leaves the group of a DDP run alive when ``fit``/``test`` end, and gloo's threads can
    then abort the process at interpreter exit after a successful run ("terminate called without an
    active exception", SIGABRT; pytorch/pytorch#179291). An aborted rank fails its ``srun`` step and
    with it a SLURM job. Call this once the run is over (``otlearn fit`` does), or add
    :class:`otlearn.teardown.ReleaseProcessGroupAtExit` for ``ddp_spawn`` workers.
    """
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def communication_device(backend: str) -> torch.device | None:
    """Where tensors must be for ``backend``'s collectives; ``None`` = wherever they are."""
    backend = str(backend).lower()
    if backend == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    if backend == "gloo":
        return torch.device("cpu")
    return None


class Communicator:
    """Collectives over the processes of ``group`` (``None``: this process alone).

    Attributes:
        rank, world_size: of this process in the group (0 and 1 for a single process).
        device: the communication device (``None`` for a single process or a backend that
            accepts tensors on any device).
    """

    def __init__(self, group: dist.ProcessGroup | None = None) -> None:
        self.group = group
        if group is None:
            self.rank, self.world_size, self.device = 0, 1, None
            return
        if not dist.is_available() or not dist.is_initialized():
            raise ValueError(
                "group was given but torch.distributed is not initialized; "
                "call torch.distributed.init_process_group first or pass group=None"
            )
        self.rank = dist.get_rank(group)
        self.world_size = dist.get_world_size(group)
        self.device = communication_device(dist.get_backend(group))

    @classmethod
    def default(cls) -> "Communicator":
        """The communicator of :func:`default_group` (the world group, or a single process)."""
        return cls(default_group())

    @property
    def distributed(self) -> bool:
        """Whether collectives run: for any explicit group, also of one process (so that a world
        of one GPU exercises NCCL); ``None`` is the identity."""
        return self.group is not None

    # ---------------------------------------------------------------- moving
    def _outbound(self, tensor: torch.Tensor) -> torch.Tensor:
        target = self.device if self.device is not None else tensor.device
        if tensor.device == target and tensor.is_contiguous():
            return tensor
        return tensor.to(device=target).contiguous()

    # ---------------------------------------------------------------- collectives
    def all_reduce_(self, tensor: torch.Tensor, op: ReduceOp = "sum") -> torch.Tensor:
        """Reduce ``tensor`` in place over the group (``sum``, ``max`` or ``min``); returns it."""
        if not self.distributed:
            return tensor
        work = self._outbound(tensor)
        dist.all_reduce(work, op=_OPS[op], group=self.group)
        if work is not tensor:
            tensor.copy_(work)
        return tensor

    def all_gather(self, tensor: torch.Tensor) -> list[torch.Tensor]:
        """Every rank's ``tensor`` (same shape on every rank), each on ``tensor``'s device."""
        if not self.distributed:
            return [tensor]
        work = self._outbound(tensor)
        parts = [torch.empty_like(work) for _ in range(self.world_size)]
        dist.all_gather(parts, work, group=self.group)
        return [p.to(tensor.device) for p in parts]

    def gather_sizes(self, size: int, device: torch.device | None = None) -> list[int]:
        """Every rank's ``size`` (a host int) as host ints: one all-gather and one host read."""
        if not self.distributed:
            return [int(size)]
        mine = torch.tensor([int(size)], dtype=torch.long, device=device or self.device or "cpu")
        return [int(v) for v in host_values(torch.cat(self.all_gather(mine)))]

    def all_gather_rows(self, *tensors: torch.Tensor) -> tuple[tuple[torch.Tensor, ...], list[int]]:
        """Concatenate every rank's rows of each tensor, ranks in order (pad, gather, trim).

        All ``tensors`` have the same number of rows on this rank (possibly 0; possibly different
        on each rank) and the same trailing shape and dtype on every rank. Returns the gathered
        tensors (on each input's device) and the row count of every rank. Costs one host read
        (the sizes) and one all-gather per tensor.
        """
        n = tensors[0].shape[0]
        if any(t.shape[0] != n for t in tensors):
            raise ValueError(f"all_gather_rows needs tensors with equal row counts, got {[t.shape[0] for t in tensors]}")
        if not self.distributed:
            return tuple(tensors), [n]
        sizes = self.gather_sizes(n, device=self.device or tensors[0].device)
        longest = max(sizes)
        out = []
        for tensor in tensors:
            padded = tensor.new_zeros((longest,) + tuple(tensor.shape[1:]))
            padded[:n] = tensor
            parts = self.all_gather(padded)
            out.append(torch.cat([part[:size] for part, size in zip(parts, sizes)]))
        return tuple(out), sizes

    def all_gather_object(self, obj: Any) -> list[Any]:
        """Pickling all-gather, for error paths only (never on a hot path)."""
        if not self.distributed:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj, group=self.group)
        return out


_OPS = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}


def resolve(group: "dist.ProcessGroup | Communicator | str | None") -> Communicator:
    """A :class:`Communicator` for ``group``: ``None`` = one process, ``"auto"`` = :func:`default_group`."""
    if isinstance(group, Communicator):
        return group
    if isinstance(group, str):
        if group != "auto":
            raise ValueError(f"group must be a ProcessGroup, None or 'auto', got {group!r}")
        return Communicator.default()
    return Communicator(group)


__all__: Sequence[str] = [
    "Communicator",
    "communication_device",
    "default_group",
    "host_values",
    "release_process_group",
    "resolve",
]
