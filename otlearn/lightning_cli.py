"""``OtlearnCLI``: Lightning's CLI with the callbacks every ``otlearn fit/validate/test/predict`` run gets.

A module of its own (not a class local to :func:`otlearn.cli.lightning_main`) so that it pickles by
name: ``--trainer.strategy ddp_spawn`` sends the trainer, which refers to the CLI, to each spawned worker.
"""
from __future__ import annotations

import pytorch_lightning as pl
from lightning_fabric.plugins.environments import SLURMEnvironment
from pytorch_lightning.cli import LightningCLI

from otlearn.requeue import SlurmRequeue
from otlearn.teardown import ReleaseProcessGroupAtExit


def add_run_callbacks(trainer: pl.Trainer, subcommand: str) -> None:
    """Add to the config's trainer, each once, the callbacks of an ``otlearn`` run:

    * every subcommand: :class:`~otlearn.teardown.ReleaseProcessGroupAtExit`, so that each DDP worker
      (``ddp_spawn`` included) destroys its process group at exit instead of risking gloo's abort;
    * ``fit`` under SLURM: :class:`~otlearn.requeue.SlurmRequeue` (collective-safe preemption).
    """
    wanted: list[pl.Callback] = [ReleaseProcessGroupAtExit()]
    if subcommand == "fit" and SLURMEnvironment.detect():
        wanted.append(SlurmRequeue())
    for callback in wanted:
        if not any(isinstance(c, type(callback)) for c in trainer.callbacks):
            trainer.callbacks.append(callback)


class OtlearnCLI(LightningCLI):
    """:class:`~pytorch_lightning.cli.LightningCLI` that adds :func:`add_run_callbacks` before each subcommand."""

    def before_fit(self) -> None:
        add_run_callbacks(self.trainer, "fit")

    def before_validate(self) -> None:
        add_run_callbacks(self.trainer, "validate")

    def before_test(self) -> None:
        add_run_callbacks(self.trainer, "test")

    def before_predict(self) -> None:
        add_run_callbacks(self.trainer, "predict")


__all__ = ["OtlearnCLI", "add_run_callbacks"]
