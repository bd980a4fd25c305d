"""Panoptic quality: hand-computed cases (matching, VOID, crowd, pooling), torchmetrics, mIoU, bootstrap."""
import pytest
import torch

from otlearn.eval.panoptic import PanopticQuality, bootstrap_pq, mean_iou, panoptic_quality

THINGS, STUFF = [0, 1], [2]


def seg(i, c, crowd=0):
    return {"id": i, "category_id": c, "iscrowd": crowd}


def test_perfect_prediction_scores_one():
    ids = torch.tensor([[1, 1, 2], [3, 3, 2]])
    segs = [seg(1, 0), seg(2, 1), seg(3, 2)]
    r = panoptic_quality([(ids, segs)], [(ids.clone(), segs)], THINGS, STUFF)
    assert r["pq"] == r["pq_th"] == r["pq_st"] == r["sq"] == r["rq"] == 1.0


def test_iou_must_exceed_one_half():
    gt = torch.tensor([[1, 1, 1, 1]])
    half = torch.tensor([[1, 1, 2, 2]])  # IoU of segment 1 with gt 1 is exactly 0.5: no match
    m = PanopticQuality(THINGS, STUFF)
    m.update(half, [seg(1, 0), seg(2, 1)], gt, [seg(1, 0)])
    assert (m.tp[0], m.fp[0], m.fn[0], m.fp[1]) == (0, 1, 1, 1)
    more = torch.tensor([[1, 1, 1, 2]])  # IoU 0.75
    m = PanopticQuality(THINGS, STUFF)
    m.update(more, [seg(1, 0), seg(2, 1)], gt, [seg(1, 0)])
    per = m.per_class()
    assert per[0]["pq"] == pytest.approx(0.75) and per[1] == {"pq": 0.0, "sq": 0.0, "rq": 0.0, "tp": 0, "fp": 1, "fn": 0}
    assert m.compute()["pq_th"] == pytest.approx(0.375)  # classes averaged: (0.75 + 0) / 2


def test_void_pixels_leave_the_union_and_excuse_false_positives():
    gt = torch.tensor([[1, 1, 0, 0, 0, 0]])
    pred = torch.tensor([[1, 1, 1, 1, 2, 2]])  # segment 1 spills onto VOID; segment 2 lies on VOID only
    m = PanopticQuality(THINGS, STUFF)
    m.update(pred, [seg(1, 0), seg(2, 1)], gt, [seg(1, 0)])
    assert m.tp[0] == 1 and m.iou[0] == pytest.approx(1.0)  # union = 4 + 2 − 2 − 2 (on VOID) = 2
    assert m.fp[1] == 0  # more than half on VOID: not a false positive


def test_crowd_regions_never_match_and_excuse_same_class_predictions():
    gt = torch.tensor([[1, 1, 1, 2, 2, 2]])
    pred = torch.tensor([[5, 5, 5, 6, 6, 6]])
    m = PanopticQuality(THINGS, STUFF)
    m.update(pred, [seg(5, 0), seg(6, 0)], gt, [seg(1, 0), seg(2, 0, crowd=1)])
    assert (m.tp[0], m.fp[0], m.fn[0]) == (1, 0, 0)
    m = PanopticQuality(THINGS, STUFF)  # a prediction of another class on the crowd region is a FP
    m.update(pred, [seg(5, 0), seg(6, 1)], gt, [seg(1, 0), seg(2, 0, crowd=1)])
    assert m.fp[1] == 1


def test_counts_are_pooled_over_images_before_averaging():
    gt = torch.tensor([[1, 1, 1, 1]])
    good = torch.tensor([[1, 1, 1, 1]])
    bad = torch.tensor([[1, 2, 2, 2]])
    r = panoptic_quality([(good, [seg(1, 0)]), (bad, [seg(1, 0), seg(2, 1)])],
                         [(gt, [seg(1, 0)]), (gt, [seg(1, 0)])], THINGS, STUFF)
    # class 0: TP 1 (IoU 1), FP 1, FN 1 → PQ 1 / 2; class 1: one FP → 0
    assert r["pq_th"] == pytest.approx(0.25)


