"""Patches of the natural RGB images that scikit-image ships (``skimage.data``), offline.

Two fixed splits **by image** (``images=``), so no test pixel was seen in training:

* ``"scenes"``: training patches from four photographs (astronaut, rocket, the left view of the stereo
  motorcycle, immunohistochemistry), test patches from two other scenes (chelsea the cat, coffee). The
  test content is not the training content (no sky, no stained tissue, other colours): it measures
  transfer, and codes of training-only content stay unused on it whatever the quantizer.
* ``"stereo"``: training patches from the left view of scikit-image's stereo motorcycle pair, test
  patches from the right view: another photograph (another camera position) of the same scene, so
  train and test follow the same distribution, as a random split would, without sharing pixels.

The astronomical and retina images are left out: their content (black sky, fundus) has no counterpart
in the test photographs. Patches are
``(3, P, P)`` float32 in [0, 1], cut on a regular grid (``stride`` pixels apart; ``stride < patch``
overlaps); nearly constant patches (std < 0.02) are dropped, so each split holds textured content.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from torch.utils.data import Dataset

TRAIN_IMAGES = ("astronaut", "rocket", "motorcycle_left", "immunohistochemistry")
TEST_IMAGES = ("chelsea", "coffee")
SPLITS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "scenes": (TRAIN_IMAGES, TEST_IMAGES),
    "stereo": (("motorcycle_left",), ("motorcycle_right",)),
}
FLAT_STD = 0.02


def _image(name: str) -> np.ndarray:
    """(H, W, 3) float32 in [0, 1] of one ``skimage.data`` photograph."""
    import skimage.data as data

    if name in ("motorcycle_left", "motorcycle_right"):
        image = data.stereo_motorcycle()[0 if name == "motorcycle_left" else 1]
    else:
        image = getattr(data, name)()
    image = image[..., :3].astype(np.float32) / 255.0
    return image


@lru_cache(maxsize=8)
def _patches(names: tuple[str, ...], patch: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    out, source = [], []
    for i, name in enumerate(names):
        image = torch.from_numpy(_image(name)).permute(2, 0, 1)  # (3, H, W)
        tiles = image.unfold(1, patch, stride).unfold(2, patch, stride)  # (3, nh, nw, P, P)
        tiles = tiles.permute(1, 2, 0, 3, 4).reshape(-1, 3, patch, patch)
        tiles = tiles[tiles.flatten(1).std(1) >= FLAT_STD]
        out.append(tiles.numpy())
        source.append(np.full(len(tiles), i, dtype=np.int64))
    return np.concatenate(out), np.concatenate(source)


class NaturalPatches(Dataset):
    """``ds[i] -> (patch (3, P, P) float32 in [0, 1], index of its source image)``.

    Args:
        split: ``"train"`` or ``"test"``.
        patch: side P in pixels.
        stride: grid step in pixels (default ``patch``: non-overlapping).
        images: which photographs make the two splits: ``"scenes"`` (train astronaut, rocket, the left
            motorcycle view, immunohistochemistry; test chelsea, coffee) or ``"stereo"`` (train the left
            view of the stereo motorcycle, test its right view).
    """

    def __init__(self, split: str = "train", patch: int = 16, stride: int | None = None, images: str = "scenes") -> None:
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        if images not in SPLITS:
            raise ValueError(f"images must be one of {sorted(SPLITS)}, got {images!r}")
        if patch < 2:
            raise ValueError(f"patch must be >= 2 pixels, got {patch}")
        stride = patch if stride is None else stride
        if stride < 1:
            raise ValueError(f"stride must be >= 1 pixel, got {stride}")
        names = SPLITS[images][0 if split == "train" else 1]
        tiles, source = _patches(names, patch, stride)
        self.images = torch.from_numpy(tiles)
        self.targets = torch.from_numpy(source)
        self.split, self.source_names = split, names

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i], int(self.targets[i])
