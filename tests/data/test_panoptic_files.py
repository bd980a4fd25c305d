"""VOC and COCO panoptic loaders on tiny files written by the test."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from otlearn.data import COCOPanoptic, VOCPanoptic, collate_panoptic


def _write_voc(root):
    for sub in ("JPEGImages", "SegmentationClass", "SegmentationObject", "ImageSets/Segmentation"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    cls = np.zeros((12, 16), dtype=np.uint8)
    obj = np.zeros((12, 16), dtype=np.uint8)
    cls[2:6, 2:7], obj[2:6, 2:7] = 15, 1  # a person
    cls[6:10, 8:14], obj[6:10, 8:14] = 12, 2  # a dog
    cls[1, :], obj[1, :] = 255, 255  # a VOID outline
    for name, arr in (("SegmentationClass", cls), ("SegmentationObject", obj)):
        im = Image.fromarray(arr, mode="P")
        im.putpalette([v for i in range(256) for v in (i, 255 - i, (7 * i) % 256)])
        im.save(root / name / "a.png")
    Image.fromarray(np.full((12, 16, 3), 120, dtype=np.uint8)).save(root / "JPEGImages" / "a.jpg")
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("a\n")


def test_voc_panoptic(tmp_path):
    _write_voc(tmp_path)
    ds = VOCPanoptic(str(tmp_path), "train", seed=0)
    s = ds[0]
    assert s["image"].shape == (3, 12, 16)
    cats = sorted((seg["category_id"], seg["isthing"], seg["area"]) for seg in s["segments"])
    assert cats == [(0, False, 12 * 16 - 16 - 20 - 24), (12, True, 24), (15, True, 20)]
    assert (s["panoptic"][1] == 0).all() and (s["semantic"][1] == 255).all()
    assert len(s["points"]) == 3
    for (y, x), seg_id in zip(s["points"].tolist(), s["point_segments"].tolist()):
        assert s["panoptic"][y, x] == seg_id
    assert torch.equal(ds[0]["points"], VOCPanoptic(str(tmp_path), "train", seed=0)[0]["points"])
    assert VOCPanoptic(str(tmp_path), "train", size=8)[0]["panoptic"].shape == (8, 8)


def test_coco_panoptic(tmp_path):
    ids = np.zeros((10, 10), dtype=np.int64)
    ids[:, :] = 1000  # stuff "sky" (category 100)
    ids[2:5, 2:5] = 7  # a thing (category 3)
    ids[6:9, 6:9] = 70000  # a crowd region (category 3); ids above 65535 use the blue channel
    rgb = np.stack([ids % 256, (ids // 256) % 256, ids // 65536], -1).astype(np.uint8)
    (tmp_path / "pan").mkdir()
    (tmp_path / "img").mkdir()
    Image.fromarray(rgb).save(tmp_path / "pan" / "1.png")
    Image.fromarray(np.zeros((10, 10, 3), dtype=np.uint8)).save(tmp_path / "img" / "1.jpg")
    ann = {"images": [{"id": 5, "file_name": "1.jpg", "height": 10, "width": 10}],
           "annotations": [{"image_id": 5, "file_name": "1.png", "segments_info": [
               {"id": 1000, "category_id": 100, "iscrowd": 0}, {"id": 7, "category_id": 3, "iscrowd": 0},
               {"id": 70000, "category_id": 3, "iscrowd": 1}]}],
           "categories": [{"id": 3, "name": "car", "isthing": 1}, {"id": 100, "name": "sky", "isthing": 0}]}
    (tmp_path / "ann.json").write_text(json.dumps(ann))
    ds = COCOPanoptic(str(tmp_path / "ann.json"), str(tmp_path / "img"), str(tmp_path / "pan"))
    s = ds[0]
    assert ds.thing_ids == (0,) and ds.num_classes == 2
    by_id = {seg["id"]: seg for seg in s["segments"]}
    assert by_id[7]["category_id"] == 0 and by_id[7]["area"] == 9 and by_id[1000]["category_id"] == 1
    assert by_id[70000]["iscrowd"] == 1 and (s["semantic"][6:9, 6:9] == 255).all()
    assert sorted(s["point_segments"].tolist()) == [7, 1000]  # no point on the crowd region
    batch = collate_panoptic([s, s])
    assert batch["panoptic"].shape == (2, 10, 10)


def test_missing_paths_raise_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="VOC split 'train' not found"):
        VOCPanoptic(str(tmp_path), "train")
    with pytest.raises(FileNotFoundError, match="COCO panoptic annotation file not found"):
        COCOPanoptic(str(tmp_path / "x.json"), str(tmp_path), str(tmp_path))
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ValueError, match="not a COCO panoptic file"):
        COCOPanoptic(str(tmp_path / "bad.json"), str(tmp_path), str(tmp_path))
