"""SelfLabelCallback: SeLa's label step for any LightningModule, rows sharded over processes.

Protocol the LightningModule implements (``SelfLabeling`` does; yours can too):

* ``sela_num_clusters: list[int]`` — K of each of the T heads;
* ``sela_logits(batch: dict) -> Sequence[Tensor]`` — T tensors (B, K_t) of head logits for a
  batch (called under ``torch.no_grad()`` with the module in eval mode);
* batches are dicts with an ``"index"`` entry (B,) of dataset indices and an ``"image"`` entry;
  before each training step the callback adds ``batch["pseudo_labels"]``: (T, B) int64 labels.

Each label round (at the epochs of a :class:`LabelSchedule`):

1. a no-grad pass over the label dataset (un-augmented training images), sharded contiguously over
   the ranks without padding, fills this rank's bank of logits keyed by dataset index (a
   user-supplied loader with a padding ``DistributedSampler`` also works: duplicates are dropped);
2. for each head, scores = log-softmax of the logits and the distributed solver runs over all N
   rows with ``ε = 1/λ`` and ``group`` = the trainer's process group, warm-started from that head's
   previous ``g``; only K-vectors are all-reduced;
3. hard labels (exactly balanced counts by default, or SeLa's ``argmax_k (log p_ik + g_k)``) are
   all-gathered as integers into the (T, N) label bank that every rank holds.

The bank, the schedule position, each head's ``g`` and the random state are in every checkpoint
(``state_dict``), so a resumed run continues with exactly the labels it had.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Literal

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from pytorch_lightning.utilities import rank_zero_info

from otlearn.comm import Communicator, default_group
from otlearn.data.indexed import ShardSampler
from otlearn.ot import SinkhornSolver
from otlearn.sela.labeling import assign_labels
from otlearn.sela.schedule import LabelSchedule


def label_checksum(labels: torch.Tensor) -> str:
    """A short, stable fingerprint of a label bank (to check that a resumed run has the same labels)."""
    import hashlib

    return hashlib.sha1(labels.to(torch.int64).contiguous().numpy().tobytes()).hexdigest()[:12]


class SelfLabelCallback(pl.Callback):
    """SeLa's self-labelling as a Lightning callback.

    Args:
        lam: λ of SeLa (``ε = 1/λ`` on log-probabilities): 10 on CIFAR, 25 on ImageNet.
        schedule: when rounds run (default: every epoch).
        tol, max_iter: solver stopping rule (max relative column-marginal error).
        rounding: ``"auto"`` (default: ``"balanced"`` with hard cluster marginals, ``"argmax"`` with
            ``b_penalty``), ``"balanced"`` (exactly the counts ``round(N b_k)``, the constraint SeLa's objective
            states) or ``"argmax"`` (SeLa's code: ``argmax_k log p_ik + g_k``, which can be far from
            balanced while the network's predictions are still flat).
        b_penalty: ρ > 0 relaxes the equal-size constraint into ``ρ KL(P^T 1 ‖ b)`` (semi-relaxed OT, as
            P²OT does for imbalanced data): the cluster masses follow the data where the network is
            confident, pulled towards ``b`` with strength ρ (ρ → ∞: equal sizes again). ``None``: hard.
        relax_after: with ``b_penalty``, label rounds before this epoch keep the hard marginal (and
            balanced rounding): a relaxed marginal from the first round lets a random network's bias
            collapse the clusters (measured on long-tailed digits: one cluster at ρ = 0.1 and ρ = 1).
        cluster_prior: the cluster masses ``b`` (K,) for every head (default uniform), e.g. a long-tailed
            prior; with ``b_penalty=None`` the label counts follow it exactly.
        label_dataset: dataset of dicts with ``image`` and ``index`` for the label pass; default:
            ``trainer.datamodule.label_dataset()`` if it exists, else the train loader's dataset.
        label_dataloader: alternatively a callable ``(trainer) -> DataLoader`` (any sampler,
            padding duplicates allowed).
        label_views: V >= 1 augmented views per sample in the label pass: the scores are
            ``log((1/V) Σ_v softmax(logits_v))``, the prediction averaged over V augmentations, so labels
            follow what the network predicts under the training augmentation rather than what it memorised
            of the clean image (measured on digits: the worst of 5 seeds rose from NMI 0.81 to 0.85; the
            partitions keep improving during training instead of freezing by epoch 10). V = 1 (default):
            one un-augmented pass (SeLa). V > 1 needs views: a datamodule whose ``label_dataset(view=v)``
            augments under a per-view seed (``DigitsDataModule``, ``ImageDataModule``), or a
            ``label_dataloader`` that augments (called once per view).
        batch_size, num_workers: of the label loader the callback builds.
        seed: seed of the initial random balanced labels.
        solver_dtype: "auto" (default), float32 or float64 for the solver.
    """

    def __init__(
        self,
        lam: float = 10.0,
        schedule: LabelSchedule | None = None,
        tol: float = 1e-3,
        max_iter: int = 1000,
        rounding: Literal["auto", "argmax", "balanced"] = "auto",
        b_penalty: float | None = None,
        relax_after: int = 0,
        cluster_prior: list[float] | None = None,
        label_dataset: Dataset | None = None,
        label_dataloader: Callable[[pl.Trainer], DataLoader] | None = None,
        batch_size: int = 256,
        num_workers: int = 0,
        seed: int = 0,
        solver_dtype: torch.dtype | str = "auto",
        label_views: int = 1,
    ) -> None:
        if not lam > 0:
            raise ValueError(f"lam (λ = 1/ε) must be > 0, got {lam!r}")
        if not (isinstance(label_views, int) and label_views >= 1):
            raise ValueError(f"label_views must be an int >= 1, got {label_views!r}")
        if rounding not in ("auto", "argmax", "balanced"):
            raise ValueError(f"rounding must be 'auto', 'argmax' or 'balanced', got {rounding!r}")
        if b_penalty is not None and not b_penalty > 0:
            raise ValueError(f"b_penalty must be > 0 or None, got {b_penalty!r}")
        if rounding == "balanced" and b_penalty is not None:
            raise ValueError("rounding='balanced' needs hard cluster sizes; with b_penalty the labels are the argmax")
        if cluster_prior is not None:
            prior = torch.as_tensor(cluster_prior, dtype=torch.float64)
            if prior.dim() != 1 or not torch.isfinite(prior).all() or (prior < 0).any() or not prior.sum() > 0:
                raise ValueError(f"cluster_prior must be K non-negative finite masses, not all 0, got {cluster_prior!r}")
        self.b_penalty = None if b_penalty is None else float(b_penalty)
        self.relax_after = int(relax_after)
        self.hard_rounding = "balanced" if rounding == "auto" else rounding  # rounds before relax_after
        self.cluster_prior = None if cluster_prior is None else [float(x) for x in cluster_prior]
        rounding = ("argmax" if b_penalty is not None else "balanced") if rounding == "auto" else rounding
        self.lam = float(lam)
        self.schedule = schedule or LabelSchedule()
        self.solver = SinkhornSolver(tol=tol, max_iter=max_iter)
        self.rounding = rounding
        self.label_dataset = label_dataset
        self.label_dataloader = label_dataloader
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.solver_dtype = solver_dtype
        self.label_views = label_views
        # state saved in checkpoints
        self.labels: torch.Tensor | None = None  # (T, N) int64
        self._device_labels: tuple[torch.Tensor, torch.Tensor] | None = None  # (labels it copies, copy)
        self.potentials: list[torch.Tensor | None] = []
        self.rounds_done: list[int] = []
        self.history: list[dict[str, Any]] = []
        self.generator_state: torch.Tensor | None = None

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {
            "labels": self.labels,
            "potentials": [None if g is None else g.cpu() for g in self.potentials],
            "rounds_done": list(self.rounds_done),
            "history": list(self.history),
            "generator_state": self.generator_state,
            "lam": self.lam,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.labels = state_dict["labels"]
        self.potentials = list(state_dict["potentials"])
        self.rounds_done = list(state_dict["rounds_done"])
        self.history = list(state_dict["history"])
        self.generator_state = state_dict["generator_state"]
        if self.labels is not None:
            rank_zero_info(
                f"SelfLabelCallback: restored label bank {tuple(self.labels.shape)} "
                f"(checksum {label_checksum(self.labels)}), label rounds done at epochs {self.rounds_done}"
            )

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _comm(trainer: pl.Trainer) -> Communicator:
        return Communicator(default_group() if trainer.world_size > 1 else None)

    def _dataset(self, trainer: pl.Trainer) -> Dataset:
        if self.label_dataset is not None:
            return self.label_dataset
        dm = trainer.datamodule
        if dm is not None and hasattr(dm, "label_dataset"):
            return dm.label_dataset()
        loader = trainer.train_dataloader
        if loader is None:
            trainer.fit_loop.setup_data()
            loader = trainer.train_dataloader
        if isinstance(loader, DataLoader):
            return loader.dataset
        raise ValueError(
            "SelfLabelCallback needs a label dataset: pass label_dataset=, give the datamodule a "
            "label_dataset() method, or use a single DataLoader for training"
        )

    def _view_dataset(self, trainer: pl.Trainer, view: int) -> Dataset:
        """Augmented view ``view`` of the label dataset (``label_views > 1``), reseeded per round by the epoch."""
        dm = trainer.datamodule
        if self.label_dataset is not None or dm is None or not hasattr(dm, "label_dataset"):
            raise ValueError(
                "label_views > 1 needs augmented views of the label dataset: use a datamodule whose "
                "label_dataset(view=v) augments (DigitsDataModule, ImageDataModule), or pass a label_dataloader "
                "that augments (it is called once per view)")
        try:
            dataset = dm.label_dataset(view=view)
        except TypeError as err:
            raise ValueError(f"label_views > 1: {type(dm).__name__}.label_dataset does not take view= ({err})") from err
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(trainer.current_epoch)
        return dataset

    def _loader(self, trainer: pl.Trainer, view: int | None = None) -> DataLoader:
        if self.label_dataloader is not None:
            return self.label_dataloader(trainer)
        dataset = self._dataset(trainer) if view is None else self._view_dataset(trainer, view)
        sampler = ShardSampler(len(dataset), trainer.global_rank, trainer.world_size)
        return DataLoader(dataset, batch_size=self.batch_size, sampler=sampler, num_workers=self.num_workers)

    @staticmethod
    def _check_module(pl_module: pl.LightningModule) -> list[int]:
        if not hasattr(pl_module, "sela_logits") or not hasattr(pl_module, "sela_num_clusters"):
            raise TypeError(
                f"{type(pl_module).__name__} does not implement the self-labelling protocol: it needs "
                "`sela_num_clusters: list[int]` and `sela_logits(batch) -> Sequence[Tensor (B, K)]`"
            )
        return [int(k) for k in pl_module.sela_num_clusters]

    def _initial_labels(self, n: int, ks: list[int]) -> torch.Tensor:
        """Random balanced labels per head: a seeded permutation of ``arange(N) % K``."""
        gen = torch.Generator().manual_seed(self.seed)
        labels = torch.stack([torch.randperm(n, generator=gen) % k for k in ks])
        self.generator_state = gen.get_state()
        return labels

    def _labels_on(self, device: torch.device) -> torch.Tensor:
        """The label bank on ``device``, copied once per label round (not per step): indexing it
        with the batch's indices where they already are needs no device-to-host copy on a GPU."""
        cached = self._device_labels
        if cached is None or cached[0] is not self.labels or cached[1].device != device:
            self._device_labels = (self.labels, self.labels.to(device))
        return self._device_labels[1]

    # ------------------------------------------------------------------ hooks
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        ks = self._check_module(pl_module)
        n = len(self._dataset(trainer)) if self.label_dataloader is None else None
        if self.labels is None:
            if n is None:
                n = len(self.label_dataloader(trainer).dataset)
            self.labels = self._initial_labels(n, ks)
            self.potentials = [None] * len(ks)
        if self.cluster_prior is not None and any(k != len(self.cluster_prior) for k in ks):
            raise ValueError(f"cluster_prior has {len(self.cluster_prior)} masses, the heads have K = {ks}")
        if self.labels.shape[0] != len(ks):
            raise ValueError(f"checkpoint holds labels for {self.labels.shape[0]} heads, the module has {len(ks)}")

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch
        if epoch in self.rounds_done or epoch not in self.schedule.label_epochs(trainer.max_epochs or 10**9):
            return
        stats = self.label_round(trainer, pl_module)
        self.rounds_done.append(epoch)
        stats["epoch"] = epoch
        self.history.append(stats)
        head0 = {k: float(v) for k, v in stats["heads"][0].items() if k not in ("sizes", "rows")}
        changed = head0.pop("changed")
        pl_module.log_dict({f"sela/{k}": v for k, v in head0.items()}, prog_bar=False, sync_dist=True)
        pl_module.log("sela/changed", changed, prog_bar=True, sync_dist=True)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        if not isinstance(batch, dict) or "index" not in batch:
            raise TypeError("SelfLabelCallback needs dict batches with an 'index' entry of dataset indices")
        # Lightning skips on_train_epoch_start of the epoch after a checkpoint saved at the last batch
        # end of an epoch (e.g. ModelCheckpoint(every_n_train_steps=...)); a scheduled round missing
        # here is run now, at a point every rank reaches in the same order.
        self.on_train_epoch_start(trainer, pl_module)
        index = batch["index"]
        batch["pseudo_labels"] = self._labels_on(index.device)[:, index]

    # ------------------------------------------------------------------ the round
    @torch.no_grad()
    def label_round(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        """One label round; returns its diagnostics (per head: iterations, error, sizes, changes)."""
        t0 = time.perf_counter()
        ks = self._check_module(pl_module)
        comm = self._comm(trainer)
        indices, banks = self._fill_bank(trainer, pl_module, len(ks))
        relaxed = self.b_penalty is not None and trainer.current_epoch >= self.relax_after
        bank, heads, self.potentials = assign_labels(
            indices, banks, self.labels, self.potentials, self.lam, self.solver, comm,
            rounding=self.rounding if relaxed or self.b_penalty is None else self.hard_rounding,
            dtype=self.solver_dtype, b_penalty=self.b_penalty if relaxed else None,
            priors=None if self.cluster_prior is None else [torch.tensor(self.cluster_prior)] * len(ks),
        )
        self.labels = bank
        rows_per_rank = comm.gather_sizes(heads[0]["rows"])
        return {"heads": heads, "seconds": time.perf_counter() - t0, "world_size": comm.world_size,
                "rows_per_rank": rows_per_rank}

    def _label_pass(self, loader: DataLoader, pl_module: pl.LightningModule, n_heads: int, probabilities: bool):
        """One no-grad pass: dataset indices (n,) and per head (n, K_t) logits (or softmax probabilities);
        ``None`` when this rank's loader is empty."""
        indices, banks = [], [[] for _ in range(n_heads)]
        for batch in loader:
            batch = pl_module.transfer_batch_to_device(batch, pl_module.device, 0)
            logits = pl_module.sela_logits(batch)
            if len(logits) != n_heads:
                raise ValueError(f"sela_logits returned {len(logits)} heads, sela_num_clusters lists {n_heads}")
            indices.append(batch["index"].cpu())
            for h, lg in enumerate(logits):
                lg = lg.detach().float()
                banks[h].append(lg.softmax(1) if probabilities else lg)
        if not indices:
            return None
        return torch.cat(indices), [torch.cat(b) for b in banks]

    def _fill_bank(self, trainer: pl.Trainer, pl_module: pl.LightningModule, n_heads: int):
        """This rank's dataset indices (n,) and per head (n, K_t) scores: logits (one view) or the log of
        the softmax averaged over ``label_views`` augmented views."""
        was_training = pl_module.training
        pl_module.eval()
        views = self.label_views
        try:
            first = self._label_pass(self._loader(trainer, None if views == 1 else 0), pl_module, n_heads, views > 1)
            for view in range(1, views if first is not None else 0):
                indices, probs = self._label_pass(self._loader(trainer, view), pl_module, n_heads, True)
                if not torch.equal(indices, first[0]):
                    raise ValueError("label_views: every view's label pass must visit the same indices in the same order")
                for total, p in zip(first[1], probs):
                    total.add_(p)
        finally:
            pl_module.train(was_training)
        if first is None:
            return torch.zeros(0, dtype=torch.long), [torch.zeros(0, int(k), device=pl_module.device)
                                                       for k in pl_module.sela_num_clusters]
        indices, banks = first
        if views > 1:  # log of the mean probability (log_softmax of it in assign_labels changes nothing)
            banks = [b.div_(views).clamp_(min=1e-30).log_() for b in banks]
        return indices, banks
