"""Online evaluation callbacks: kNN accuracy and clustering metrics at validation epoch end.

They work with any LightningModule that implements ``embed(batch) -> (B, D)`` (kNN,
:class:`~otlearn.eval.EmbeddingModel`) and/or ``sela_logits(batch) -> Sequence[(B, K)]`` (clustering,
head ``head``; :class:`~otlearn.sela.SelfLabelModel`). Batches carry dataset indices and targets,
by default as dict entries ``index`` and ``target``; ``index_key``/``target_key`` name other keys or
tuple positions (solo-learn's ``(index, views, target)``: 0 and 2). Features are gathered across
processes; the metrics are logged (``val/knn``, ``val/nmi``, ``val/ari``, ``val/acc``) and kept in ``history``.
"""
from __future__ import annotations

from typing import Any, Callable

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from otlearn.eval.clustering import clustering_metrics
from otlearn.eval.features import EmbeddingModel, Key, extract
from otlearn.eval.knn import knn_accuracy


def _loader_from(trainer: pl.Trainer, source: Callable[[pl.Trainer], DataLoader] | str) -> DataLoader:
    if callable(source):
        return source(trainer)
    dm = trainer.datamodule
    if dm is None or not hasattr(dm, source):
        raise ValueError(f"the datamodule has no {source!r}; pass a callable (trainer) -> DataLoader instead")
    obj = getattr(dm, source)()
    return obj if isinstance(obj, DataLoader) else DataLoader(obj, batch_size=512)


def _first_val_loader(trainer: pl.Trainer) -> DataLoader:
    loaders = trainer.val_dataloaders
    return loaders[0] if isinstance(loaders, (list, tuple)) else loaders


class KNNEvalCallback(pl.Callback):
    """Weighted cosine kNN accuracy of ``embed`` features: memory = the un-augmented training set
    (``datamodule.eval_train_dataset()`` by default), queries = the validation loader.

    ``temperature`` is a real temperature τ: neighbour weights ``exp(cos / τ)`` (0.07, as InstDisc).
    """

    def __init__(self, k: int = 20, temperature: float = 0.07, every_n_epochs: int = 1,
                 memory: Callable[[pl.Trainer], DataLoader] | str = "eval_train_dataset",
                 index_key: Key = "index", target_key: Key = "target") -> None:
        self.k, self.temperature, self.every = k, temperature, every_n_epochs
        self.memory = memory
        self.keys = {"index_key": index_key, "target_key": target_key}
        self.history: list[dict[str, Any]] = []

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or (trainer.current_epoch + 1) % self.every:
            return
        if not isinstance(pl_module, EmbeddingModel):
            raise TypeError(f"KNNEvalCallback needs `embed(batch) -> (B, D)` features; {type(pl_module).__name__} has no embed")
        mem_x, mem_y, _ = extract(pl_module, _loader_from(trainer, self.memory), pl_module.embed, **self.keys)
        val = _first_val_loader(trainer)
        q_x, q_y, _ = extract(pl_module, val, pl_module.embed, **self.keys)
        acc = knn_accuracy(mem_x, mem_y, q_x, q_y, k=self.k, temperature=self.temperature)
        self.history.append({"epoch": trainer.current_epoch, "knn": acc})
        pl_module.log("val/knn", acc, prog_bar=True, sync_dist=True)

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = list(state_dict["history"])


class ClusteringEvalCallback(pl.Callback):
    """NMI, ARI and Hungarian accuracy of head ``head``'s argmax on the validation loader."""

    def __init__(self, head: int = 0, every_n_epochs: int = 1, index_key: Key = "index", target_key: Key = "target") -> None:
        self.head, self.every = head, every_n_epochs
        self.keys = {"index_key": index_key, "target_key": target_key}
        self.history: list[dict[str, Any]] = []

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or (trainer.current_epoch + 1) % self.every:
            return
        val = _first_val_loader(trainer)
        pred, target, _ = extract(pl_module, val, lambda b: pl_module.sela_logits(b)[self.head].argmax(1), **self.keys)
        metrics = clustering_metrics(pred.long(), target)
        self.history.append({"epoch": trainer.current_epoch, **metrics})
        pl_module.log_dict({f"val/{k}": v for k, v in metrics.items()}, prog_bar=True, sync_dist=True)

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = list(state_dict["history"])
