"""best_of_restarts / restart_seeds / self_label_loss: restarts of self-labelling kept by a label-free loss."""
import math
import warnings

import pytest
import pytorch_lightning as pl
import torch

from otlearn.data import DigitsDataModule
from otlearn.ot import SinkhornSolver
from otlearn.sela import (LabelSchedule, SelfLabelCallback, SelfLabeling, best_of_restarts, restart_seeds,
                          self_label_loss)

TINY = dict(backbone="small_cnn", num_clusters=10, num_heads=2, lr=0.05, backbone_kwargs={"width": 8})


def test_restart_seeds_start_at_the_seed_and_step_by_1000():
    assert restart_seeds(3, 1) == [3]
    assert restart_seeds(3, 4) == [3, 1003, 2003, 3003]
    for bad in (0, -1, 1.5):
        with pytest.raises(ValueError, match="restarts must be a positive integer"):
            restart_seeds(0, bad)


def test_best_of_restarts_keeps_the_lowest_loss_and_fits_every_seed_in_order():
    g = torch.Generator().manual_seed(11)
    for _ in range(5):
        losses = torch.rand(6, generator=g).tolist()
        called = []

        def fit(seed):
            called.append(seed)
            return {"seed": seed, "loss": losses[len(called) - 1]}

        sel = best_of_restarts(fit, [7, 1007, 2007, 3007, 4007, 5007], lambda run: run["loss"])
        assert called == [7, 1007, 2007, 3007, 4007, 5007]
        assert sel.losses == losses and sel.best == losses.index(min(losses))
        assert sel.chosen["seed"] == sel.seeds[sel.best]
    ties = best_of_restarts(lambda s: s, [0, 1, 2], lambda run: 1.0 if run else 2.0)
    assert ties.best == 1  # the first of equal losses


def test_best_of_restarts_rejects_no_seed_and_a_non_finite_loss():
    with pytest.raises(ValueError, match="at least one seed"):
        best_of_restarts(lambda s: s, [], float)
    with pytest.raises(ValueError, match="seed 1000: loss nan"):
        best_of_restarts(lambda s: s, [0, 1000], lambda run: math.nan if run else 0.5)


class StepLosses(pl.Callback):
    """Every training step's (epoch, loss, batch size)."""

    def __init__(self):
        self.rows = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.rows.append((trainer.current_epoch, float(outputs["loss"]), len(batch["image"])))


def _fit(seed, callbacks=(), epochs=2):
    pl.seed_everything(seed)
    model = SelfLabeling(**TINY)
    sela = SelfLabelCallback(lam=10.0, schedule=LabelSchedule("every", every=1), solver=SinkhornSolver(tol=1e-2), seed=seed)
    trainer = pl.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, callbacks=[sela, *callbacks], logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         num_sanity_val_steps=0, limit_val_batches=0, deterministic=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(model, DigitsDataModule(batch_size=256, seed=seed))
    return trainer


def test_self_label_loss_is_the_last_epochs_batch_weighted_mean_loss():
    steps = StepLosses()
    trainer = _fit(0, [steps])
    last = [(loss, n) for epoch, loss, n in steps.rows if epoch == 1]
    assert len(last) == 5  # 1,257 training images in batches of 256
    expected = sum(loss * n for loss, n in last) / sum(n for _, n in last)
    assert self_label_loss(trainer) == pytest.approx(expected, rel=1e-5)
    first = [(loss, n) for epoch, loss, n in steps.rows if epoch == 0]
    assert abs(self_label_loss(trainer) - sum(l * n for l, n in first) / 1257) > 1e-3  # not the first epoch's


def test_self_label_loss_errors_name_the_missing_key_and_a_diverged_run():
    trainer = pl.Trainer(logger=False, enable_progress_bar=False)
    with pytest.raises(ValueError, match="logged no 'train/loss'"):
        self_label_loss(trainer)
    trainer.callback_metrics["train/loss"] = torch.tensor(float("inf"))
    with pytest.raises(ValueError, match="diverged"):
        self_label_loss(trainer)


def test_best_of_restarts_over_real_fits_keeps_the_fit_of_lowest_loss():
    sel = best_of_restarts(lambda seed: (seed, self_label_loss(_fit(seed, epochs=1))), restart_seeds(5, 2),
                           lambda run: run[1])
    assert sel.seeds == [5, 1005] and len(set(sel.losses)) == 2  # different seeds: different fits
    assert sel.chosen[1] == min(sel.losses) and sel.chosen[0] == sel.seeds[sel.best]
