"""Lightning data modules over the indexed datasets (train / label / val / test loaders)."""
from __future__ import annotations

import pytorch_lightning as pl
from torch.utils.data import DataLoader

from otlearn.data.digits import Digits, DigitsAugment
from otlearn.data.indexed import EpochShuffleSampler, IndexedDataset


class DigitsDataModule(pl.LightningDataModule):
    """Digits with the fixed stratified 70/30 split.

    * train: augmented training split (random affine, brightness, noise), reshuffled per epoch
      from ``(seed, epoch)`` — the same order and the same augmentations after a resume;
    * ``label_dataset()``: the training split without augmentation (the SeLa label pass);
    * val / test: the held-out 30% without augmentation.

    Args:
        batch_size: training batch size.
        augment: keyword arguments of :class:`DigitsAugment`, or ``None`` for no augmentation.
        seed: seed of the shuffling and augmentation streams.
        num_workers: DataLoader workers.
    """

    def __init__(self, batch_size: int = 128, augment: dict | None = None, seed: int = 0, num_workers: int = 0) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.augment = {} if augment is None else augment
        self.use_augment = augment is not False
        self.seed = seed
        self.num_workers = num_workers
        self.train_set = IndexedDataset(Digits("train"), DigitsAugment(**self.augment), seed=seed)

    def label_dataset(self) -> IndexedDataset:
        return IndexedDataset(Digits("train"))

    def eval_train_dataset(self) -> IndexedDataset:
        return self.label_dataset()

    def test_dataset(self) -> IndexedDataset:
        return IndexedDataset(Digits("test"))

    def set_epoch(self, epoch: int) -> None:
        self.train_set.set_epoch(epoch)

    def train_dataloader(self) -> DataLoader:
        sampler = EpochShuffleSampler(self.train_set, seed=self.seed)
        return DataLoader(self.train_set, batch_size=self.batch_size, sampler=sampler, drop_last=False,
                          num_workers=self.num_workers, persistent_workers=False)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.test_dataset(), batch_size=512, num_workers=self.num_workers)

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()
