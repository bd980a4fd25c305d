"""A SelfLabelCallback that preempts its own SLURM job inside a label round (test helper).

At the label round of ``signal_epoch`` in the job's first run, after the label pass and before the
solves, rank 0 asks SLURM to send SIGUSR1 to every task of the job and then waits a moment: the
other ranks are by then inside the solver's all-reduces when the signal reaches them — the case
where a handler that saves a checkpoint inside the signal handler deadlocks.
"""
from __future__ import annotations

import os
import subprocess
import time

from otlearn.sela import SelfLabelCallback


class SignalDuringLabelRound(SelfLabelCallback):
    def __init__(self, signal_epoch: int = 1, pause: float = 3.0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.signal_epoch = signal_epoch
        self.pause = pause

    def _fill_bank(self, trainer, pl_module, n_heads, loaders=None, bar=None):
        bank = super()._fill_bank(trainer, pl_module, n_heads, loaders, bar)
        first_run = os.environ.get("SLURM_RESTART_COUNT", "0") == "0"
        if trainer.current_epoch == self.signal_epoch and first_run and trainer.global_rank == 0:
            job = os.environ["SLURM_JOB_ID"]
            sent = subprocess.run(["scancel", "--signal=USR1", job], capture_output=True, text=True)
            print(f"SignalDuringLabelRound: sent SIGUSR1 to job {job} inside the label round of epoch "
                  f"{trainer.current_epoch} (scancel exit {sent.returncode} {sent.stderr.strip()})", flush=True)
            time.sleep(self.pause)  # the other ranks wait in the solver's all-reduce meanwhile
        return bank
