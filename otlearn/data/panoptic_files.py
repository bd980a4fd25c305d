"""Panoptic loaders for users' own copies of Pascal VOC 2012 and COCO panoptic (never downloaded).

Both return the sample dict of :class:`~otlearn.data.shapes.SyntheticPanopticShapes`: ``image``
(3, H, W) float in [0, 1], ``panoptic`` (H, W) segment ids (0 = VOID), ``segments`` (``id``,
``category_id`` (contiguous index), ``isthing``, ``iscrowd``, ``area``), ``semantic`` (H, W)
(255 = VOID), ``points`` (P, 2) ``(y, x)``, ``point_labels`` (P,), ``point_segments`` (P,) and
``index``; batch them with :func:`~otlearn.data.shapes.collate_panoptic` (equal sizes: pass
``size``). The point annotation is one pixel drawn uniformly from every non-crowd segment with
``np.random.default_rng([seed, index])`` — the "1 point" setting of PSPS and Point2Mask — so a
given seed always yields the same points.
"""
from __future__ import annotations

import json
import os

import numpy as np
import torch
from torch.utils.data import Dataset

from otlearn.data.shapes import sample_points

VOC_CLASSES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor")


def _read_image(path: str, size: int | None) -> torch.Tensor:
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB")
        if size is not None:
            im = im.resize((size, size), Image.BILINEAR)
        return torch.from_numpy(np.asarray(im, dtype=np.float32) / 255.0).permute(2, 0, 1).contiguous()


def _read_label(path: str, size: int | None, rgb: bool = False) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        if size is not None:
            im = im.resize((size, size), Image.NEAREST)
        arr = np.asarray(im.convert("RGB") if rgb else im)
    if rgb:
        arr = arr.astype(np.int64)
        return arr[..., 0] + 256 * arr[..., 1] + 256 * 256 * arr[..., 2]
    return arr.astype(np.int64)


def _with_points(sample: dict, seed: int, index: int) -> dict:
    points = sample_points(sample["panoptic"].numpy(), sample["segments"], np.random.default_rng([seed, index]))
    sample["points"], sample["point_labels"], sample["point_segments"] = points
    sample["index"] = index
    return sample


def _require(path: str, what: str) -> None:
    if not os.path.exists(path):
        raise FileNotFoundError(f"{what} not found: expected {path} (otlearn never downloads datasets)")


class VOCPanoptic(Dataset):
    """Pascal VOC 2012 as a panoptic dataset: 20 thing classes (ids 1-20) and background (id 0, stuff).

    Layout under ``root`` (the ``VOCdevkit/VOC2012`` folder): ``JPEGImages/<name>.jpg``,
    ``SegmentationClass/<name>.png`` and ``SegmentationObject/<name>.png`` (palette PNGs holding
    class / instance indices, 255 on the VOID outlines), ``ImageSets/Segmentation/<split>.txt``.
    """

    num_classes = len(VOC_CLASSES)
    thing_ids = tuple(range(1, len(VOC_CLASSES)))
    categories = tuple({"id": i, "name": n, "isthing": i > 0} for i, n in enumerate(VOC_CLASSES))

    def __init__(self, root: str, split: str = "train", size: int | None = None, seed: int = 0) -> None:
        self.root, self.size, self.seed = os.path.expanduser(root), size, seed
        split_file = os.path.join(self.root, "ImageSets", "Segmentation", f"{split}.txt")
        _require(split_file, f"VOC split '{split}'")
        with open(split_file) as fh:
            self.names = [line.strip() for line in fh if line.strip()]
        for sub in ("JPEGImages", "SegmentationClass", "SegmentationObject"):
            _require(os.path.join(self.root, sub), f"VOC folder {sub}")

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> dict:
        name = self.names[index]
        image = _read_image(os.path.join(self.root, "JPEGImages", f"{name}.jpg"), self.size)
        cls = _read_label(os.path.join(self.root, "SegmentationClass", f"{name}.png"), self.size)
        obj = _read_label(os.path.join(self.root, "SegmentationObject", f"{name}.png"), self.size)
        panoptic = np.zeros(cls.shape, dtype=np.int64)
        semantic = np.full(cls.shape, 255, dtype=np.int64)
        segments = []
        background = cls == 0
        if background.any():
            panoptic[background] = 1
            semantic[background] = 0
            segments.append({"id": 1, "category_id": 0, "isthing": False, "iscrowd": 0, "area": int(background.sum())})
        for inst in np.unique(obj[(obj > 0) & (obj < 255)]):
            region = (obj == inst) & (cls > 0) & (cls < 255)
            if not region.any():
                continue
            category = int(np.bincount(cls[region]).argmax())
            if category >= len(VOC_CLASSES):
                raise ValueError(f"{name}: class index {category} outside VOC's 21 classes")
            seg_id = 1 + int(inst)
            panoptic[region] = seg_id
            semantic[region] = category
            segments.append({"id": seg_id, "category_id": category, "isthing": True, "iscrowd": 0,
                             "area": int(region.sum())})
        sample = {"image": image, "panoptic": torch.from_numpy(panoptic), "segments": segments,
                  "semantic": torch.from_numpy(semantic)}
        return _with_points(sample, self.seed, index)


