"""Lightning data modules over the indexed datasets (train / label / val / test loaders)."""
from __future__ import annotations

import pytorch_lightning as pl
from torch.utils.data import DataLoader

from otlearn.data.digits import Digits, DigitsAugment
from otlearn.data.indexed import EpochShuffleSampler, IndexedDataset, label_view_seed
from otlearn.data.resumable import ResumableLoader, trainer_of


class DigitsDataModule(pl.LightningDataModule):
    """Digits with the fixed stratified 70/30 split.

    * train: augmented training split (random affine, brightness, noise), reshuffled per epoch
      from ``(seed, epoch)`` — the same order and the same augmentations after a resume, which starts at
      the batch it stopped at even inside an epoch (:class:`~otlearn.data.resumable.ResumableLoader`);
    * ``label_dataset()``: the training split without augmentation (the SeLa label pass);
      ``label_dataset(view=v)``: the same, augmented under a view-specific seed;
    * val / test: the held-out 30% without augmentation.

    Args:
        batch_size: training batch size.
        augment: ``True`` (default augmentation), ``False`` (none: e.g. for autoencoders), or
            keyword arguments of :class:`DigitsAugment`.
        seed: seed of the shuffling and augmentation streams.
        num_workers: DataLoader workers.
        imbalance: > 1 makes both splits long-tailed (class frequencies falling geometrically from 1 to
            ``1/imbalance``; see :class:`~otlearn.data.digits.Digits`).
    """

    def __init__(self, batch_size: int = 128, augment: bool | dict = True, seed: int = 0, num_workers: int = 0,
                 imbalance: float = 1.0) -> None:
        super().__init__()
        self.imbalance = imbalance
        self.batch_size = batch_size
        self.seed = seed
        self.num_workers = num_workers
        if augment is True:
            transform = DigitsAugment()
        elif augment is False or augment is None:
            transform = None
        elif isinstance(augment, dict):
            transform = DigitsAugment(**augment)
        else:
            raise ValueError(f"augment must be True, False or a dict of DigitsAugment arguments, got {augment!r}")
        self.transform = transform
        self.train_set = IndexedDataset(Digits("train", imbalance), transform, seed=seed)

    def label_dataset(self, view: int | None = None) -> IndexedDataset:
        """The training split for the label pass: un-augmented (``view=None``), or augmented with the
        training augmentation under its own seeded stream ``view`` (SelfLabelCallback's ``label_views``)."""
        if view is None or self.transform is None:
            return IndexedDataset(Digits("train", self.imbalance))
        return IndexedDataset(Digits("train", self.imbalance), self.transform, seed=label_view_seed(self.seed, view))

    def eval_train_dataset(self) -> IndexedDataset:
        return self.label_dataset()

    def test_dataset(self) -> IndexedDataset:
        return IndexedDataset(Digits("test", self.imbalance))

    def set_epoch(self, epoch: int) -> None:
        self.train_set.set_epoch(epoch)

    def train_dataloader(self) -> DataLoader:
        sampler = EpochShuffleSampler(self.train_set, seed=self.seed)
        return ResumableLoader(self.train_set, batch_size=self.batch_size, sampler=sampler, drop_last=False,
                               num_workers=self.num_workers, persistent_workers=False, trainer=trainer_of(self))

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.test_dataset(), batch_size=512, num_workers=self.num_workers)

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()


class PatchesDataModule(pl.LightningDataModule):
    """RGB patches of scikit-image's photographs (:class:`~otlearn.data.patches.NaturalPatches`), split by image.

    * train: non-augmented training patches (``stride`` apart), reshuffled per epoch from ``(seed, epoch)``;
    * val / test: patches of the held-out photographs, ``test_stride`` apart.

    Both strides default to half a patch (overlapping patches: four times as many as a plain grid).

    Args:
        batch_size: training batch size.
        patch: patch side in pixels; stride, test_stride: grid steps of the two splits.
        images: the split of photographs, ``"scenes"`` or ``"stereo"`` (see :class:`~otlearn.data.patches.NaturalPatches`).
        seed: seed of the shuffling stream.
        num_workers: DataLoader workers.
    """

    def __init__(self, batch_size: int = 128, patch: int = 16, stride: int | None = None,
                 test_stride: int | None = None, images: str = "scenes", seed: int = 0, num_workers: int = 0) -> None:
        super().__init__()
        from otlearn.data.patches import NaturalPatches

        self.batch_size, self.seed, self.num_workers, self.images = batch_size, seed, num_workers, images
        half = max(1, patch // 2)
        self.patch = patch
        self.test_stride = half if test_stride is None else test_stride
        self.train_set = IndexedDataset(NaturalPatches("train", patch, half if stride is None else stride, images))

    def eval_train_dataset(self) -> IndexedDataset:
        """The training patches (never augmented), for evaluations over the training split."""
        return self.train_set

    def test_dataset(self) -> IndexedDataset:
        from otlearn.data.patches import NaturalPatches

        return IndexedDataset(NaturalPatches("test", self.patch, self.test_stride, self.images))

    def set_epoch(self, epoch: int) -> None:
        self.train_set.set_epoch(epoch)

    def train_dataloader(self) -> DataLoader:
        sampler = EpochShuffleSampler(self.train_set, seed=self.seed)
        return ResumableLoader(self.train_set, batch_size=self.batch_size, sampler=sampler, num_workers=self.num_workers,
                               trainer=trainer_of(self))

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.test_dataset(), batch_size=512, num_workers=self.num_workers)

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()


class ShapesDataModule(pl.LightningDataModule):
    """Synthetic panoptic shapes (:class:`~otlearn.data.shapes.SyntheticPanopticShapes`) for
    point-supervised segmentation: disjoint seeds for the train and held-out splits.

    Args:
        train_size, val_size: number of images per split.
        image_size: side in pixels.
        seed: train images use ``seed``, held-out images ``seed + 1``.
        batch_size, num_workers: loader settings.
    """

    def __init__(self, train_size: int = 96, val_size: int = 48, image_size: int = 64, seed: int = 0,
                 batch_size: int = 16, num_workers: int = 0) -> None:
        super().__init__()
        self.save_hyperparameters()

    def setup(self, stage: str | None = None) -> None:
        from otlearn.data.shapes import SyntheticPanopticShapes

        hp = self.hparams
        self.train_set = SyntheticPanopticShapes(hp.train_size, hp.image_size, seed=hp.seed)
        self.val_set = SyntheticPanopticShapes(hp.val_size, hp.image_size, seed=hp.seed + 1)

    def _loader(self, dataset) -> DataLoader:
        from otlearn.data.shapes import collate_panoptic

        return DataLoader(dataset, batch_size=self.hparams.batch_size, collate_fn=collate_panoptic,
                          num_workers=self.hparams.num_workers, persistent_workers=self.hparams.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        from otlearn.data.shapes import collate_panoptic

        # reshuffled per epoch from (seed, epoch), so that a resume inside an epoch continues exactly
        return ResumableLoader(self.train_set, batch_size=self.hparams.batch_size, collate_fn=collate_panoptic,
                               sampler=EpochShuffleSampler(self.train_set, seed=self.hparams.seed),
                               num_workers=self.hparams.num_workers, persistent_workers=self.hparams.num_workers > 0,
                               trainer=trainer_of(self))

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set)

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()

    def predict_dataloader(self) -> DataLoader:
        return self.val_dataloader()
