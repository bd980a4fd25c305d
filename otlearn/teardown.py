"""Release the default process group when a Lightning worker process exits.

Lightning leaves a DDP run's default process group alive after ``fit``/``test``. With gloo, its
threads can then abort the process during interpreter finalisation: a SIGABRT ("terminate called
without an active exception") after a successful run, now and then (pytorch/pytorch#179291). In a
``ddp_spawn`` run the aborting process is a spawned worker, where no code of the caller's runs
after the trainer returns; :class:`ReleaseProcessGroupAtExit` registers
:func:`otlearn.comm.release_process_group` with ``atexit`` in each worker, so it runs after all of
Lightning's own teardown. ``otlearn fit/validate/test/predict`` add it by themselves.
"""
from __future__ import annotations

import atexit

import pytorch_lightning as pl
import torch.distributed as dist

from otlearn.comm import release_process_group

_registered = False


def _register_once() -> None:
    global _registered
    if not _registered:
        atexit.register(release_process_group)
        _registered = True


class ReleaseProcessGroupAtExit(pl.Callback):
    """Destroy the default process group at the exit of every process that joined one.

    Registers the handler at ``setup`` (each spawned worker runs it after the group is up), once
    per process however many trainers run there; a process without a group registers nothing.
    """

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if dist.is_available() and dist.is_initialized():
            _register_once()


__all__ = ["ReleaseProcessGroupAtExit"]
