"""CodebookMonitor: epoch-level codebook health of a model's quantizer.

Reads the quantizer's counters (``usage``: tokens per code; ``disagreements``: OT vs nearest
neighbour), all-reduces them over the processes, logs utilisation (codes used at least once),
perplexity ``exp(H(usage))``, dead codes, the OT-vs-NN disagreement rate and, on the validation
loader, the quantisation MSE; saves a usage histogram PNG; then resets the counters.
"""
from __future__ import annotations

import os
from typing import Any

import pytorch_lightning as pl
import torch

from otlearn.comm import resolve


def usage_stats(counts: torch.Tensor) -> dict[str, float]:
    """Utilisation, perplexity and dead codes of a (K,) usage histogram."""
    counts = counts.double()
    total = counts.sum()
    probs = counts[counts > 0] / total if total > 0 else counts[:0]
    return {
        "utilization": float((counts > 0).double().mean()),
        "perplexity": float(torch.exp(-(probs * probs.log()).sum())) if probs.numel() else 0.0,
        "dead_codes": int((counts == 0).sum()),
    }


class CodebookMonitor(pl.Callback):
    """Args: ``attribute`` of the module holding the quantizer; ``plot_dir`` for histograms (None: no plot);
    ``group`` the counts are summed over (``"auto"``: the world group when initialised)."""

    def __init__(self, attribute: str = "quantizer", plot_dir: str | None = None, group: Any = "auto") -> None:
        self.attribute = attribute
        self.group = group
        self.plot_dir = plot_dir
        self.history: list[dict[str, Any]] = []
        self._val_sq, self._val_n = 0.0, 0

    def _quantizer(self, pl_module: pl.LightningModule):
        q = getattr(pl_module, self.attribute, None)
        if q is None or not hasattr(q, "usage"):
            raise TypeError(f"{type(pl_module).__name__}.{self.attribute} is not an otlearn quantizer with usage counters")
        return q

    def _reduce(self, t: torch.Tensor) -> torch.Tensor:
        return resolve(self.group).all_reduce_(t.clone())

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._quantizer(pl_module).reset_counters()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        q = self._quantizer(pl_module)
        counts = self._reduce(q.usage)
        disagree = self._reduce(q.disagreements)
        stats = usage_stats(counts)
        stats["ot_nn_disagreement"] = float(disagree[0]) / max(1, int(disagree[1]))
        stats["epoch"] = trainer.current_epoch
        self.history.append(stats)
        pl_module.log_dict({f"codebook/{k}": float(v) for k, v in stats.items() if k != "epoch"},
                           prog_bar=False, sync_dist=True)
        if self.plot_dir and trainer.is_global_zero:
            self.plot(counts, os.path.join(self.plot_dir, f"usage_epoch{trainer.current_epoch:03d}.png"))

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        with torch.no_grad():
            z = pl_module.encoder(batch["image"])
            zq, _, _ = pl_module.quantize(batch["image"])
            self._val_sq += float((z - zq).square().sum())
            self._val_n += z.numel()

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._val_n:
            totals = self._reduce(torch.tensor([self._val_sq, float(self._val_n)], dtype=torch.float64))
            pl_module.log("codebook/quantization_mse", float(totals[0] / totals[1]), sync_dist=True)
        self._val_sq, self._val_n = 0.0, 0

    @staticmethod
    def plot(counts: torch.Tensor, path: str) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        fig, ax = plt.subplots(figsize=(6, 3))
        ax.bar(range(len(counts)), counts.sort(descending=True).values.cpu().numpy(), width=1.0)
        ax.set_xlabel("code (sorted by use)")
        ax.set_ylabel("tokens")
        ax.set_title(f"codebook usage: {int((counts > 0).sum())}/{len(counts)} codes used")
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = list(state_dict["history"])
