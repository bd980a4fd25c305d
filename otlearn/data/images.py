"""Loaders for users' own image data: CIFAR-10 (torchvision's python format) and image folders.

Nothing is ever downloaded: a missing path raises ``FileNotFoundError`` saying what was
expected where. Both return ``(image (3, H, W) float tensor in [0, 1], target)`` and are wrapped
in :class:`~otlearn.data.indexed.IndexedDataset` by :class:`ImageDataModule`.
"""
from __future__ import annotations

import os
import pickle
from typing import Callable

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from otlearn.data.indexed import IndexedDataset, label_view_seed

CIFAR_DIR = "cifar-10-batches-py"
CIFAR_TRAIN = [f"data_batch_{i}" for i in range(1, 6)]
CIFAR_TEST = ["test_batch"]


class CIFAR10Folder(Dataset):
    """CIFAR-10 from ``<root>/cifar-10-batches-py/{data_batch_1..5, test_batch}`` (pickled dicts
    with ``data`` (n, 3072) uint8 and ``labels``), the layout torchvision's ``CIFAR10`` downloads.

    Unlike torchvision's class it never downloads and does not check the files' checksums, so a
    subset or a re-packed copy works too.
    """

    def __init__(self, root: str, train: bool = True) -> None:
        base = os.path.join(os.path.expanduser(root), CIFAR_DIR)
        names = CIFAR_TRAIN if train else CIFAR_TEST
        missing = [n for n in names if not os.path.isfile(os.path.join(base, n))]
        if missing:
            raise FileNotFoundError(
                f"CIFAR-10 not found: expected {', '.join(missing)} in {base} (torchvision's python "
                f"format, e.g. from https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz); otlearn never downloads"
            )
        data, labels = [], []
        for name in names:
            with open(os.path.join(base, name), "rb") as fh:
                entry = pickle.load(fh, encoding="latin1")
            data.append(np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            labels.extend(entry["labels"] if "labels" in entry else entry["fine_labels"])
        self.data = torch.from_numpy(np.concatenate(data))
        self.targets = torch.tensor(labels, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.data[i].float() / 255.0, int(self.targets[i])


def image_folder(root: str, image_size: int | None = None) -> Dataset:
    """An ImageNet-style folder ``<root>/<class>/<image>`` (torchvision's ``ImageFolder``)."""
    from torchvision import datasets, transforms

    root = os.path.expanduser(root)
    if not os.path.isdir(root):
        raise FileNotFoundError(f"image folder not found: {root} (expected <root>/<class name>/<image files>)")
    steps = [transforms.ToTensor()]
    if image_size:
        steps = [transforms.Resize(image_size), transforms.CenterCrop(image_size)] + steps
    return datasets.ImageFolder(root, transform=transforms.Compose(steps))


class TorchvisionAugment:
    """Adapt a torchvision transform to otlearn's ``(image, generator) -> image`` signature.

    The global torch RNG is forked and seeded from ``generator`` for the call, so a sample's
    augmentation depends only on ``(seed, epoch, index)`` — resumed runs see the same images.
    """

    def __init__(self, transform: Callable) -> None:
        self.transform = transform

    def __call__(self, image: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        seed = int(torch.randint(0, 2**62, (1,), generator=gen))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.transform(image)


def standard_augment(image_size: int, strength: str = "sela") -> Callable:
    """SeLa/SwAV-style augmentation of float tensors: random resized crop, flip, colour jitter, grey."""
    from torchvision.transforms import v2

    scale = (0.08, 1.0) if image_size >= 96 else (0.3, 1.0)
    return v2.Compose([
        v2.RandomResizedCrop(image_size, scale=scale, antialias=True),
        v2.RandomHorizontalFlip(),
        v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
        v2.RandomGrayscale(p=0.2),
    ])


class ImageDataModule(pl.LightningDataModule):
    """CIFAR-10 or an image folder on the user's path, with indexed samples for self-labelling.

    Args:
        kind: ``"cifar10"`` (``root`` holds ``cifar-10-batches-py``) or ``"folder"`` (``root/train``
            and ``root/val`` in ImageNet layout).
        root: data path; checked when the module is built, with a clear error when missing.
        image_size: training crop size (32 for CIFAR, 224 for ImageNet).
        batch_size, num_workers, seed: loader settings; the train order and augmentations are
            seeded by ``(seed, epoch)``.
        augment: SeLa/SwAV-style crops, flips and colour jitter on the training set (``False`` for
            autoencoders, which reconstruct the images themselves).
    """

    def __init__(self, kind: str = "cifar10", root: str = "data", image_size: int = 32, batch_size: int = 256,
                 num_workers: int = 8, seed: int = 0, augment: bool = True) -> None:
        super().__init__()
        if kind not in ("cifar10", "folder"):
            raise ValueError(f"kind must be 'cifar10' or 'folder', got {kind!r}")
        self.kind, self.root, self.image_size = kind, root, image_size
        self.batch_size, self.num_workers, self.seed = batch_size, num_workers, seed
        self._train_base = self._base(train=True)  # fails fast on a missing path
        transform = TorchvisionAugment(standard_augment(image_size)) if augment else None
        self.transform = transform
        self.train_set = IndexedDataset(self._train_base, transform, seed=seed)

    def _base(self, train: bool) -> Dataset:
        if self.kind == "cifar10":
            return CIFAR10Folder(self.root, train=train)
        sub = os.path.join(self.root, "train" if train else "val")
        return image_folder(sub, image_size=None if train else self.image_size)

    def set_epoch(self, epoch: int) -> None:
        self.train_set.set_epoch(epoch)

    def label_dataset(self, view: int | None = None) -> IndexedDataset:
        """Training images for the label pass: un-augmented (``view=None``; folders resized to ``image_size``),
        or with the training augmentation under view ``view``'s own seeded stream."""
        if view is not None and self.transform is not None:
            return IndexedDataset(self._train_base, self.transform, seed=label_view_seed(self.seed, view))
        if self.kind == "folder":
            return IndexedDataset(image_folder(os.path.join(self.root, "train"), image_size=self.image_size))
        return IndexedDataset(self._train_base)

    def eval_train_dataset(self) -> IndexedDataset:
        return self.label_dataset()

    def test_dataset(self) -> IndexedDataset:
        return IndexedDataset(self._base(train=False))

    def train_dataloader(self) -> DataLoader:
        from otlearn.data.indexed import EpochShuffleSampler
        from otlearn.data.resumable import ResumableLoader, trainer_of

        return ResumableLoader(self.train_set, batch_size=self.batch_size, sampler=EpochShuffleSampler(self.train_set, self.seed),
                               num_workers=self.num_workers, drop_last=True, persistent_workers=False,
                               trainer=trainer_of(self))

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.test_dataset(), batch_size=self.batch_size, num_workers=self.num_workers)

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()
