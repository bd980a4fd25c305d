"""CodeMarginalSchedule: time the quantizers' ρ annealing to the Lightning run's length.

:class:`~otlearn.vq.OTVectorQuantizer` anneals its code-marginal strength from ``b_penalty`` (ρ, 3 by
default) to ``b_penalty_end`` (0.01) over T training steps, ``ρ_t = ρ (ρ_end/ρ)^min(t/T, 1)``. With
``b_penalty_anneal_steps="auto"`` (the default) T is the run's length, which only the trainer knows:
this callback sets it at fit start on every such quantizer of the module. :class:`~otlearn.vq.VQAutoencoder`
does the same itself; add the callback to any other LightningModule that holds quantizers.
"""
from __future__ import annotations

import math
import warnings

import pytorch_lightning as pl
from torch import nn

from otlearn.vq.quantizer import OTVectorQuantizer


def run_training_steps(trainer: pl.Trainer) -> int | None:
    """Training forward passes of the whole run: optimizer steps × ``accumulate_grad_batches``
    (``trainer.estimated_stepping_batches``: epochs, ``max_steps`` and ``limit_train_batches`` included);
    ``None`` when the run has no end (``max_epochs=-1`` and ``max_steps=-1``)."""
    steps = trainer.estimated_stepping_batches
    if not math.isfinite(steps) or steps < 1:
        return None
    return int(steps) * max(int(trainer.accumulate_grad_batches), 1)


def schedule_code_marginals(trainer: pl.Trainer, module: nn.Module) -> list[OTVectorQuantizer]:
    """Set T on each quantizer of ``module`` whose ``b_penalty_anneal_steps`` is ``"auto"``; returns them.

    A run without an end leaves them at constant ρ (the quantizer warns at its first step)."""
    quantizers = [m for m in module.modules() if isinstance(m, OTVectorQuantizer) and m.anneal_steps_from_run]
    if not quantizers:
        return quantizers
    steps = run_training_steps(trainer)
    if steps is None:
        warnings.warn("CodeMarginalSchedule: the run has no end (max_epochs=-1, max_steps=-1), so the quantizers' ρ "
                      "cannot anneal over it and stays constant; set max_epochs or max_steps, or b_penalty_anneal_steps=N",
                      stacklevel=2)
        return quantizers
    for quantizer in quantizers:
        quantizer.set_anneal_steps(steps)
    return quantizers


class CodeMarginalSchedule(pl.Callback):
    """At fit start, give every :class:`OTVectorQuantizer` with ``b_penalty_anneal_steps="auto"`` the run's
    training-step count, so ρ anneals from ``b_penalty`` to ``b_penalty_end`` over exactly this run.

    Stateless: the step count lives in each quantizer's ``train_steps`` buffer (in the checkpoint), and a
    resumed run recomputes the same T from its trainer."""

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        schedule_code_marginals(trainer, pl_module)
