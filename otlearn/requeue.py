"""Preemption-safe SLURM requeue for multi-process training.

Lightning's own SLURM handler saves the HPC checkpoint *inside* the SIGUSR1 handler. A checkpoint
save is collective (a barrier), and a signal handler runs wherever the main thread happens to be;
when ``scancel --signal=USR1`` reaches the ranks while they are in other collectives (e.g. the
all-gathers of a SeLa label round), the ranks enter different collectives and the job hangs.

:class:`SlurmRequeue` splits the work: the handler only records the request (no I/O, no
collectives); at the end of every training batch — a point every rank reaches in the same
order — the ranks all-reduce the request, and if any rank was signalled they all save (at the
epoch end instead when it was the epoch's last batch)
``<default_root_dir>/hpc_ckpt_<n>.ckpt`` together and rank 0 runs ``scontrol requeue``. The
requeued job's ``otlearn fit`` resumes from the newest HPC checkpoint (Lightning's resume rule).
Installed before Lightning registers its handlers, it also keeps Lightning's unsafe handler off.
``otlearn fit`` adds it by itself when it runs under SLURM.
"""
from __future__ import annotations

import glob
import os
import re
import signal
import subprocess

import pytorch_lightning as pl
from lightning_fabric.plugins.environments import SLURMEnvironment
from pytorch_lightning.utilities.rank_zero import rank_zero_info, rank_zero_warn


class SlurmRequeue(pl.Callback):
    """Save an HPC checkpoint and requeue the SLURM job at the first batch end after ``signum``.

    Args:
        signum: the signal SLURM sends before the time limit (``#SBATCH --signal=SIGUSR1@90``).
        check_every_n_steps: how often the ranks all-reduce the request (one int each time).
    """

    def __init__(self, signum: int = int(signal.SIGUSR1), check_every_n_steps: int = 1) -> None:
        if check_every_n_steps < 1:
            raise ValueError(f"check_every_n_steps must be >= 1, got {check_every_n_steps}")
        self.signum = int(signum)
        self.check_every_n_steps = check_every_n_steps
        self.requested = False
        self._pending_epoch_end = False
        self._previous = None
        self._installed = False

    def _on_signal(self, signum, frame) -> None:  # noqa: ARG002 - signal handler signature
        self.requested = True  # only a flag: the collective work happens at the next batch end

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit" or not SLURMEnvironment.detect() or self._installed:
            return
        self.requested = False
        self._previous = signal.signal(self.signum, self._on_signal)
        self._installed = True

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self._installed:
            signal.signal(self.signum, self._previous if self._previous is not None else signal.SIG_DFL)
            self._installed = False

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if not self._installed or trainer.global_step % self.check_every_n_steps:
            return
        if trainer.strategy.reduce_boolean_decision(self.requested, all=False):
            self.requested = False
            if batch_idx + 1 >= trainer.num_training_batches:
                # Lightning resumes a checkpoint taken at the last batch end without calling the next
                # epoch's on_train_epoch_start; at the epoch end the resume is clean.
                self._pending_epoch_end = True
            else:
                self.checkpoint_and_requeue(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._pending_epoch_end:
            self._pending_epoch_end = False
            self.checkpoint_and_requeue(trainer)

    def checkpoint_and_requeue(self, trainer: pl.Trainer) -> str:
        """Save ``hpc_ckpt_<n>.ckpt`` on every rank together; rank 0 requeues the job. Returns the path."""
        rank_zero_info(f"SlurmRequeue: signal {self.signum} received; saving an HPC checkpoint and requeueing")
        for logger in trainer.loggers:
            logger.finalize("finished")
        path = hpc_checkpoint_path(trainer.default_root_dir)
        trainer.save_checkpoint(path)
        if trainer.is_global_zero:
            array_job = os.environ.get("SLURM_ARRAY_JOB_ID")
            job_id = f"{array_job}_{os.environ['SLURM_ARRAY_TASK_ID']}" if array_job else os.environ["SLURM_JOB_ID"]
            if not re.fullmatch(r"[0-9_]+", job_id):
                raise ValueError(f"unexpected SLURM job id {job_id!r}")
            result = subprocess.call(["scontrol", "requeue", job_id])
            if result == 0:
                rank_zero_info(f"SlurmRequeue: requeued SLURM job {job_id} (checkpoint {path})")
            else:
                rank_zero_warn(f"SlurmRequeue: `scontrol requeue {job_id}` failed with code {result}")
        return path


def hpc_checkpoint_path(root: str) -> str:
    """``<root>/hpc_ckpt_<n>.ckpt`` with n one above the highest present (Lightning's naming)."""
    taken = [int(m.group(1)) for p in glob.glob(os.path.join(root, "hpc_ckpt_*.ckpt"))
             if (m := re.search(r"hpc_ckpt_(\d+)\.ckpt$", p))]
    return os.path.join(root, f"hpc_ckpt_{max(taken, default=0) + 1}.ckpt")
