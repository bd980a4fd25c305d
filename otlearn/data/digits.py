"""scikit-learn's handwritten digits (1,797 real 8x8 images, 10 classes), offline.

A fixed stratified 70/30 train/test split (``random_state=0``), images scaled to [0, 1] as
(1, 8, 8) float tensors, and augmentations that suit 8x8 digits: a small random affine map
(rotation ±12°, translation ±0.75 px, scale 0.9–1.1, shear ±8°), brightness jitter and Gaussian
noise. Nothing is downloaded: the data ship with scikit-learn.
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

TEST_FRACTION = 0.3
SPLIT_SEED = 0


@lru_cache(maxsize=1)
def _load() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)
    train_idx, test_idx = train_test_split(
        np.arange(len(images)), test_size=TEST_FRACTION, stratify=digits.target, random_state=SPLIT_SEED
    )
    return images, digits.target.astype(np.int64), np.sort(train_idx), np.sort(test_idx)


def long_tail_subset(targets: np.ndarray, imbalance: float, seed: int = SPLIT_SEED) -> np.ndarray:
    """Sorted positions of a long-tailed subset: class c keeps ``round(n_c · imbalance^(−c/(C−1)))`` of its
    ``n_c`` samples (class 0 all of them, the last class 1/imbalance), chosen by a fixed permutation."""
    classes = np.unique(targets)
    rng = np.random.default_rng(seed)
    keep = []
    for rank, c in enumerate(classes):
        members = np.flatnonzero(targets == c)
        share = imbalance ** (-rank / max(1, len(classes) - 1))
        keep.append(rng.permutation(members)[: max(1, int(round(len(members) * share)))])
    return np.sort(np.concatenate(keep))


class Digits(Dataset):
    """One split of the digits: ``ds[i] -> (image (1, 8, 8) float32 in [0, 1], target int)``.

    ``imbalance`` > 1 keeps a long-tailed subset of the split: class frequencies fall geometrically
    from 1 (digit 0) to ``1/imbalance`` (digit 9), the same fixed subset every time.
    """

    def __init__(self, split: str = "train", imbalance: float = 1.0) -> None:
        if split not in ("train", "test", "all"):
            raise ValueError(f"split must be 'train', 'test' or 'all', got {split!r}")
        if not imbalance >= 1.0:
            raise ValueError(f"imbalance must be >= 1 (1 = the full split), got {imbalance!r}")
        images, targets, train_idx, test_idx = _load()
        idx = {"train": train_idx, "test": test_idx, "all": np.arange(len(images))}[split]
        if imbalance > 1.0:
            idx = idx[long_tail_subset(targets[idx], imbalance)]
        self.images = torch.from_numpy(images[idx]).unsqueeze(1)
        self.targets = torch.from_numpy(targets[idx])
        self.split = split

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i], int(self.targets[i])


class DigitsAugment:
    """``(image (1, 8, 8), generator) -> image``: random affine, brightness and noise.

    Args:
        rotation: max rotation in degrees; translate: max shift in pixels; scale: (min, max);
        shear: max shear in degrees; brightness: max relative change; noise: Gaussian std.
    """

    def __init__(
        self,
        rotation: float = 12.0,
        translate: float = 0.75,
        scale: tuple[float, float] = (0.9, 1.1),
        shear: float = 8.0,
        brightness: float = 0.2,
        noise: float = 0.05,
    ) -> None:
        self.rotation, self.translate, self.scale = rotation, translate, scale
        self.shear, self.brightness, self.noise = shear, brightness, noise

    def __call__(self, image: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        u = torch.rand(6, generator=gen) * 2 - 1
        angle = math.radians(self.rotation) * float(u[0])
        shear = math.radians(self.shear) * float(u[1])
        s = self.scale[0] + (self.scale[1] - self.scale[0]) * (float(u[2]) + 1) / 2
        size = image.shape[-1]
        tx, ty = (2 * self.translate / size) * float(u[3]), (2 * self.translate / size) * float(u[4])
        cos, sin = math.cos(angle), math.sin(angle)
        theta = torch.tensor(
            [[cos / s, (-sin + math.tan(shear)) / s, tx], [sin / s, cos / s, ty]], dtype=image.dtype
        )
        grid = F.affine_grid(theta[None], [1, *image.shape], align_corners=False)
        out = F.grid_sample(image[None], grid, align_corners=False, padding_mode="zeros")[0]
        out = out * (1 + self.brightness * float(u[5]))
        out = out + self.noise * torch.randn(out.shape, generator=gen)
        return out.clamp(0, 1.5)
