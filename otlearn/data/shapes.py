"""A synthetic panoptic dataset: textured stuff backgrounds with touching and occluding shapes.

Every image is generated from ``(seed, index)`` alone, so any sample can be rebuilt anywhere
(no files, no downloads). Categories (panoptic convention: stuff and things share one id space):

======  ===========  ========
id      name         is thing
======  ===========  ========
0       ellipse      yes
1       rectangle    yes
2       triangle     yes
3       sky          no
4       ground       no
======  ===========  ========

Shapes are drawn one after the other, the later ones occluding the earlier ones; most are placed
next to an already drawn shape so that instances touch. An instance left with fewer than
``min_area`` visible pixels is dropped (its pixels go to the shape that covered them or to stuff).
Each thing class has its own base colour (ellipses red, rectangles yellow, triangles purple) with
a per-instance jitter, so the class can be recognised but touching instances of one class look
alike: exactly the situation where a point per object is needed to split them.

One uniform random pixel of every segment (things and stuff) is the point annotation.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

THING_CLASSES = ("ellipse", "rectangle", "triangle")
STUFF_CLASSES = ("sky", "ground")
CATEGORIES = tuple(
    [{"id": i, "name": n, "isthing": True} for i, n in enumerate(THING_CLASSES)]
    + [{"id": len(THING_CLASSES) + i, "name": n, "isthing": False} for i, n in enumerate(STUFF_CLASSES)]
)
NUM_CLASSES = len(CATEGORIES)
THING_IDS = tuple(c["id"] for c in CATEGORIES if c["isthing"])
IGNORE_INDEX = 255
THING_COLOURS = np.array([[0.85, 0.25, 0.30], [0.90, 0.80, 0.20], [0.45, 0.15, 0.60]])  # base RGB per thing class


@dataclass(frozen=True)
class PanopticSample:
    """One image with panoptic ground truth and point annotations.

    Attributes:
        image: (3, H, W) float32 in [0, 1].
        panoptic: (H, W) int64 segment ids, 0 = VOID (never used by this dataset).
        segments: one dict per segment: ``id``, ``category_id``, ``isthing``, ``area``.
        semantic: (H, W) int64 category per pixel.
        points: (P, 2) int64 ``(y, x)`` of one annotated pixel per segment.
        point_labels: (P,) int64 category of each point.
        point_segments: (P,) int64 segment id each point was drawn from.
    """

    image: torch.Tensor
    panoptic: torch.Tensor
    segments: list
    semantic: torch.Tensor
    points: torch.Tensor
    point_labels: torch.Tensor
    point_segments: torch.Tensor

    def as_dict(self, index: int) -> dict:
        return {"image": self.image, "panoptic": self.panoptic, "segments": self.segments,
                "semantic": self.semantic, "points": self.points, "point_labels": self.point_labels,
                "point_segments": self.point_segments, "index": index}


class SyntheticPanopticShapes(Dataset):
    """``length`` synthetic panoptic images of ``size`` x ``size`` pixels.

    Args:
        length: number of images.
        size: image side in pixels.
        min_things, max_things: number of shapes drawn per image (before occlusion drops some).
        min_area: smallest visible area (pixels) for an instance to be kept.
        touching: probability that a shape is placed against an earlier one.
        seed: base seed; image ``i`` uses ``np.random.default_rng([seed, i])``.

    ``__getitem__`` returns a dict (see :meth:`PanopticSample.as_dict`); batch with
    :func:`collate_panoptic`.
    """

    categories = CATEGORIES
    num_classes = NUM_CLASSES
    thing_ids = THING_IDS

    def __init__(self, length: int = 100, size: int = 128, min_things: int = 3, max_things: int = 8,
                 min_area: int | None = None, touching: float = 0.7, seed: int = 0) -> None:
        if length < 0 or size < 16:
            raise ValueError(f"need length >= 0 and size >= 16, got length={length}, size={size}")
        if not 1 <= min_things <= max_things:
            raise ValueError(f"need 1 <= min_things <= max_things, got {min_things}, {max_things}")
        self.length, self.size = length, size
        self.min_things, self.max_things = min_things, max_things
        self.min_area = min_area if min_area is not None else max(12, (size * size) // 400)
        self.touching, self.seed = touching, seed

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} images")
        return self.sample(index).as_dict(index)

    def sample(self, index: int) -> PanopticSample:
        rng = np.random.default_rng([self.seed, index])
        s = self.size
        yy, xx = np.mgrid[0:s, 0:s].astype(np.float64)
        image = np.zeros((s, s, 3))
        semantic = np.zeros((s, s), dtype=np.int64)
        instance = np.zeros((s, s), dtype=np.int64)  # 0 = stuff, i > 0 = drawn shape i

        # Stuff: a wavy horizon splits sky (top) from ground (bottom); each gets its own texture.
        horizon = s * rng.uniform(0.3, 0.6) + s * 0.08 * np.sin(xx[0] * rng.uniform(0.03, 0.12) + rng.uniform(0, 6.3))
        is_sky = yy < horizon[None, :]
        semantic[is_sky] = len(THING_CLASSES)
        semantic[~is_sky] = len(THING_CLASSES) + 1
        for mask, base in ((is_sky, rng.uniform([0.35, 0.45, 0.6], [0.55, 0.65, 0.9])),
                           (~is_sky, rng.uniform([0.25, 0.35, 0.1], [0.5, 0.55, 0.3]))):
            image[mask] = base + _texture(rng, s, rng.uniform(0.04, 0.08))[mask]

        n_things = int(rng.integers(self.min_things, self.max_things + 1))
        centres: list[tuple[float, float, float]] = []
        for shape_id in range(1, n_things + 1):
            radius = s * rng.uniform(0.07, 0.15)
            if centres and rng.random() < self.touching:
                cy, cx, cr = centres[int(rng.integers(len(centres)))]
                angle = rng.uniform(0, 2 * np.pi)
                dist = (cr + radius) * rng.uniform(0.75, 1.0)
                cy, cx = cy + dist * np.sin(angle), cx + dist * np.cos(angle)
            else:
                cy, cx = rng.uniform(0.15 * s, 0.85 * s, size=2)
            cy, cx = float(np.clip(cy, 0.1 * s, 0.9 * s)), float(np.clip(cx, 0.1 * s, 0.9 * s))
            category = int(rng.integers(len(THING_CLASSES)))
            mask = _shape_mask(rng, category, yy - cy, xx - cx, radius)
            if not mask.any():
                continue
            centres.append((cy, cx, radius))
            instance[mask] = shape_id
            semantic[mask] = category
            colour = np.clip(THING_COLOURS[category] + rng.uniform(-0.12, 0.12, size=3), 0.0, 1.0)
            image[mask] = colour + _texture(rng, s, 0.03)[mask]

        panoptic = np.zeros((s, s), dtype=np.int64)
        segments = []
        next_id = 1
        for cat in range(len(THING_CLASSES), NUM_CLASSES):  # stuff: one segment per class present
            region = (instance == 0) & (semantic == cat)
            if region.any():
                panoptic[region] = next_id
                segments.append({"id": next_id, "category_id": cat, "isthing": False, "area": int(region.sum())})
                next_id += 1
        for shape_id in np.unique(instance[instance > 0]):
            region = instance == shape_id
            if region.sum() < self.min_area:  # too occluded to be an object: becomes stuff
                instance[region] = 0
                continue
            panoptic[region] = next_id
            segments.append({"id": next_id, "category_id": int(semantic[region][0]), "isthing": True,
                             "area": int(region.sum())})
            next_id += 1
        # pixels of dropped shapes fall back to the stuff class under them
        dropped = (panoptic == 0)
        if dropped.any():
            stuff_cat = np.where(is_sky, len(THING_CLASSES), len(THING_CLASSES) + 1)
            semantic[dropped] = stuff_cat[dropped]
            for seg in segments:
                if not seg["isthing"]:
                    region = dropped & (semantic == seg["category_id"])
                    panoptic[region] = seg["id"]
                    seg["area"] += int(region.sum())
            missing = (panoptic == 0)
            for cat in np.unique(semantic[missing]):  # a stuff class only present under dropped shapes
                region = missing & (semantic == cat)
                panoptic[region] = next_id
                segments.append({"id": next_id, "category_id": int(cat), "isthing": False, "area": int(region.sum())})
                next_id += 1

        points, labels, seg_ids = sample_points(panoptic, segments, rng)
        image = np.clip(image, 0.0, 1.0).transpose(2, 0, 1)
        return PanopticSample(
            image=torch.from_numpy(image.astype(np.float32)),
            panoptic=torch.from_numpy(panoptic),
            segments=segments,
            semantic=torch.from_numpy(semantic),
            points=points,
            point_labels=labels,
            point_segments=seg_ids,
        )


def sample_points(panoptic: np.ndarray, segments: list, rng: np.random.Generator):
    """One pixel drawn uniformly from every non-crowd, non-empty segment, in segment-list order.

    Returns ``points`` (P, 2) int64 ``(y, x)``, ``point_labels`` (P,) and ``point_segments`` (P,).
    """
    points, labels, seg_ids = [], [], []
    for seg in segments:
        if seg.get("iscrowd", 0):
            continue
        ys, xs = np.nonzero(panoptic == seg["id"])
        if len(ys) == 0:
            continue
        j = int(rng.integers(len(ys)))
        points.append((int(ys[j]), int(xs[j])))
        labels.append(seg["category_id"])
        seg_ids.append(seg["id"])
    return (torch.tensor(points, dtype=torch.long).reshape(-1, 2), torch.tensor(labels, dtype=torch.long),
            torch.tensor(seg_ids, dtype=torch.long))


def _texture(rng: np.random.Generator, size: int, amplitude: float) -> np.ndarray:
    """(size, size, 3) smooth random texture: white noise blurred by a box filter, plus fine noise."""
    coarse = rng.normal(size=(size // 4 + 2, size // 4 + 2, 3))
    up = np.kron(coarse, np.ones((4, 4, 1)))[:size, :size]
    return amplitude * (up + 0.5 * rng.normal(size=(size, size, 3)))


def _shape_mask(rng: np.random.Generator, category: int, dy: np.ndarray, dx: np.ndarray, radius: float) -> np.ndarray:
    """Boolean mask of a randomly rotated shape of ``category`` centred at offset (0, 0)."""
    theta = rng.uniform(0, np.pi)
    u = dx * np.cos(theta) + dy * np.sin(theta)
    v = -dx * np.sin(theta) + dy * np.cos(theta)
    aspect = rng.uniform(0.55, 1.0)
    if category == 0:  # ellipse
        return (u / radius) ** 2 + (v / (radius * aspect)) ** 2 <= 1.0
    if category == 1:  # rectangle
        return (np.abs(u) <= radius * 0.9) & (np.abs(v) <= radius * 0.9 * aspect)
    # triangle: intersection of three half-planes around the centre
    inside = np.ones_like(u, dtype=bool)
    for k in range(3):
        phi = 2 * np.pi * k / 3
        inside &= (u * np.cos(phi) + v * np.sin(phi)) <= radius * 0.55
    return inside


def collate_panoptic(batch: list[dict]) -> dict:
    """Stack images and dense maps; keep per-image lists for points and segments."""
    out = {key: torch.stack([b[key] for b in batch]) for key in ("image", "panoptic", "semantic")}
    for key in ("points", "point_labels", "point_segments", "segments"):
        out[key] = [b[key] for b in batch]
    out["index"] = torch.tensor([b["index"] for b in batch], dtype=torch.long)
    return out


def noisy_oracle_maps(sample, index: int, noise: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(C, H, W) float64 class probabilities and (H, W) boundary map in [0, 1] standing in for a network's
    outputs on ``sample`` (a :class:`SyntheticPanopticShapes` sample): the one-hot ground truth blurred
    (3x3), logits ``3·blur + noise·smooth noise`` (7x7-smoothed Gaussian, seeded by ``index``), and the
    Sobel edges of the image (scikit-image, imported here)."""
    import torch.nn.functional as F
    from skimage.filters import sobel

    onehot = F.one_hot(sample.semantic, NUM_CLASSES).permute(2, 0, 1).double()[None]
    gen = torch.Generator().manual_seed(10_000 + index)
    smooth_noise = F.avg_pool2d(torch.randn(onehot.shape, generator=gen, dtype=torch.float64), 7, 1, 3) * 2.6
    probs = torch.softmax(3.0 * F.avg_pool2d(onehot, 3, 1, 1) + noise * smooth_noise, dim=1)[0]
    image = sample.image.permute(1, 2, 0).numpy()
    edge = torch.from_numpy(np.max([sobel(image[..., c]) for c in range(3)], axis=0))
    return probs, edge / edge.max().clamp_min(1e-12)
