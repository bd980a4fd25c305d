"""Samples that carry their dataset index, and samplers that shard or reshuffle deterministically.

Every otlearn dataset returns a dict ``{"image": Tensor, "target": int, "index": int}``. The index
keys the label banks of the self-labelling callback; ``target`` is only used for evaluation.
"""
from __future__ import annotations

from typing import Callable, Iterator, Sequence

import torch
from torch.utils.data import Dataset, Sampler


def label_view_seed(seed: int, view: int) -> int:
    """Augmentation seed of label view ``view`` (SeLa's ``label_views``), disjoint from the training stream ``seed``."""
    return (seed + 1) * 1_000_003 + 7919 * (view + 1)


class IndexedDataset(Dataset):
    """Wrap ``base[i] -> (image, target)`` as ``{"image", "target", "index"}`` dicts.

    Args:
        base: any map-style dataset returning ``(image, target)``.
        transform: optional ``transform(image, generator) -> image``; the generator is seeded by
            ``(seed, epoch, index)`` so an augmented sample is the same whether the run was resumed
            or not, and whatever the number of workers.
        seed: base seed of the augmentation stream.
    """

    def __init__(self, base: Dataset, transform: Callable | None = None, seed: int = 0) -> None:
        self.base = base
        self.transform = transform
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> dict:
        image, target = self.base[index]
        if self.transform is not None:
            gen = torch.Generator().manual_seed(hash((self.seed, self.epoch, int(index))) & 0x7FFF_FFFF_FFFF)
            image = self.transform(image, gen)
        return {"image": image, "target": int(target), "index": int(index)}


class EpochShuffleSampler(Sampler[int]):
    """A random permutation per epoch from ``(seed, epoch)``: reproducible across resumes.

    Lightning calls ``set_epoch`` at every epoch; under DDP use Lightning's DistributedSampler,
    which is seeded the same way.
    """

    def __init__(self, data: Sequence, seed: int = 0) -> None:
        self.n = len(data)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[int]:
        gen = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=gen).tolist())


class ShardSampler(Sampler[int]):
    """Contiguous, unpadded shard ``[r N / W, (r+1) N / W)`` of ``range(N)`` for rank r.

    Used for label passes: every index is seen by exactly one rank (shards may differ in size).
    """

    def __init__(self, n: int, rank: int, world_size: int) -> None:
        self.start = rank * n // world_size
        self.stop = (rank + 1) * n // world_size

    def __len__(self) -> int:
        return self.stop - self.start

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.start, self.stop))
