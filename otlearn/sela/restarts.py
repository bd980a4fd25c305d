"""Restarts of self-labelling, the one kept chosen by its final self-labelling loss (label-free).

Self-labelling is non-convex in the partition: a run settles early (on digits by about epoch 20–40) into
one equal-size partition and keeps it, and which one depends on the seed and on floating-point rounding.
The partitions that split a class by style and merge two others are the ones the network fits worse:
over 58 digits runs of earlier sessions (balanced and long-tailed, several augmentations) the final
epoch's mean cross-entropy against the self-labels ranks the runs' held-out NMI (Spearman ρ = −0.61;
within each group of 3–5 seeds of one configuration the lowest-loss run was the best or second best).
So, as k-means keeps the lowest inertia of ``n_init`` starts, :func:`best_of_restarts` fits R restarts and
keeps the lowest **self-labelling loss**

    L = (1/T) Σ_t mean_i CE(logits_t(x_i), y_{t,i}),

the epoch mean of :class:`~otlearn.sela.SelfLabeling`'s ``train/loss`` over the last epoch (T heads, labels
``y`` of the callback's last round, augmented training views). No class label is used. Cost: R fits. The
criterion is imperfect: a restart of lower loss can hold the worse partition (``benchmarks/RESULTS.md``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Generic, Sequence, TypeVar

import pytorch_lightning as pl

RESTART_SEED_STRIDE = 1000
"""Restart r of seed s runs under seed ``s + RESTART_SEED_STRIDE * r`` (restart 0 is the plain seed)."""

Run = TypeVar("Run")


def restart_seeds(seed: int, restarts: int) -> list[int]:
    """The ``restarts`` seeds of one run: ``[seed, seed + 1000, seed + 2000, ...]``."""
    if int(restarts) != restarts or restarts < 1:
        raise ValueError(f"restarts must be a positive integer, got {restarts!r}")
    return [seed + RESTART_SEED_STRIDE * r for r in range(int(restarts))]


def self_label_loss(trainer: pl.Trainer, key: str = "train/loss") -> float:
    """The finished fit's last-epoch mean self-labelling loss (``trainer.callback_metrics[key]``, logged
    per epoch by :class:`~otlearn.sela.SelfLabeling`; all-reduced over processes by ``sync_dist``)."""
    if key not in trainer.callback_metrics:
        raise ValueError(f"the trainer logged no {key!r} (logged: {sorted(trainer.callback_metrics)}); "
                         "the module must log its epoch-mean self-labelling loss under that key")
    value = float(trainer.callback_metrics[key])
    if not math.isfinite(value):
        raise ValueError(f"the self-labelling loss {key!r} is {value}: the run diverged")
    return value


@dataclass
class RestartSelection(Generic[Run]):
    """The outcome of :func:`best_of_restarts`: every restart's seed, loss and run, and which one is kept."""

    seeds: list[int]
    losses: list[float]
    runs: list[Run] = field(repr=False)
    best: int

    @property
    def chosen(self) -> Run:
        """The kept run (the lowest loss; the first of equals)."""
        return self.runs[self.best]


def best_of_restarts(fit: Callable[[int], Run], seeds: Sequence[int], loss: Callable[[Run], float]) -> RestartSelection[Run]:
    """Fit one run per seed (``fit(seed)``) and keep the one of lowest ``loss(run)``.

    Args:
        fit: trains and evaluates one run from a seed (e.g. a whole Lightning fit).
        seeds: one per restart (:func:`restart_seeds`).
        loss: a label-free criterion of a finished run, lower is better (e.g. :func:`self_label_loss`).

    Raises:
        ValueError: no seeds, or a restart's loss that is not a finite number.
    """
    seeds = list(seeds)
    if not seeds:
        raise ValueError("best_of_restarts needs at least one seed")
    runs, losses = [], []
    for seed in seeds:
        run = fit(seed)
        value = float(loss(run))
        if not math.isfinite(value):
            raise ValueError(f"restart with seed {seed}: loss {value} is not a finite number")
        runs.append(run)
        losses.append(value)
    best = losses.index(min(losses))  # the first of equal losses
    return RestartSelection(seeds=seeds, losses=losses, runs=runs, best=best)
