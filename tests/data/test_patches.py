"""NaturalPatches / PatchesDataModule: scikit-image photographs cut into patches, split by image."""
import pytest
import torch

from otlearn.data import NaturalPatches, PatchesDataModule
from otlearn.data.patches import FLAT_STD, TEST_IMAGES, TRAIN_IMAGES


def test_split_is_by_image_and_patches_are_textured_rgb():
    train, test = NaturalPatches("train", 16), NaturalPatches("test", 16)
    assert not set(TRAIN_IMAGES) & set(TEST_IMAGES)
    assert len(train) > 4000 and len(test) > 1000
    for ds in (train, test):
        image, source = ds[len(ds) // 2]
        assert image.shape == (3, 16, 16) and image.dtype == torch.float32
        assert float(ds.images.min()) >= 0 and float(ds.images.max()) <= 1
        assert float(ds.images.flatten(1).std(1).min()) >= FLAT_STD
        assert set(ds.targets.tolist()) == set(range(len(ds.source_names)))


def test_overlapping_grid_and_datamodule():
    dense = NaturalPatches("test", 16, stride=8)
    assert len(dense) > 3 * len(NaturalPatches("test", 16))
    dm = PatchesDataModule(batch_size=32, patch=16)
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (32, 3, 16, 16) and batch["index"].shape == (32,)
    assert len(dm.test_dataset()) == len(dense)
    with pytest.raises(ValueError, match="split"):
        NaturalPatches("val")