def test_matches_torchmetrics_on_random_segmentations():
    from torchmetrics.detection import PanopticQuality as TMPanopticQuality

    g = torch.Generator().manual_seed(0)
    ours = PanopticQuality(THINGS, STUFF)
    theirs = TMPanopticQuality(things={0, 1}, stuffs={2}, return_sq_and_rq=True)
    for _ in range(5):
        gt_cat = torch.randint(0, 3, (6, 6), generator=g)
        gt_inst = torch.where(gt_cat < 2, torch.randint(0, 2, (6, 6), generator=g), 0)
        pred_cat = torch.where(torch.rand(6, 6, generator=g) < 0.8, gt_cat, torch.randint(0, 3, (6, 6), generator=g))
        pred_inst = torch.where(pred_cat < 2, torch.where(torch.rand(6, 6, generator=g) < 0.85, gt_inst, 1 - gt_inst), 0)

        def to_ids(cat, inst):
            ids = cat * 10 + inst + 1
            return ids, [seg(int(i), int(i - 1) // 10) for i in torch.unique(ids)]

        ours.update(*to_ids(pred_cat, pred_inst), *to_ids(gt_cat, gt_inst))
        theirs.update(torch.stack([pred_cat, pred_inst], -1)[None], torch.stack([gt_cat, gt_inst], -1)[None])
    r = ours.compute()
    pq, sq, rq = theirs.compute().tolist()
    assert r["pq"] == pytest.approx(pq, abs=1e-6)
    assert r["sq"] == pytest.approx(sq, abs=1e-6)
    assert r["rq"] == pytest.approx(rq, abs=1e-6)


def test_bad_segment_lists_are_rejected():
    m = PanopticQuality(THINGS, STUFF)
    with pytest.raises(ValueError, match="missing from its segment list"):
        m.update(torch.tensor([[1, 2]]), [seg(1, 0)], torch.tensor([[1, 1]]), [seg(1, 0)])
    with pytest.raises(ValueError, match="neither thing nor stuff"):
        m.update(torch.tensor([[1, 1]]), [seg(1, 7)], torch.tensor([[1, 1]]), [seg(1, 0)])
    with pytest.raises(ValueError, match="both thing and stuff"):
        PanopticQuality([0, 1], [1])


def test_mean_iou_by_hand():
    pred = torch.tensor([[0, 0, 1, 1], [2, 255, 2, 2]])
    gt = torch.tensor([[0, 1, 1, 1], [2, 2, 255, 2]])
    # class 0: I 1 / U 2; class 1: I 2 / U 3; class 2: I 2 / U 3 (the VOID prediction counts as a miss)
    assert mean_iou([pred], [gt], 3) == pytest.approx((0.5 + 2 / 3 + 2 / 3) / 3)


def test_bootstrap_interval_brackets_the_estimate_and_paired_self_difference_is_zero():
    g = torch.Generator().manual_seed(1)
    per_image = []
    for _ in range(20):
        gt = torch.randint(1, 4, (5, 5), generator=g)
        pred = torch.where(torch.rand(5, 5, generator=g) < 0.8, gt, torch.randint(1, 4, (5, 5), generator=g))
        m = PanopticQuality(THINGS, STUFF)
        m.update(pred, [seg(1, 0), seg(2, 1), seg(3, 2)], gt, [seg(1, 0), seg(2, 1), seg(3, 2)])
        per_image.append(m)
    est, low, high = bootstrap_pq(per_image, "th", n_boot=500)
    assert low <= est <= high and high - low > 0
    by_hand = sum(m.tp[0] for m in per_image), sum(m.fn[1] for m in per_image)
    pooled = PanopticQuality.pooled(per_image)
    assert (pooled.tp[0], pooled.fn[1]) == by_hand
    assert est == pytest.approx(pooled.compute()["pq_th"])
    assert bootstrap_pq(per_image, "th", n_boot=200, paired_with=per_image) == (0.0, 0.0, 0.0)


@pytest.mark.parametrize("listed,expected_fp", [([6, 5], 0), ([5, 6], 1)])
def test_two_crowd_segments_of_one_category_the_last_listed_excuses(listed, expected_fp):
    """panopticapi keeps, per category, the crowd segment listed last: a prediction lying 3/4 on crowd
    segment 5 and 1/4 on crowd segment 6 is excused (not a FP) only when 5 is listed after 6."""
    gt = torch.tensor([[5, 5, 5, 6, 6, 6, 6, 6]])
    pred = torch.tensor([[1, 1, 1, 1, 0, 0, 0, 0]])
    crowds = {5: seg(5, 0, crowd=1), 6: seg(6, 0, crowd=1)}
    m = PanopticQuality(THINGS, STUFF)
    m.update(pred, [seg(1, 0)], gt, [crowds[i] for i in listed])
    assert (m.tp[0], m.fn[0], m.fp[0]) == (0, 0, expected_fp)


def test_listed_ground_truth_segment_without_pixels_is_a_false_negative():
    gt = torch.tensor([[1, 1, 2, 2]])
    pred = gt.clone()
    segs = [seg(1, 0), seg(2, 1)]
    m = PanopticQuality(THINGS, STUFF)
    m.update(pred, segs, gt, segs + [seg(9, 1)])  # segment 9 is listed but has no pixel
    assert (m.tp[0], m.tp[1], m.fn[1], m.fn[0]) == (1, 1, 1, 0)
    assert m.per_class()[1]["pq"] == pytest.approx(1 / 1.5)  # 1 / (TP + ½ FN)
    crowd_only = PanopticQuality(THINGS, STUFF)
    crowd_only.update(pred, segs, gt, segs + [seg(9, 1, crowd=1)])  # a listed empty crowd segment is no FN
    assert crowd_only.fn[1] == 0
