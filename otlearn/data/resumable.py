"""Exact mid-epoch resumption of a training loader.

A checkpoint taken inside an epoch (``ModelCheckpoint(every_n_train_steps=…)``, or
:class:`~otlearn.requeue.SlurmRequeue` at the first batch end after a preemption signal) resumes in
Lightning at the next optimizer step, but a plain DataLoader starts its epoch again from the first
batch, and Lightning does not call ``on_train_epoch_start`` for the resumed epoch: the resumed run
trains on batches it already saw (under the previous epoch's augmentation stream) and never on the
rest, and ends with other weights than an uninterrupted run.

:class:`ResumableLoader` asks its trainer at the start of every iteration where it is: it sets its
dataset's epoch (``dataset.set_epoch(trainer.current_epoch)``, for per-epoch augmentation streams)
and starts ``(global_step mod steps per epoch) × accumulate_grad_batches`` batches into the epoch —
Lightning's own measure of a mid-epoch checkpoint — skipping the earlier batches by index only (no
sample is loaded). The epoch's order must be reproducible (a sampler seeded by the epoch, as
:class:`~otlearn.data.indexed.EpochShuffleSampler` and Lightning's DistributedSampler are). Under DDP
Lightning re-creates the loader with a distributed sampler; the skip applies to that loader's
batches, after the distribution.
"""
from __future__ import annotations

import itertools
import math
from typing import Any, Callable, Iterator

from torch.utils.data import DataLoader


def trainer_of(datamodule: Any) -> Callable[[], Any]:
    """``trainer=`` for a datamodule's :class:`ResumableLoader`: its trainer, read when an iteration starts
    (``None`` outside a fit)."""
    return lambda: getattr(datamodule, "trainer", None)


def training_batches(trainer: Any, loader_length: int) -> int:
    """Batches per training epoch: the trainer's count, or (before Lightning has set it) the loader's
    length under ``limit_train_batches``."""
    n = getattr(trainer, "num_training_batches", float("inf"))
    if n and n != float("inf"):
        return int(n)
    limit = getattr(trainer, "limit_train_batches", 1.0)
    if isinstance(limit, int) and not isinstance(limit, bool):
        return min(loader_length, limit)
    return int(loader_length * float(limit if limit is not None else 1.0))


def batches_into_epoch(trainer: Any, loader_length: int) -> int:
    """Training batches of the current epoch the trainer has stepped over (0 at an epoch start)."""
    if trainer is None:
        return 0
    n = training_batches(trainer, loader_length)
    if n <= 0:
        return 0
    accumulate = max(1, int(getattr(trainer, "accumulate_grad_batches", 1)))
    steps_per_epoch = math.ceil(n / accumulate)
    return min(n, (int(trainer.global_step) % steps_per_epoch) * accumulate)


class _SkipFirst:
    """A batch sampler without its first ``skip`` batches (indices only)."""

    def __init__(self, batch_sampler, skip: int) -> None:
        self.batch_sampler, self.skip = batch_sampler, skip

    def __len__(self) -> int:
        return max(0, len(self.batch_sampler) - self.skip)

    def __iter__(self) -> Iterator:
        return itertools.islice(iter(self.batch_sampler), self.skip, None)


class ResumableLoader(DataLoader):
    """A training DataLoader that resumes inside an epoch exactly (see the module docstring).

    Args:
        *args, **kwargs: as :class:`torch.utils.data.DataLoader` (map-style dataset, automatic batching).
        trainer: returns the trainer the loader serves (``None``: behave as a plain DataLoader), e.g.
            ``lambda: datamodule.trainer``.

    It implements Lightning's stateful-loader interface (``state_dict``/``load_state_dict``), which tells
    Lightning that a mid-epoch checkpoint resumes exactly; the position comes from the restored trainer,
    so the state itself is empty.
    """

    def __init__(self, *args: Any, trainer: Callable[[], Any] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.trainer = trainer
        self._starting = 0

    @property
    def _index_sampler(self):  # read by each new iterator; DataLoader's own otherwise
        base = DataLoader._index_sampler.fget(self)
        return _SkipFirst(base, self._starting) if self._starting and self._auto_collation else base

    def __iter__(self):
        trainer = self.trainer() if self.trainer is not None else None
        skip = 0
        if trainer is not None:
            if hasattr(self.dataset, "set_epoch"):
                self.dataset.set_epoch(int(trainer.current_epoch))
            skip = batches_into_epoch(trainer, len(self))
            skip = skip if 0 < skip < len(self) else 0
        self._starting = skip
        try:
            return super().__iter__()
        finally:
            self._starting = 0

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state_dict: dict) -> None:
        """Nothing to load: the position comes from the restored trainer."""
