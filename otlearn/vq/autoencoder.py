"""VQAutoencoder: a small conv VQ-VAE (8x8 digits, 32x32 images) around any quantizer.

Encoder: conv → ``downsamples`` stride-2 stages → 1x1 conv to ``latent_dim``; decoder mirrors it.
Loss: MSE reconstruction + the quantizer's commitment/codebook loss. Works with
:class:`OTVectorQuantizer` or any module returning ``(quantized, indices, loss)``-like output
(see ``quantizer_adapter``).
"""
from __future__ import annotations

import math
import time
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

from otlearn.vq.quantizer import OTVectorQuantizer
from otlearn.vq.schedule import schedule_code_marginals


def conv_encoder(in_chans: int, hidden: int, latent_dim: int, downsamples: int) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(in_chans, hidden, 3, padding=1), nn.ReLU(inplace=True)]
    for _ in range(downsamples):
        layers += [nn.Conv2d(hidden, hidden, 4, stride=2, padding=1), nn.ReLU(inplace=True),
                   nn.Conv2d(hidden, hidden, 3, padding=1), nn.ReLU(inplace=True)]
    layers.append(nn.Conv2d(hidden, latent_dim, 1))
    return nn.Sequential(*layers)


def conv_decoder(out_chans: int, hidden: int, latent_dim: int, downsamples: int) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(latent_dim, hidden, 3, padding=1), nn.ReLU(inplace=True)]
    for _ in range(downsamples):
        layers += [nn.ConvTranspose2d(hidden, hidden, 4, stride=2, padding=1), nn.ReLU(inplace=True),
                   nn.Conv2d(hidden, hidden, 3, padding=1), nn.ReLU(inplace=True)]
    layers.append(nn.Conv2d(hidden, out_chans, 1))
    return nn.Sequential(*layers)


class VQAutoencoder(pl.LightningModule):
    """Conv VQ-VAE.

    Args:
        in_chans: image channels; hidden: conv width; latent_dim: token dimension;
        downsamples: stride-2 stages (1 for 8x8 → 4x4 tokens, 3 for 32x32 → 4x4).
        num_codes, heads, assignment, …: forwarded to :class:`OTVectorQuantizer`
            (``quantizer_kwargs`` for the rest).
        lr: Adam learning rate.
        quantizer: an already built quantizer module (overrides the above), e.g. a baseline from
            another library wrapped to return ``(quantized, indices, loss)``.
    """

    def __init__(
        self,
        in_chans: int = 1,
        hidden: int = 64,
        latent_dim: int = 16,
        downsamples: int = 1,
        num_codes: int = 256,
        heads: int = 1,
        assignment: str = "ot",
        lr: float = 2e-3,
        quantizer_kwargs: dict | None = None,
        quantizer: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["quantizer"])
        self.encoder = conv_encoder(in_chans, hidden, latent_dim, downsamples)
        self.decoder = conv_decoder(in_chans, hidden, latent_dim, downsamples)
        self.quantizer = quantizer if quantizer is not None else OTVectorQuantizer(
            num_codes, latent_dim, heads=heads, assignment=assignment, **(quantizer_kwargs or {}))
        self.step_seconds: list[float] = []

    def quantize(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(quantized latents, indices, vq loss)`` for a batch of images."""
        out = self.quantizer(self.encoder(images))
        if isinstance(out, tuple):
            return out[0], out[1], out[2]
        return out.quantized, out.indices, out.loss

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        quantized, _, _ = self.quantize(images)
        return self.decoder(quantized)

    def embed(self, batch: dict) -> torch.Tensor:
        return self.encoder(batch["image"]).flatten(1)

    def on_fit_start(self) -> None:
        schedule_code_marginals(self.trainer, self)  # ρ anneals over this run (b_penalty_anneal_steps="auto")

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        start = time.perf_counter()
        images = batch["image"]
        quantized, _, vq_loss = self.quantize(images)
        recon = F.mse_loss(self.decoder(quantized), images)
        loss = recon + vq_loss
        self._step_start = start
        self.log_dict({"train/recon": recon, "train/vq": vq_loss}, prog_bar=True, on_step=False, on_epoch=True,
                      batch_size=images.shape[0], sync_dist=True)
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if hasattr(self, "_step_start"):
            self.step_seconds.append(time.perf_counter() - self._step_start)  # forward+backward+step

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        images = batch["image"]
        recon = self(images)
        mse = F.mse_loss(recon, images)
        self.log_dict({"val/mse": mse, "val/psnr": psnr(mse)}, prog_bar=True, batch_size=images.shape[0], sync_dist=True)

    def configure_optimizers(self):
        return torch.optim.Adam([p for p in self.parameters() if p.requires_grad], lr=self.hparams.lr)


def psnr(mse: torch.Tensor | float, peak: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB for images in [0, peak]."""
    mse = torch.as_tensor(mse, dtype=torch.float32)
    return 10 * torch.log10(peak**2 / mse.clamp(min=1e-12))