class COCOPanoptic(Dataset):
    """COCO panoptic: ``annotation_file`` (``panoptic_{split}.json``), ``image_dir`` (JPEGs) and
    ``panoptic_dir`` (PNGs whose colour encodes the segment id ``R + 256 G + 256² B``).

    COCO's category ids are mapped to contiguous indices in the order of the JSON's
    ``categories`` (``self.category_ids[i]`` is the original id of index i).
    """

    def __init__(self, annotation_file: str, image_dir: str, panoptic_dir: str, size: int | None = None,
                 seed: int = 0) -> None:
        for path, what in ((annotation_file, "COCO panoptic annotation file"), (image_dir, "COCO image folder"),
                           (panoptic_dir, "COCO panoptic PNG folder")):
            _require(os.path.expanduser(path), what)
        with open(os.path.expanduser(annotation_file)) as fh:
            data = json.load(fh)
        missing = {"images", "annotations", "categories"} - set(data)
        if missing:
            raise ValueError(f"{annotation_file} is not a COCO panoptic file: missing keys {sorted(missing)}")
        self.image_dir, self.panoptic_dir = os.path.expanduser(image_dir), os.path.expanduser(panoptic_dir)
        self.size, self.seed = size, seed
        self.category_ids = [c["id"] for c in data["categories"]]
        self.index_of = {cid: i for i, cid in enumerate(self.category_ids)}
        self.categories = tuple({"id": i, "name": c["name"], "isthing": bool(c["isthing"])}
                                for i, c in enumerate(data["categories"]))
        self.num_classes = len(self.categories)
        self.thing_ids = tuple(c["id"] for c in self.categories if c["isthing"])
        images = {im["id"]: im for im in data["images"]}
        self.annotations = [(images[a["image_id"]], a) for a in data["annotations"]]

    def __len__(self) -> int:
        return len(self.annotations)

    def __getitem__(self, index: int) -> dict:
        info, ann = self.annotations[index]
        image = _read_image(os.path.join(self.image_dir, info["file_name"]), self.size)
        ids = _read_label(os.path.join(self.panoptic_dir, ann["file_name"]), self.size, rgb=True)
        panoptic = np.zeros(ids.shape, dtype=np.int64)
        semantic = np.full(ids.shape, 255, dtype=np.int64)
        segments = []
        for seg in ann["segments_info"]:
            if seg["category_id"] not in self.index_of:
                raise ValueError(f"{ann['file_name']}: category {seg['category_id']} is not in the file's categories")
            region = ids == seg["id"]
            cat = self.index_of[seg["category_id"]]
            panoptic[region] = seg["id"]
            if not seg.get("iscrowd", 0):
                semantic[region] = cat
            segments.append({"id": int(seg["id"]), "category_id": cat, "isthing": self.categories[cat]["isthing"],
                             "iscrowd": int(seg.get("iscrowd", 0)), "area": int(region.sum())})
        sample = {"image": image, "panoptic": torch.from_numpy(panoptic), "segments": segments,
                  "semantic": torch.from_numpy(semantic)}
        return _with_points(sample, self.seed, index)
