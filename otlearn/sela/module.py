"""SelfLabeling: SeLa's network — a backbone, T clustering heads, cross-entropy on self-labels.

Use with :class:`otlearn.sela.SelfLabelCallback`, which supplies ``batch["pseudo_labels"]``
(T, B) before each step. Implements the self-labelling protocol (``sela_num_clusters``,
``sela_logits``) and the evaluation protocol (``embed``).
"""
from __future__ import annotations

from typing import Sequence

import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from otlearn.sela.backbones import build_backbone
from otlearn.sela.heads import MultiHead


class SelfLabeling(pl.LightningModule):
    """Backbone + T heads trained with cross-entropy against the callback's labels.

    Args:
        backbone: ``small_cnn`` (for 8x8/32x32 inputs) or any timm model name (no pretrained weights).
        in_chans: image channels.
        num_clusters: K per head (int) or one K per head (list).
        num_heads: T when ``num_clusters`` is an int.
        lr, momentum, weight_decay: SGD with a cosine schedule over ``max_epochs`` (the trainer's).
        backbone_kwargs: extra arguments for the backbone constructor.
    """

    def __init__(
        self,
        backbone: str = "small_cnn",
        in_chans: int = 1,
        num_clusters: int | Sequence[int] = 10,
        num_heads: int = 1,
        lr: float = 0.05,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        backbone_kwargs: dict | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.backbone, dim = build_backbone(backbone, in_chans=in_chans, **(backbone_kwargs or {}))
        self.heads = MultiHead(dim, num_clusters if not isinstance(num_clusters, int) else num_clusters, num_heads)

    # ---- protocols
    @property
    def sela_num_clusters(self) -> list[int]:
        return self.heads.num_clusters

    def sela_logits(self, batch: dict) -> list[torch.Tensor]:
        """T tensors (B, K_t) of head logits for ``batch["image"]``."""
        return self.heads(self.backbone(batch["image"]))

    def embed(self, batch: dict) -> torch.Tensor:
        """(B, D) backbone features, the representation that kNN and linear probes evaluate."""
        return self.backbone(batch["image"])

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone(images)

    # ---- training
    def on_train_epoch_start(self) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        if dm is not None and hasattr(dm, "set_epoch"):
            dm.set_epoch(self.current_epoch)  # augmentations seeded by (seed, epoch, index)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        if "pseudo_labels" not in batch:
            raise RuntimeError("batch has no 'pseudo_labels': add otlearn.sela.SelfLabelCallback to the trainer")
        logits = self.sela_logits(batch)
        labels = batch["pseudo_labels"]
        losses = [F.cross_entropy(lg, labels[h]) for h, lg in enumerate(logits)]
        loss = torch.stack(losses).mean()
        self.log("train/loss", loss, prog_bar=True, on_step=False, on_epoch=True, sync_dist=True,
                 batch_size=labels.shape[1])
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        """Evaluation happens in the evaluation callbacks; this step only keeps Lightning's loop alive."""

    def configure_optimizers(self):
        opt = torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=self.hparams.momentum,
                              weight_decay=self.hparams.weight_decay, nesterov=True)
        max_epochs = max(1, int(self.trainer.max_epochs or 1))
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max_epochs)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}
