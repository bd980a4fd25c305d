"""CodeMarginalSchedule: the trainer times the default ρ annealing; a resumed run continues it exactly."""
import warnings

import pytest
import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from otlearn.vq import CodeMarginalSchedule, OTVectorQuantizer, VQAutoencoder, run_training_steps
from otlearn.vq.quantizer import RECOMMENDED_B_PENALTY_END as RHO_END


class TokenModel(pl.LightningModule):
    """A user's own module: a linear encoder, an OT quantizer, a linear decoder; records each step's ρ."""

    def __init__(self, k: int = 16, d: int = 4) -> None:
        super().__init__()
        self.encoder, self.decoder = nn.Linear(d, d), nn.Linear(d, d)
        self.quantizer = OTVectorQuantizer(k, d)
        self.rhos: list[float] = []

    def training_step(self, batch, batch_idx):
        (x,) = batch
        self.rhos.append(self.quantizer.current_b_penalty())
        out = self.quantizer(self.encoder(x))
        return nn.functional.mse_loss(self.decoder(out.quantized), x) + out.loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-2)


def _loader(n: int = 80, batch: int = 10) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    return DataLoader(TensorDataset(torch.randn(n, 4, generator=g)), batch_size=batch)


def _trainer(tmp_path, **kwargs) -> pl.Trainer:
    base = dict(logger=False, enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
                default_root_dir=str(tmp_path), callbacks=[CodeMarginalSchedule()])
    return pl.Trainer(**{**base, **kwargs})


def _expected(total: int) -> list[float]:
    return [3.0 * (RHO_END / 3.0) ** min(t / total, 1.0) for t in range(total)]


@pytest.mark.parametrize("accumulate, limit", [(1, None), (2, 6)])
def test_callback_sets_the_run_length_so_rho_ends_at_the_default_end(tmp_path, accumulate, limit):
    """T = optimizer steps × accumulate_grad_batches = the training forward passes, epochs and limits included."""
    pl.seed_everything(0)
    model = TokenModel()
    trainer = _trainer(tmp_path, max_epochs=3, accumulate_grad_batches=accumulate, limit_train_batches=limit,
                       enable_checkpointing=False)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*no run length.*")
        warnings.filterwarnings("ignore", message=".*(num_workers|bottleneck|log_every_n_steps).*")
        trainer.fit(model, _loader())
    passes = 3 * (limit or 8)
    assert model.quantizer.b_penalty_anneal_steps == passes == run_training_steps(trainer)
    assert int(model.quantizer.train_steps) == passes
    assert model.rhos == pytest.approx(_expected(passes), rel=1e-12)
    assert model.quantizer.current_b_penalty() == pytest.approx(RHO_END, rel=1e-12)


def test_explicit_steps_are_kept_and_constant_rho_is_left_alone(tmp_path):
    model = TokenModel()
    model.quantizer = OTVectorQuantizer(16, 4, b_penalty_anneal_steps=5)
    constant = OTVectorQuantizer(16, 4, b_penalty_end=None)
    model.extra = constant
    _trainer(tmp_path, max_epochs=1, enable_checkpointing=False).fit(model, _loader())
    assert model.quantizer.b_penalty_anneal_steps == 5 and model.quantizer.current_b_penalty() == pytest.approx(RHO_END)
    assert constant.b_penalty_anneal_steps is None and constant.current_b_penalty() == 3.0


def test_resumed_run_continues_the_schedule_step_for_step(tmp_path):
    """Preempted after epoch 2 of 4 and resumed from its checkpoint: the same ρ at every step as a run that was
    never interrupted (the step count travels in the quantizer's buffer, T comes again from the trainer)."""
    pl.seed_everything(0)
    whole = TokenModel()
    _trainer(tmp_path / "whole", max_epochs=4, enable_checkpointing=False).fit(whole, _loader())
    pl.seed_everything(0)
    first = TokenModel()

    class Preempt(pl.Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            if trainer.current_epoch == 1:
                trainer.should_stop = True

    checkpoint = pl.callbacks.ModelCheckpoint(dirpath=str(tmp_path / "ckpt"), save_last=True)
    _trainer(tmp_path / "first", max_epochs=4, callbacks=[CodeMarginalSchedule(), checkpoint, Preempt()]).fit(first, _loader())
    assert len(first.rhos) == 16 and int(first.quantizer.train_steps) == 16
    resumed = TokenModel()
    _trainer(tmp_path / "second", max_epochs=4, enable_checkpointing=False).fit(
        resumed, _loader(), ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"))
    assert first.rhos + resumed.rhos == pytest.approx(whole.rhos, rel=1e-12)
    assert whole.rhos == pytest.approx(_expected(32), rel=1e-12)


def test_autoencoder_times_its_own_quantizer_and_an_endless_run_warns(tmp_path):
    model = VQAutoencoder(hidden=8, latent_dim=4, num_codes=16)
    images = torch.rand(40, 1, 8, 8)
    loader = DataLoader([{"image": im} for im in images], batch_size=10)
    pl.Trainer(max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
               enable_model_summary=False, num_sanity_val_steps=0).fit(model, loader)
    assert model.quantizer.b_penalty_anneal_steps == 8 and int(model.quantizer.train_steps) == 8

    class StopAfter(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            trainer.should_stop = batch_idx >= 1

    endless = TokenModel()
    with pytest.warns(UserWarning, match="has no end") as record:
        _trainer(tmp_path, max_epochs=-1, max_steps=-1, enable_checkpointing=False,
                 callbacks=[CodeMarginalSchedule(), StopAfter()]).fit(endless, _loader())
    assert any("no run length was set" in str(w.message) for w in record)  # and the quantizer keeps ρ = 3
    assert endless.quantizer.b_penalty_anneal_steps is None and set(endless.rhos) == {3.0}
