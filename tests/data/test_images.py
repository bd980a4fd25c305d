"""CIFAR-10 and image-folder loaders on tiny files written here; missing paths fail clearly."""
import os
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from otlearn.data import CIFAR10Folder, ImageDataModule, image_folder


def _write_cifar(root, n_per_batch=6):
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        entry = {"data": rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8),
                 "labels": rng.integers(0, 10, n_per_batch).tolist(), "batch_label": name}
        with open(base / name, "wb") as fh:
            pickle.dump(entry, fh)
    return entry


def test_cifar10_reads_torchvision_layout(tmp_path):
    last = _write_cifar(tmp_path)
    train, test = CIFAR10Folder(str(tmp_path), train=True), CIFAR10Folder(str(tmp_path), train=False)
    assert len(train) == 30 and len(test) == 6
    image, target = test[2]
    assert image.shape == (3, 32, 32) and target == last["labels"][2]
    expected = torch.from_numpy(last["data"][2].reshape(3, 32, 32)).float() / 255
    assert torch.allclose(image, expected)


def test_cifar10_datamodule_batches_carry_indices(tmp_path):
    _write_cifar(tmp_path)
    dm = ImageDataModule(kind="cifar10", root=str(tmp_path), image_size=32, batch_size=4, num_workers=0)
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (4, 3, 32, 32) and batch["index"].shape == (4,)
    dm.train_set.set_epoch(0)
    assert torch.equal(dm.train_set[3]["image"], dm.train_set[3]["image"])  # seeded augmentation
    assert len(dm.label_dataset()) == 30 and len(dm.test_dataset()) == 6


def test_image_folder(tmp_path):
    for cls in ("cat", "dog"):
        (tmp_path / "train" / cls).mkdir(parents=True)
        (tmp_path / "val" / cls).mkdir(parents=True)
        for i in range(3):
            for split in ("train", "val"):
                Image.fromarray(np.full((40, 50, 3), 40 * i, dtype=np.uint8)).save(tmp_path / split / cls / f"{i}.png")
    ds = image_folder(str(tmp_path / "train"), image_size=32)
    image, target = ds[4]
    assert image.shape == (3, 32, 32) and target == 1
    dm = ImageDataModule(kind="folder", root=str(tmp_path), image_size=24, batch_size=2, num_workers=0)
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (2, 3, 24, 24)


@pytest.mark.parametrize("kind", ["cifar10", "folder"])
def test_missing_paths_fail_clearly(tmp_path, kind):
    with pytest.raises(FileNotFoundError, match="never downloads|image folder not found"):
        ImageDataModule(kind=kind, root=str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="kind must be"):
        ImageDataModule(kind="imagenet", root=str(tmp_path))
