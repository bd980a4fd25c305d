"""SelfLabelCallback: SeLa's label step for any LightningModule, rows sharded over processes.

Protocol the LightningModule implements (:class:`SelfLabelModel`; ``SelfLabeling`` does, yours can too):

* ``sela_num_clusters: list[int]`` — K of each of the T heads;
* ``sela_logits(batch) -> Sequence[Tensor]`` — T tensors (B, K_t) of head logits for a batch
  (called under ``torch.no_grad()`` with the module in eval mode);
* batches carry the (B,) dataset indices of their samples: ``batch["index"]`` for dict batches, or
  any entry named by ``index_key`` (a key, or a position for tuple/list batches such as
  solo-learn's ``(index, views, target)``: ``index_key=0``). Before each training step the callback
  adds ``batch["pseudo_labels"]`` ((T, B) int64) to dict batches; for any batch format,
  :meth:`SelfLabelCallback.labels_for` returns them.

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
from typing import Any, Callable, Literal, Protocol, Sequence, runtime_checkable

import pytorch_lightning as pl
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from pytorch_lightning.utilities import rank_zero_info

from otlearn.comm import Communicator, resolve
from otlearn.data.indexed import ShardSampler
from otlearn.eval.features import batch_entry, collect
from otlearn.ot import SinkhornSolver
from otlearn.sela.labeling import assign_labels
from otlearn.sela.schedule import LabelSchedule
from otlearn.sela.smoothing import NeighbourSmoothing


@runtime_checkable
class SelfLabelModel(Protocol):
    """What :class:`SelfLabelCallback` needs of a LightningModule."""

    @property
    def sela_num_clusters(self) -> Sequence[int]:
        """K of each of the T heads."""
        ...

    def sela_logits(self, batch: Any) -> Sequence[torch.Tensor]:
        """T tensors (B, K_t) of head logits for ``batch``."""
        ...


def label_checksum(labels: torch.Tensor) -> str:
    """A short, stable fingerprint of a label bank (to check that a resumed run has the same labels)."""
    import hashlib

    return hashlib.sha1(labels.to(torch.int64).contiguous().numpy().tobytes()).hexdigest()[:12]


class SelfLabelCallback(pl.Callback):
    """SeLa's self-labelling as a Lightning callback.

    Args:
        lam: λ of SeLa (``ε = 1/λ`` on log-probabilities): 10 on CIFAR, 25 on ImageNet.
        schedule: when rounds run (default: every epoch).
        solver: the configured :class:`~otlearn.ot.SinkhornSolver` (default ``SinkhornSolver()``: the
            solver's own defaults, tol 1e-3 on the relative cluster-size error, max_iter 1000).
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
        group: the process group the samples are sharded over: ``"auto"`` (default) = the default
            group when the trainer runs several processes, ``None`` = this process alone, or a subgroup.
        index_key: where a batch holds its (B,) dataset indices: a dict key (default ``"index"``) or a
            position in tuple/list batches (solo-learn's ``(index, views, target)``: 0).
        progress: show the label pass and the solves as a progress bar on rank 0 (when the trainer
            shows one). Each round's duration is logged as ``sela/round_seconds``.
        smoothing: a :class:`~otlearn.sela.smoothing.NeighbourSmoothing` (a fixed kNN graph over the label
            dataset, α, steps): each head's predictions are propagated over the graph before its label solve,
            ``P̃ = (1 − α) P + α W P̃`` (``steps`` times), and the solve uses ``log P̃``. It couples the labels of
            samples close in the graph's space, e.g. the raw inputs
            (``NeighbourSmoothing(knn_graph(images, 20))``). Measured on digits (5 seeds, at 2 and at 1 torch
            threads): kNN accuracy of the features +0.014 / +0.005 (0.965 → 0.979, 0.968 → 0.973), NMI within
            the seed spread (0.880 ± 0.040 → 0.885 ± 0.040, 0.902 ± 0.043 → 0.910 ± 0.020; benchmarks/RESULTS.md).
            Every rank gathers the (N, K) predictions of each head for it (per round: the indices and each head, one
            all-gather each).
            ``None`` (default): SeLa.
    """

    def __init__(
        self,
        lam: float = 10.0,
        schedule: LabelSchedule | None = None,
        solver: SinkhornSolver | None = None,
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
        group: dist.ProcessGroup | Literal["auto"] | None = "auto",
        index_key: str | int = "index",
        progress: bool = True,
        smoothing: NeighbourSmoothing | None = None,
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
        self.solver = solver if solver is not None else SinkhornSolver()
        self.rounding = rounding
        self.label_dataset = label_dataset
        self.label_dataloader = label_dataloader
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.solver_dtype = solver_dtype
        self.label_views = label_views
        self.group = group
        self.index_key = index_key
        self.progress = progress
        if smoothing is not None and not isinstance(smoothing, NeighbourSmoothing):
            raise ValueError(f"smoothing must be a NeighbourSmoothing or None, got {type(smoothing).__name__}")
        self.smoothing = smoothing
        # state saved in checkpoints
        self.labels: torch.Tensor | None = None  # (T, N) int64
        self._device_labels: tuple[torch.Tensor, torch.Tensor] | None = None  # (labels it copies, copy)
        self.potentials: list[torch.Tensor | None] = []
        self.history: list[dict[str, Any]] = []  # one entry per label round, with its "epoch"

    @property
    def rounds_done(self) -> list[int]:
        """Epochs whose label round has run (from ``history``)."""
        return [int(h["epoch"]) for h in self.history]

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {
            "labels": self.labels,
            "potentials": [None if g is None else g.cpu() for g in self.potentials],
            "history": list(self.history),
            "lam": self.lam,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.labels = state_dict["labels"]
        self.potentials = list(state_dict["potentials"])
        self.history = list(state_dict["history"])
        if self.labels is not None:
            rank_zero_info(
                f"SelfLabelCallback: restored label bank {tuple(self.labels.shape)} "
                f"(checksum {label_checksum(self.labels)}), label rounds done at epochs {self.rounds_done}"
            )

    # ------------------------------------------------------------------ helpers
    def _comm(self, trainer: pl.Trainer) -> Communicator:
        if self.group == "auto":
            return resolve("auto") if trainer.world_size > 1 else Communicator()
        return resolve(self.group)

    def batch_indices(self, batch: Any) -> torch.Tensor:
        """The (B,) dataset indices of ``batch`` (its ``index_key`` entry; SelfLabelCallback(index_key=) names it)."""
        return batch_entry(batch, self.index_key, "dataset indices (index_key)")

    def labels_for(self, batch: Any) -> torch.Tensor:
        """(T, B) int64 current labels of ``batch``'s samples, on the indices' device (any batch format)."""
        if self.labels is None:
            raise RuntimeError("SelfLabelCallback has no labels yet: it makes them when fitting starts")
        index = self.batch_indices(batch)
        return self._labels_on(index.device)[:, index]

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
        if not isinstance(pl_module, SelfLabelModel):
            raise TypeError(
                f"{type(pl_module).__name__} does not implement the self-labelling protocol: it needs "
                "`sela_num_clusters: list[int]` and `sela_logits(batch) -> Sequence[Tensor (B, K)]`"
            )
        return [int(k) for k in pl_module.sela_num_clusters]

    def _initial_labels(self, n: int, ks: list[int]) -> torch.Tensor:
        """Random balanced labels per head: a seeded permutation of ``arange(N) % K``."""
        gen = torch.Generator().manual_seed(self.seed)
        return torch.stack([torch.randperm(n, generator=gen) % k for k in ks])

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
        if self.smoothing is not None and self.smoothing.num_samples != self.labels.shape[1]:
            raise ValueError(f"smoothing's graph covers {self.smoothing.num_samples} samples, the label dataset has "
                             f"{self.labels.shape[1]}")

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch
        if epoch in self.rounds_done or epoch not in self.schedule.label_epochs(trainer.max_epochs or 10**9):
            return
        stats = self.label_round(trainer, pl_module)
        stats["epoch"] = epoch
        self.history.append(stats)
        head0 = {k: float(v) for k, v in stats["heads"][0].items() if k not in ("sizes", "rows")}
        changed = head0.pop("changed")
        pl_module.log_dict({f"sela/{k}": v for k, v in head0.items()}, prog_bar=False, sync_dist=True)
        pl_module.log("sela/changed", changed, prog_bar=True, sync_dist=True)
        pl_module.log("sela/round_seconds", float(stats["seconds"]), sync_dist=True)
        rank_zero_info(f"SelfLabelCallback: label round at epoch {epoch} took {stats['seconds']:.1f} s "
                       f"(head 0: {stats['heads'][0]['iterations']} solver iterations, {changed:.1%} labels changed)")

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        index = self.batch_indices(batch)
        # Lightning skips on_train_epoch_start of the epoch after a checkpoint saved at the last batch
        # end of an epoch (e.g. ModelCheckpoint(every_n_train_steps=...)); a scheduled round missing
        # here is run now, at a point every rank reaches in the same order.
        self.on_train_epoch_start(trainer, pl_module)
        if isinstance(batch, dict):
            batch["pseudo_labels"] = self._labels_on(index.device)[:, index]

    # ------------------------------------------------------------------ the round
    def _progress_bar(self, trainer: pl.Trainer, total: int) -> tqdm:
        """A bar on rank 0 when the trainer shows progress (a disabled bar elsewhere)."""
        shown = self.progress and trainer.is_global_zero and trainer.progress_bar_callback is not None
        return tqdm(total=total, desc=f"label round (epoch {trainer.current_epoch})", unit="batch",
                    leave=False, dynamic_ncols=True, disable=not shown)

    @torch.no_grad()
    def label_round(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        """One label round; returns its diagnostics (per head: iterations, error, sizes, changes)."""
        t0 = time.perf_counter()
        ks = self._check_module(pl_module)
        comm = self._comm(trainer)
        loaders = self._label_loaders(trainer)
        try:
            total = sum(len(loader) for loader in loaders) + len(ks)
        except TypeError:  # an iterable-style loader without a length
            total = None
        with self._progress_bar(trainer, total) as bar:
            indices, banks = self._fill_bank(trainer, pl_module, len(ks), loaders, bar)
            if self.smoothing is not None:
                banks = self._smooth(indices, banks, comm)
            bar.set_postfix_str("solving")
            relaxed = self.b_penalty is not None and trainer.current_epoch >= self.relax_after
            bank, heads, self.potentials = assign_labels(
                indices, banks, self.labels, self.potentials, self.lam, self.solver, comm,
                rounding=self.rounding if relaxed or self.b_penalty is None else self.hard_rounding,
                dtype=self.solver_dtype, b_penalty=self.b_penalty if relaxed else None,
                priors=None if self.cluster_prior is None else [torch.tensor(self.cluster_prior)] * len(ks),
                on_head=lambda head: bar.update(1),
            )
        self.labels = bank
        rows_per_rank = comm.gather_sizes(heads[0]["rows"])
        return {"heads": heads, "seconds": time.perf_counter() - t0, "world_size": comm.world_size,
                "rows_per_rank": rows_per_rank}

    def _smooth(self, indices: torch.Tensor, banks: list[torch.Tensor], comm: Communicator) -> list[torch.Tensor]:
        """This rank's scores after :attr:`smoothing`: per head, every rank's rows of ``softmax(bank)`` are gathered
        into the (N, K) matrix, propagated over the graph, and this rank's rows of its log returned."""
        n = self.smoothing.num_samples
        (all_idx, *all_probs), _ = comm.all_gather_rows(indices, *(bank.double().softmax(1) for bank in banks))
        seen = torch.zeros(n, dtype=torch.bool, device=indices.device)
        seen[all_idx] = True
        if not bool(seen.all()):
            raise ValueError(f"smoothing needs a prediction for every sample: the label pass visited "
                             f"{int(seen.sum())} of {n}")
        out = []
        for bank, probs in zip(banks, all_probs):
            full = torch.zeros(n, bank.shape[1], dtype=torch.float64, device=bank.device)
            full[all_idx] = probs  # duplicates of a padded sampler carry the same prediction
            out.append(self.smoothing(full)[indices].clamp_min(1e-30).log().to(bank.dtype))
        return out

    def _label_pass(self, loader: DataLoader, pl_module: pl.LightningModule, n_heads: int, probabilities: bool,
                    bar: tqdm):
        """One no-grad pass: dataset indices (n,) and per head (n, K_t) logits (or softmax probabilities)
        on the module's device; ``None`` when this rank's loader is empty."""

        def head_outputs(batch: Any) -> list[torch.Tensor]:
            logits = pl_module.sela_logits(batch)
            if len(logits) != n_heads:
                raise ValueError(f"sela_logits returned {len(logits)} heads, sela_num_clusters lists {n_heads}")
            return [lg.float().softmax(1) if probabilities else lg for lg in logits]

        collected = collect(pl_module, loader, head_outputs, {"index": self.index_key}, device=pl_module.device,
                            to_cpu=False, on_batch=lambda: bar.update(1),
                            transfer=lambda batch: pl_module.transfer_batch_to_device(batch, pl_module.device, 0))
        return None if collected is None else (collected[0]["index"], collected[1])

    def _label_loaders(self, trainer: pl.Trainer) -> list[DataLoader]:
        """The label pass's loader of each view (one un-augmented loader when ``label_views == 1``)."""
        views = self.label_views
        return [self._loader(trainer, None if views == 1 else v) for v in range(views)]

    def _fill_bank(self, trainer: pl.Trainer, pl_module: pl.LightningModule, n_heads: int,
                   loaders: list[DataLoader] | None = None, bar: tqdm | None = None):
        """This rank's dataset indices (n,) and per head (n, K_t) scores: logits (one view) or the log of
        the softmax averaged over the views (one loader per view, default :meth:`_label_loaders`)."""
        loaders = self._label_loaders(trainer) if loaders is None else loaders
        bar = tqdm(disable=True) if bar is None else bar
        views = len(loaders)
        first = self._label_pass(loaders[0], pl_module, n_heads, views > 1, bar)
        for loader in loaders[1:] if first is not None else []:
            indices, probs = self._label_pass(loader, pl_module, n_heads, True, bar)
            if not torch.equal(indices, first[0]):
                raise ValueError("label_views: every view's label pass must visit the same indices in the same order")
            for total, p in zip(first[1], probs):
                total.add_(p)
        if first is None:
            return torch.zeros(0, dtype=torch.long), [torch.zeros(0, int(k), device=pl_module.device)
                                                       for k in pl_module.sela_num_clusters]
        indices, banks = first
        if views > 1:  # log of the mean probability (log_softmax of it in assign_labels changes nothing)
            banks = [b.div_(views).clamp_(min=1e-30).log_() for b in banks]
        return indices, banks
