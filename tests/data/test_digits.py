import numpy as np
import torch

from otlearn.data import Digits, DigitsAugment, DigitsDataModule, EpochShuffleSampler, IndexedDataset, ShardSampler


def test_fixed_stratified_split():
    train, test = Digits("train"), Digits("test")
    assert len(train) == 1257 and len(test) == 540
    assert train.images.shape == (1257, 1, 8, 8) and float(train.images.max()) <= 1.0
    fractions = np.bincount(test.targets.numpy()) / np.bincount(Digits("all").targets.numpy())
    assert np.all(np.abs(fractions - 0.3) < 0.02)  # stratified
    assert torch.equal(Digits("test").images, test.images)  # fixed


def test_samples_carry_index_and_augmentation_is_reproducible():
    ds = IndexedDataset(Digits("train"), DigitsAugment(), seed=4)
    a, b = ds[17], ds[17]
    assert a["index"] == 17 and a["target"] == Digits("train")[17][1]
    assert torch.equal(a["image"], b["image"])  # same (seed, epoch, index) -> same view
    ds.set_epoch(1)
    assert not torch.equal(ds[17]["image"], a["image"])
    assert a["image"].shape == (1, 8, 8) and torch.isfinite(a["image"]).all()


def test_samplers():
    s = EpochShuffleSampler(range(10), seed=1)
    first = list(s)
    assert sorted(first) == list(range(10)) and list(s) == first
    s.set_epoch(1)
    assert list(s) != first
    shards = [list(ShardSampler(10, r, 3)) for r in range(3)]
    assert sum(shards, []) == list(range(10)) and [len(x) for x in shards] == [3, 3, 4]


def test_datamodule_loaders():
    dm = DigitsDataModule(batch_size=64)
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (64, 1, 8, 8) and batch["index"].shape == (64,)
    assert len(dm.label_dataset()) == 1257 and len(dm.test_dataset()) == 540
