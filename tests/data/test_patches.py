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


def test_stereo_split_trains_on_the_left_view_and_tests_on_the_right():
    import skimage.data

    train, test = NaturalPatches("train", 16, 8, images="stereo"), NaturalPatches("test", 16, 8, images="stereo")
    assert train.source_names == ("motorcycle_left",) and test.source_names == ("motorcycle_right",)
    left, right, _ = skimage.data.stereo_motorcycle()
    assert not (left == right).all()  # two photographs: no test pixel is a training pixel
    first = torch.from_numpy(right[:16, :16, :3].astype("float32") / 255).permute(2, 0, 1)
    assert float(first.flatten().std()) >= FLAT_STD  # textured, so kept: the first test patch is the right view's corner
    assert torch.equal(test.images[0], first)
    assert 0.8 < len(test) / len(train) < 1.25  # the same scene: about as many textured patches
    dm = PatchesDataModule(batch_size=32, patch=16, images="stereo")
    assert len(dm.train_set) == len(train) and len(dm.test_dataset()) == len(test)
    with pytest.raises(ValueError, match="images must be one of"):
        NaturalPatches("train", 16, images="astronaut")
