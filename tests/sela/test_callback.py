"""SelfLabelCallback inside real Lightning fits: resume equality, 2-process DDP, protocol errors."""
import os
import warnings

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from otlearn.data import DigitsDataModule
from otlearn.eval import clustering_metrics, extract
from otlearn.ot import SinkhornConvergenceWarning, SinkhornSolver
from otlearn.sela import LabelSchedule, SelfLabelCallback, SelfLabeling
from otlearn.teardown import ReleaseProcessGroupAtExit

TINY = dict(backbone="small_cnn", num_clusters=10, num_heads=2, lr=0.05, backbone_kwargs={"width": 8})


def _trainer(tmp_path, max_epochs, callbacks, **kwargs):
    return pl.Trainer(
        max_epochs=max_epochs, accelerator="cpu", devices=1, callbacks=callbacks, logger=False,
        default_root_dir=tmp_path, enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
        limit_val_batches=0, deterministic=True, **kwargs,
    )


class Preempt(pl.Callback):
    """Stops the run after ``epoch`` as a preemption would (the last checkpoint is then on disk)."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch:
            trainer.should_stop = True


def _fit(tmp_path, max_epochs, ckpt_path=None, save=True, stop_after=None):
    pl.seed_everything(0)
    model = SelfLabeling(**TINY)
    dm = DigitsDataModule(batch_size=256, seed=0)
    sela = SelfLabelCallback(lam=10.0, schedule=LabelSchedule("every", every=1), solver=SinkhornSolver(tol=1e-2), seed=0)
    callbacks = [sela] + ([Preempt(stop_after)] if stop_after is not None else [])
    if save:
        callbacks.append(pl.callbacks.ModelCheckpoint(dirpath=tmp_path, save_last=True, save_top_k=0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _trainer(tmp_path, max_epochs, callbacks).fit(model, dm, ckpt_path=ckpt_path)
    return model, sela


def test_resumed_run_ends_with_the_same_labels(tmp_path):
    full_model, full = _fit(tmp_path / "full", 4)
    _, first = _fit(tmp_path / "part", 4, stop_after=1)
    ckpt = torch.load(tmp_path / "part" / "last.ckpt", weights_only=False)
    state = next(v for k, v in ckpt["callbacks"].items() if k.startswith("SelfLabelCallback"))
    assert torch.equal(state["labels"], first.labels)  # the bank is in the checkpoint
    assert [h["epoch"] for h in state["history"]] == [0, 1] and len(state["potentials"]) == 2
    resumed_model, resumed = _fit(tmp_path / "part", 4, ckpt_path=str(tmp_path / "part" / "last.ckpt"))
    assert resumed.rounds_done == [0, 1, 2, 3]
    assert torch.equal(resumed.labels, full.labels)
    for a, b in zip(resumed_model.parameters(), full_model.parameters()):
        assert torch.equal(a, b)
    for h in range(2):
        counts = torch.bincount(full.labels[h], minlength=10)
        assert counts.tolist() == [126] * 7 + [125] * 3 or sorted(counts.tolist()) == [125] * 3 + [126] * 7
    diag = full.history[-1]["heads"][0]
    assert {"iterations", "error", "smallest", "largest", "empty", "changed"} <= set(diag)


def test_initial_labels_are_a_balanced_random_permutation(tmp_path):
    _, sela = _fit(tmp_path, 1, save=False)
    assert sela.history[0]["heads"][0]["labelled"] == 1257
    cb = SelfLabelCallback(seed=3)
    labels = cb._initial_labels(1257, [10, 7])
    for h, k in enumerate([10, 7]):
        counts = torch.bincount(labels[h], minlength=k)
        assert counts.max() - counts.min() <= 1
    assert not torch.equal(labels[0], torch.arange(1257) % 10)


def _nmi(model, loader):
    pred, target, _ = extract(model, loader, lambda b: model.sela_logits(b)[0].argmax(1))
    return clustering_metrics(pred, target)["nmi"]


def test_two_process_ddp_fit_raises_nmi(tmp_path):
    pl.seed_everything(1)
    model = SelfLabeling(**TINY)
    test_loader = DataLoader(DigitsDataModule().test_dataset(), batch_size=512)
    start_nmi = _nmi(model, test_loader)
    ckpt_cb = pl.callbacks.ModelCheckpoint(dirpath=tmp_path, save_last=True, save_top_k=0)
    sela = SelfLabelCallback(lam=10.0, solver=SinkhornSolver(tol=1e-2), seed=0)
    trainer = pl.Trainer(
        max_epochs=6, accelerator="cpu", devices=2, strategy="ddp_spawn", callbacks=[sela, ckpt_cb, ReleaseProcessGroupAtExit()],
        logger=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(model, DigitsDataModule(batch_size=128, seed=0))
    ckpt = torch.load(tmp_path / "last.ckpt", weights_only=False)
    trained = SelfLabeling(**TINY)
    trained.load_state_dict(ckpt["state_dict"])
    end_nmi = _nmi(trained, test_loader)
    assert end_nmi > start_nmi + 0.1, (start_nmi, end_nmi)
    state = next(v for k, v in ckpt["callbacks"].items() if k.startswith("SelfLabelCallback"))
    assert [h["epoch"] for h in state["history"]] == list(range(6))
    assert state["labels"].shape == (2, 1257) and (state["labels"] >= 0).all()


def test_protocol_errors_are_clear(tmp_path):
    class NoProtocol(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(64, 2)

        def training_step(self, batch, batch_idx):
            return self.layer(batch["image"].flatten(1)).sum()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    with pytest.raises(TypeError, match="self-labelling protocol"):
        _trainer(tmp_path, 1, [SelfLabelCallback()]).fit(NoProtocol(), DigitsDataModule())
    with pytest.raises(ValueError, match="lam"):
        SelfLabelCallback(lam=0)
    with pytest.raises(ValueError, match="rounding"):
        SelfLabelCallback(rounding="nearest")
    with pytest.raises(RuntimeError, match="pseudo_labels"):
        SelfLabeling(**TINY).training_step({"image": torch.zeros(2, 1, 8, 8), "index": torch.arange(2)}, 0)


def test_resume_from_a_last_batch_checkpoint_still_labels_the_next_epoch(tmp_path):
    """Lightning skips on_train_epoch_start after a checkpoint taken at an epoch's last batch end;
    the scheduled round then runs at the first batch start instead."""
    pl.seed_everything(0)
    sela = SelfLabelCallback(lam=10.0, schedule=LabelSchedule("every", every=1), solver=SinkhornSolver(tol=1e-2), seed=0)
    steps = pl.callbacks.ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=5, save_top_k=-1, filename="{step}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _trainer(tmp_path, 4, [sela, steps, Preempt(1)]).fit(SelfLabeling(**TINY), DigitsDataModule(batch_size=256, seed=0))
    assert sela.rounds_done == [0, 1]
    ckpt = tmp_path / "step=10.ckpt"  # digits' 1,257 training images / 256 = 5 batches: the end of epoch 1
    assert torch.load(ckpt, weights_only=False)["global_step"] == 10
    _, resumed = _fit(tmp_path / "resumed", 4, ckpt_path=str(ckpt), save=False)
    assert resumed.rounds_done == [0, 1, 2, 3]


def test_label_views_average_the_softmax_over_augmented_views(tmp_path):
    """label_views=V: the bank is log((1/V) Σ_v softmax(logits of view v)), each view the training augmentation
    under its own seed (recomputed here independently from the datamodule's views); V=1 is the clean pass."""
    import types

    torch.manual_seed(0)
    model = SelfLabeling(**TINY).eval()
    with torch.no_grad():
        for head in model.heads.heads:
            head.weight.mul_(30)  # confident predictions, so that views visibly differ
    dm = DigitsDataModule(seed=3)
    trainer = types.SimpleNamespace(datamodule=dm, current_epoch=4, global_rank=0, world_size=1)
    views = SelfLabelCallback(label_views=3, batch_size=500)
    indices, banks = views._fill_bank(trainer, model, 2)
    clean_idx, clean = SelfLabelCallback(batch_size=500)._fill_bank(trainer, model, 2)
    assert torch.equal(indices, clean_idx) and torch.equal(indices, torch.arange(len(dm.label_dataset())))
    with torch.no_grad():
        probs = []
        for v in range(3):
            ds = dm.label_dataset(view=v)
            ds.set_epoch(4)
            images = torch.stack([ds[i]["image"] for i in range(len(ds))])
            probs.append([lg.softmax(1) for lg in model.sela_logits({"image": images})])
        for h in range(2):
            expected = torch.stack([p[h] for p in probs]).mean(0).log()
            assert torch.allclose(banks[h], expected, atol=1e-5)
            assert not torch.allclose(banks[h], clean[h].log_softmax(1), atol=1e-2)  # the views are augmented
        assert not torch.allclose(probs[0][0], probs[1][0])  # and differ from each other
    with pytest.raises(ValueError, match="label_views"):
        SelfLabelCallback(label_views=0)
    with pytest.raises(ValueError, match="augmented views"):
        SelfLabelCallback(label_views=2, label_dataset=dm.label_dataset())._fill_bank(trainer, model, 2)


class TupleDigits(torch.utils.data.Dataset):
    """solo-learn's batch format: ``(index, image, target)`` tuples."""

    def __init__(self, base):
        self.base = base

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        item = self.base[i]
        return item["index"], item["image"], item["target"]


class TupleModule(pl.LightningModule):
    """A user's module with tuple batches: it asks the callback for the labels of its batch."""

    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
        self.sela_num_clusters = [10]

    def sela_logits(self, batch):
        return [self.net(batch[1])]

    def training_step(self, batch, batch_idx):
        sela = next(cb for cb in self.trainer.callbacks if isinstance(cb, SelfLabelCallback))
        labels = sela.labels_for(batch)
        assert labels.shape == (1, batch[0].shape[0])
        return torch.nn.functional.cross_entropy(self.sela_logits(batch)[0], labels[0])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_tuple_batches_with_a_named_index_position_and_round_progress(tmp_path, capsys):
    from otlearn.sela import SelfLabelModel

    dm = DigitsDataModule(seed=0)
    dm.setup("fit")
    data = TupleDigits(dm.label_dataset())
    module = TupleModule()
    assert isinstance(module, SelfLabelModel) and isinstance(SelfLabeling(**TINY), SelfLabelModel)
    sela = SelfLabelCallback(lam=10.0, index_key=0, solver=SinkhornSolver(tol=1e-2), seed=0)
    pl.seed_everything(0)
    trainer = pl.Trainer(max_epochs=2, accelerator="cpu", devices=1, callbacks=[sela], logger=False,
                         default_root_dir=tmp_path, enable_model_summary=False, enable_progress_bar=True,
                         enable_checkpointing=False)
    trainer.fit(module, DataLoader(data, batch_size=128, shuffle=True))
    assert sela.rounds_done == [0, 1]
    counts = torch.bincount(sela.labels[0], minlength=10)
    assert counts.max() - counts.min() <= 1  # balanced labels of the tuple dataset's samples
    assert sela.history[1]["heads"][0]["changed"] > 0  # the second round relabelled from the trained network
    assert "sela/round_seconds" in trainer.callback_metrics and float(trainer.callback_metrics["sela/round_seconds"]) > 0
    assert "label round (epoch 1)" in capsys.readouterr().err  # rank 0's progress bar
    with pytest.raises(TypeError, match="index_key"):
        SelfLabelCallback(index_key="idx").batch_indices({"index": torch.arange(3)})
    with pytest.raises(TypeError, match="integer tensor"):
        SelfLabelCallback(index_key=1).batch_indices((torch.arange(3), torch.zeros(3, 2)))
