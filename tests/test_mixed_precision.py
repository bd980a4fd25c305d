"""``Trainer(precision="bf16-mixed")`` on the CPU: SeLa, the VQ autoencoder and the
point-supervised segmentation model train, and their solvers converge."""
import warnings

import pytorch_lightning as pl
import torch

from otlearn.data import DigitsDataModule, ShapesDataModule
from otlearn.ot import SinkhornSolver
from otlearn.point2mask import PointSupervisedSegmentation
from otlearn.sela import LabelSchedule, SelfLabelCallback, SelfLabeling
from otlearn.vq import VQAutoencoder


def _fit(model, dm, callbacks=(), epochs=1, batches=4):
    trainer = pl.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, precision="bf16-mixed", logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         num_sanity_val_steps=0, limit_train_batches=batches, limit_val_batches=0,
                         callbacks=list(callbacks))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(model, dm)
    return trainer


class _Losses(pl.Callback):
    def __init__(self):
        self.losses = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(float(outputs["loss"] if isinstance(outputs, dict) else outputs))


def test_sela_bf16_mixed_label_rounds_converge():
    pl.seed_everything(0)
    model = SelfLabeling(backbone="small_cnn", num_clusters=10, num_heads=2, lr=0.05, backbone_kwargs={"width": 8})
    sela = SelfLabelCallback(lam=10.0, schedule=LabelSchedule("every", every=1), solver=SinkhornSolver(tol=1e-3, max_iter=5000), seed=0)
    losses = _Losses()
    _fit(model, DigitsDataModule(batch_size=128, seed=0), [sela, losses], epochs=2)
    assert [h["epoch"] for h in sela.history] == [0, 1]
    for round_ in sela.history:
        for head in round_["heads"]:
            assert head["converged"] and head["error"] <= 1e-3 and head["empty"] == 0
    assert all(torch.isfinite(torch.tensor(losses.losses)))


def test_vq_autoencoder_bf16_mixed_solver_converges():
    pl.seed_everything(0)
    model = VQAutoencoder(hidden=16, latent_dim=8, num_codes=64)
    seen = []

    class Spy(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            with torch.no_grad():
                assert torch.is_autocast_enabled("cpu") is False  # outside the step; the step itself runs autocast
            seen.append(batch_idx)

    _fit(model, DigitsDataModule(batch_size=128, augment=False), [Spy()], batches=3)
    assert seen == [0, 1, 2]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model.train()
        out = model.quantizer(model.encoder(DigitsDataModule().test_dataset().base.images[:64]))
    assert float(out.stats["solver_error"]) <= model.quantizer.solver.tol
    assert torch.isfinite(out.loss) and out.quantized.dtype == torch.bfloat16


def test_point2mask_bf16_mixed_pseudo_masks_converge():
    torch.manual_seed(0)
    model = PointSupervisedSegmentation(num_classes=5, thing_classes=[0, 1, 2], backbone="resnet10t", width=16, pseudo_start_step=0, lr=1e-3)
    dm = ShapesDataModule(train_size=8, val_size=4, image_size=48, batch_size=4)
    losses = _Losses()
    _fit(model, dm, [losses], batches=2)
    assert len(losses.losses) == 2 and all(torch.isfinite(torch.tensor(losses.losses)))
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        pseudo = model.pseudo_labels(batch)
    ran = [p.n_iters for p in pseudo if p.n_iters > 0]
    assert ran and max(ran) < model.generator.solver.max_iter  # every OT solve stopped at its tolerance
