"""Instruments for proving the GPU path on a CPU.

* :class:`HostSyncCounter` (a ``TorchDispatchMode``) counts the ops that would block a CUDA stream:
  ``_local_scalar_dense`` (behind ``bool()``/``float()``/``.item()``), ``nonzero``, ``unique``,
  ``masked_select`` and boolean-mask indexing and assignment (:func:`otlearn.comm.host_values`, the
  library's one explicit device-to-host copy, shows here as one ``_local_scalar_dense``).
* :class:`AutocastSpy` (a ``TorchFunctionMode``, where ``torch.is_autocast_enabled`` is visible)
  records, for every matrix product called, whether autocast was active.
"""
from __future__ import annotations

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten
_BLOCKING = {
    aten._local_scalar_dense, aten.nonzero, aten._unique, aten._unique2, aten.unique_dim,
    aten.unique_consecutive, aten.masked_select,
}
_INDEXING = {aten.index, aten.index_put, aten.index_put_, aten._index_put_impl_}


def _has_bool_index(args) -> bool:
    indices = args[1] if len(args) > 1 else ()
    return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in (indices or ()) if i is not None)


class HostSyncCounter(TorchDispatchMode):
    """``with HostSyncCounter() as c: ...`` then ``c.count`` and ``c.ops`` (names, in order)."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []

    @property
    def count(self) -> int:
        return len(self.ops)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        packet = func.overloadpacket
        if packet in _BLOCKING:
            self.ops.append(str(packet))
        elif packet in _INDEXING and _has_bool_index(args):
            self.ops.append(f"{packet}[bool]")
        return func(*args, **kwargs)


_MATMULS = {"mm", "mv", "matmul", "addmv", "addmv_", "addmm", "addmm_", "bmm", "baddbmm", "__matmul__",
            "__rmatmul__", "einsum", "cdist", "linear", "dot", "tensordot"}


class AutocastSpy(TorchFunctionMode):
    """Records ``(name, autocast_active)`` for every matrix product called inside the block."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, bool]] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in _MATMULS:
            active = torch.is_autocast_enabled("cpu") or torch.is_autocast_enabled("cuda")
            self.calls.append((name, active))
        return func(*args, **(kwargs or {}))

    @property
    def under_autocast(self) -> list[str]:
        return [name for name, active in self.calls if active]
