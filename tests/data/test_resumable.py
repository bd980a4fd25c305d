"""A checkpoint taken inside an epoch resumes exactly: the same batches, augmentations, labels and weights
as an uninterrupted run (one process and two DDP processes)."""
import warnings

import pytest
import pytorch_lightning as pl
import torch

from otlearn.data import DigitsDataModule
from otlearn.data.resumable import ResumableLoader, batches_into_epoch
from otlearn.ot import SinkhornSolver
from otlearn.sela import SelfLabelCallback, SelfLabeling
from otlearn.teardown import ReleaseProcessGroupAtExit

TINY = dict(backbone="small_cnn", num_clusters=10, num_heads=2, lr=0.05, backbone_kwargs={"width": 8})


class StopAtStep(pl.Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            trainer.should_stop = True


class SeenBatches(pl.Callback):
    """global step → the dataset indices and the image checksum of its batch."""

    def __init__(self) -> None:
        self.seen = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.seen[trainer.global_step] = (batch["index"].tolist(), float(batch["image"].double().sum()))


def _fit(root, epochs, devices=1, ckpt=None, extra=()):
    pl.seed_everything(0)
    model = SelfLabeling(**TINY)
    sela = SelfLabelCallback(lam=10.0, solver=SinkhornSolver(tol=1e-2), seed=0)
    seen = SeenBatches()
    trainer = pl.Trainer(max_epochs=epochs, accelerator="cpu", devices=devices, strategy="ddp_spawn" if devices > 1 else "auto",
                         callbacks=[sela, seen, ReleaseProcessGroupAtExit(), *extra], logger=False, default_root_dir=root, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0, deterministic=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(model, DigitsDataModule(batch_size=256, seed=0), ckpt_path=ckpt)
    if devices > 1:  # ddp_spawn trains copies: read the results back from the last checkpoint
        if not (root / "last.ckpt").exists():
            return None, None, None
        state = torch.load(f"{root}/last.ckpt", weights_only=False)
        model.load_state_dict(state["state_dict"])
        sela = next(v for k, v in state["callbacks"].items() if k.startswith("SelfLabelCallback"))["labels"]
        return model, sela, None
    return model, sela.labels, seen.seen


@pytest.mark.parametrize("stop_step", [7, 3])
def test_mid_epoch_checkpoint_resumes_exactly(tmp_path, stop_step):
    """Digits: 5 batches of 256 per epoch; a checkpoint at step 7 (epoch 1, after its 2nd batch) or 3 (epoch 0)."""
    full_model, full_labels, full_seen = _fit(tmp_path / "full", 3)
    steps = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "part", every_n_train_steps=stop_step, save_top_k=-1,
                                         filename="{step}")
    _fit(tmp_path / "part", 3, extra=[steps, StopAtStep(stop_step + 1)])
    model, labels, seen = _fit(tmp_path / "resumed", 3, ckpt=str(tmp_path / "part" / f"step={stop_step}.ckpt"))
    assert sorted(seen) == list(range(stop_step, 15))
    for step in seen:  # the same batch, under the same augmentation, at every resumed step
        assert seen[step] == full_seen[step], step
    assert torch.equal(labels, full_labels)
    for a, b in zip(model.parameters(), full_model.parameters()):
        assert torch.equal(a, b)


def test_two_process_mid_epoch_resume_equals_the_uninterrupted_run(tmp_path):
    """Under DDP the skip applies to each rank's distributed batches (3 per rank and epoch here)."""
    last = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "full", save_last=True, save_top_k=0)
    full_model, full_labels, _ = _fit(tmp_path / "full", 2, devices=2, extra=[last])
    steps = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "part", every_n_train_steps=4, save_top_k=-1, filename="{step}")
    _fit(tmp_path / "part", 2, devices=2, extra=[steps, StopAtStep(5)])
    resumed_last = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "resumed", save_last=True, save_top_k=0)
    model, labels, _ = _fit(tmp_path / "resumed", 2, devices=2, ckpt=str(tmp_path / "part" / "step=4.ckpt"),
                            extra=[resumed_last])
    assert torch.equal(labels, full_labels)
    for a, b in zip(model.parameters(), full_model.parameters()):
        assert torch.equal(a, b)


def test_position_rule_and_plain_use():
    class T:
        num_training_batches, accumulate_grad_batches, limit_train_batches = 5, 1, 1.0
        global_step = 7
    assert batches_into_epoch(T, 5) == 2
    T.accumulate_grad_batches, T.global_step = 2, 4  # 3 optimizer steps per epoch of 5 batches
    assert batches_into_epoch(T, 5) == 2
    T.num_training_batches, T.limit_train_batches, T.accumulate_grad_batches, T.global_step = float("inf"), 3, 1, 4
    assert batches_into_epoch(T, 5) == 1  # before Lightning counts: the loader's length under the limit
    assert batches_into_epoch(None, 5) == 0
    loader = ResumableLoader(list(range(10)), batch_size=3)  # no trainer: a plain DataLoader
    assert [b.tolist() for b in loader] == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]
    class At:
        num_training_batches, accumulate_grad_batches, global_step, current_epoch = 4, 1, 6, 1
    skipping = ResumableLoader(list(range(10)), batch_size=3, trainer=lambda: At)
    assert [b.tolist() for b in skipping] == [[6, 7, 8], [9]] and len(skipping) == 4
