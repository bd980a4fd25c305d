"""SlurmRequeue: the signal only sets a flag; the checkpoint and requeue happen at the next batch end."""
import os
import signal

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from otlearn.requeue import SlurmRequeue, hpc_checkpoint_path


class _Tiny(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)
        self.signal_at_step = 3
        self.steps_seen_in_handler = []

    def training_step(self, batch, batch_idx):
        if self.global_step == self.signal_at_step:
            os.kill(os.getpid(), signal.SIGUSR1)  # arrives mid-step, as SLURM's would
        return self.layer(batch[0]).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_signal_leads_to_one_checkpoint_and_one_requeue_at_the_batch_end(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "scontrol.log"
    (bin_dir / "scontrol").write_text(f"#!/bin/sh\necho \"$@\" >> {record}\n")
    (bin_dir / "scontrol").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    for key, value in {"SLURM_NTASKS": "1", "SLURM_JOB_NAME": "otlearn", "SLURM_JOB_ID": "4242",
                       "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODEID": "0"}.items():
        monkeypatch.setenv(key, value)
    previous = signal.getsignal(signal.SIGUSR1)
    data = DataLoader(TensorDataset(torch.randn(40, 4)), batch_size=4)
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(tmp_path),
                         callbacks=[SlurmRequeue()])
    trainer.fit(_Tiny(), data)
    saved = torch.load(tmp_path / "hpc_ckpt_1.ckpt", weights_only=False)
    assert saved["global_step"] == 4  # saved at the end of the signalled batch (step 3), not inside the handler
    assert record.read_text().split() == ["requeue", "4242"]
    assert not (tmp_path / "hpc_ckpt_2.ckpt").exists()
    assert signal.getsignal(signal.SIGUSR1) == previous  # handler restored after fit


def test_hpc_checkpoint_numbering(tmp_path):
    assert hpc_checkpoint_path(str(tmp_path)).endswith("hpc_ckpt_1.ckpt")
    (tmp_path / "hpc_ckpt_3.ckpt").write_text("")
    assert hpc_checkpoint_path(str(tmp_path)).endswith("hpc_ckpt_4.ckpt")


class _Epochs(pl.Callback):
    def __init__(self):
        self.starts = []

    def on_train_epoch_start(self, trainer, pl_module):
        self.starts.append(trainer.current_epoch)


def test_a_signal_in_the_last_batch_checkpoints_at_the_epoch_end_and_resumes_every_epoch_start(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "scontrol").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    for key, value in {"SLURM_NTASKS": "1", "SLURM_JOB_NAME": "otlearn", "SLURM_JOB_ID": "7",
                       "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODEID": "0"}.items():
        monkeypatch.setenv(key, value)
    data = DataLoader(TensorDataset(torch.randn(20, 4)), batch_size=4)  # 5 batches per epoch
    model = _Tiny()
    model.signal_at_step = 9  # the last batch of epoch 1
    common = dict(max_epochs=4, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                  enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(tmp_path))

    class _StopAfterCheckpoint(pl.Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            if (tmp_path / "hpc_ckpt_1.ckpt").exists():
                trainer.should_stop = True  # SLURM would kill the job here

    trainer = pl.Trainer(callbacks=[SlurmRequeue(), _StopAfterCheckpoint()], **common)
    trainer.fit(model, data)
    assert torch.load(tmp_path / "hpc_ckpt_1.ckpt", weights_only=False)["global_step"] == 10  # end of epoch 1
    epochs = _Epochs()
    model.signal_at_step = -1
    pl.Trainer(callbacks=[epochs], **common).fit(model, data, ckpt_path=str(tmp_path / "hpc_ckpt_1.ckpt"))
    assert epochs.starts == [2, 3]
