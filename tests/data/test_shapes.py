"""Synthetic panoptic shapes: deterministic, consistent ground truth, points inside their segments."""
import torch

from otlearn.data import ShapesDataModule, SyntheticPanopticShapes, collate_panoptic
from otlearn.data.shapes import THING_IDS


def test_samples_are_a_function_of_seed_and_index():
    a, b = SyntheticPanopticShapes(5, 64, seed=3), SyntheticPanopticShapes(5, 64, seed=3)
    for i in range(5):
        x, y = a[i], b[i]
        assert torch.equal(x["image"], y["image"]) and torch.equal(x["panoptic"], y["panoptic"])
        assert torch.equal(x["points"], y["points"])
    assert not torch.equal(SyntheticPanopticShapes(5, 64, seed=4)[0]["image"], a[0]["image"])


def test_ground_truth_is_consistent_and_points_lie_in_their_segments():
    ds = SyntheticPanopticShapes(30, 64, seed=0)
    thing_classes_seen = set()
    touching = 0
    for i in range(len(ds)):
        s = ds[i]
        ids = s["panoptic"]
        assert s["image"].shape == (3, 64, 64) and 0 <= float(s["image"].min()) and float(s["image"].max()) <= 1
        assert (ids > 0).all()  # every pixel belongs to a segment
        assert sorted(seg["id"] for seg in s["segments"]) == sorted(torch.unique(ids).tolist())
        for seg in s["segments"]:
            region = ids == seg["id"]
            assert int(region.sum()) == seg["area"]
            assert (s["semantic"][region] == seg["category_id"]).all()
            assert seg["isthing"] == (seg["category_id"] in THING_IDS)
            if seg["isthing"]:
                thing_classes_seen.add(seg["category_id"])
        assert len(s["points"]) == len(s["segments"])  # one point per segment, things and stuff
        for (y, x), label, seg_id in zip(s["points"].tolist(), s["point_labels"].tolist(), s["point_segments"].tolist()):
            assert ids[y, x] == seg_id and s["semantic"][y, x] == label
        things = torch.zeros_like(ids, dtype=torch.bool)
        for seg in s["segments"]:
            if seg["isthing"]:
                things |= ids == seg["id"]
        # touching instances: horizontally adjacent thing pixels of different segments
        touching += int((things[:, 1:] & things[:, :-1] & (ids[:, 1:] != ids[:, :-1])).any())
    assert len(thing_classes_seen) >= 2
    assert touching >= 10  # most images have touching or occluding shapes


def test_collate_and_datamodule():
    dm = ShapesDataModule(train_size=6, val_size=3, image_size=32, batch_size=4)
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (4, 3, 32, 32) and batch["panoptic"].shape == (4, 32, 32)
    assert len(batch["points"]) == 4 and len(batch["segments"]) == 4
    assert not torch.equal(dm.train_set[0]["image"], dm.val_set[0]["image"])  # disjoint seeds
    assert collate_panoptic([dm.val_set[0]])["index"].tolist() == [0]
