"""Panoptic quality (PQ, SQ, RQ; things and stuff) as panopticapi defines it, and mIoU.

Per image, a predicted segment and a ground-truth segment of the same category match when their
IoU > 0.5 (so matches are unique); the union leaves out predicted pixels that fall on VOID
(ground-truth id 0). Crowd ground-truth segments never match and are not false negatives.
Unmatched non-crowd ground truth = FN — every *listed* one, also a listed segment with no pixels, as
panopticapi counts it; an unmatched prediction is a FP unless more than half of it lies on VOID or on
the crowd region of its category (with several crowd segments of one category in an image, the one
listed last, as in panopticapi). Predicted segments with no pixels are skipped (panopticapi rejects them). Counts are pooled per category over the whole
dataset, then

    PQ_c = Σ_TP IoU / (TP + ½ FP + ½ FN),  SQ_c = Σ_TP IoU / TP,  RQ_c = TP / (TP + ½ FP + ½ FN)

and PQ (PQ_th, PQ_st) averages PQ_c over the (thing, stuff) categories with TP + FP + FN > 0.
Values are fractions in [0, 1] (panopticapi prints them x 100).

A segmentation is ``(segment_ids (H, W) int, segments)`` where segment id 0 is VOID and
``segments`` lists dicts with ``id``, ``category_id`` and optionally ``iscrowd``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence

import torch

OFFSET = 1 << 20  # segment ids must stay below this


@dataclass
class PanopticQuality:
    """Accumulates per-category TP/FP/FN/IoU over images; :meth:`compute` returns the averages.

    Args:
        thing_classes: category ids that are things.
        stuff_classes: category ids that are stuff.
    """

    thing_classes: Sequence[int]
    stuff_classes: Sequence[int]
    iou: dict = field(default_factory=dict)
    tp: dict = field(default_factory=dict)
    fp: dict = field(default_factory=dict)
    fn: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        overlap = set(self.thing_classes) & set(self.stuff_classes)
        if overlap:
            raise ValueError(f"categories {sorted(overlap)} are listed as both thing and stuff")
        self.known = set(self.thing_classes) | set(self.stuff_classes)
        for c in self.known:
            self.iou.setdefault(c, 0.0)
            for d in (self.tp, self.fp, self.fn):
                d.setdefault(c, 0)

    def update(self, pred_ids: torch.Tensor, pred_segments: Iterable[dict],
               gt_ids: torch.Tensor, gt_segments: Iterable[dict]) -> None:
        """Add one image: ``pred_ids``/``gt_ids`` (H, W) int segment ids (0 = VOID) and their segment lists."""
        if pred_ids.shape != gt_ids.shape:
            raise ValueError(f"prediction {tuple(pred_ids.shape)} and ground truth {tuple(gt_ids.shape)} differ in shape")
        pred_segments, gt_segments = list(pred_segments), list(gt_segments)
        pred_cat = _categories(pred_segments, "prediction")
        gt_cat = _categories(gt_segments, "ground truth")
        gt_crowd = {int(s["id"]) for s in gt_segments if s.get("iscrowd", 0)}
        # per category, the crowd segment listed last (panopticapi's dict assignment in list order)
        crowd_by_cat = {int(s["category_id"]): int(s["id"]) for s in gt_segments if s.get("iscrowd", 0)}
        for name, cats in (("prediction", pred_cat), ("ground truth", gt_cat)):
            unknown = set(cats.values()) - self.known
            if unknown:
                raise ValueError(f"{name} uses categories {sorted(unknown)} that are neither thing nor stuff classes")
        pred_ids, gt_ids = pred_ids.long().reshape(-1), gt_ids.long().reshape(-1)
        for name, ids, cats in (("prediction", pred_ids, pred_cat), ("ground truth", gt_ids, gt_cat)):
            present = set(torch.unique(ids).tolist()) - {0}
            missing = present - set(cats)
            if missing:
                raise ValueError(f"{name} has pixels with segment ids {sorted(missing)[:5]} missing from its segment list")
            if max(present, default=0) >= OFFSET:
                raise ValueError(f"{name} segment ids must be < {OFFSET}")

        pred_area = _areas(pred_ids)
        gt_area = _areas(gt_ids)
        pair_keys, pair_counts = torch.unique(gt_ids * OFFSET + pred_ids, return_counts=True)
        inter = {(int(k) // OFFSET, int(k) % OFFSET): int(n) for k, n in zip(pair_keys, pair_counts)}

        matched_gt, matched_pred = set(), set()
        for (g, p), n in inter.items():
            if g == 0 or p == 0 or g in gt_crowd or gt_cat[g] != pred_cat[p]:
                continue
            union = pred_area[p] + gt_area[g] - n - inter.get((0, p), 0)
            iou = n / union
            if iou > 0.5:
                c = gt_cat[g]
                self.tp[c] += 1
                self.iou[c] += iou
                matched_gt.add(g)
                matched_pred.add(p)
        for g, c in gt_cat.items():
            if g not in matched_gt and g not in gt_crowd:
                self.fn[c] += 1
        for p, c in pred_cat.items():
            if p in matched_pred or pred_area.get(p, 0) == 0:
                continue
            ignored = inter.get((0, p), 0) + (inter.get((crowd_by_cat[c], p), 0) if c in crowd_by_cat else 0)
            if ignored / pred_area[p] > 0.5:
                continue
            self.fp[c] += 1

    @classmethod
    def pooled(cls, metrics: Sequence["PanopticQuality"]) -> "PanopticQuality":
        """One accumulator holding the summed counts of ``metrics`` (e.g. per-image accumulators)."""
        out = cls(metrics[0].thing_classes, metrics[0].stuff_classes)
        for m in metrics:
            for mine, theirs in ((out.iou, m.iou), (out.tp, m.tp), (out.fp, m.fp), (out.fn, m.fn)):
                for c in out.known:
                    mine[c] += theirs[c]
        return out

    def sync(self, group=None) -> None:
        """Sum the counts over a ``torch.distributed`` group (default: the world group when
        initialised; no-op for one process), through :mod:`otlearn.comm`."""
        from otlearn.comm import Communicator, default_group

        comm = Communicator(group if group is not None else default_group())
        if not comm.distributed:
            return
        classes = sorted(self.known)
        packed = torch.tensor([[self.iou[c], self.tp[c], self.fp[c], self.fn[c]] for c in classes], dtype=torch.float64)
        comm.all_reduce_(packed)
        for row, c in zip(packed.tolist(), classes):
            self.iou[c], self.tp[c], self.fp[c], self.fn[c] = row[0], int(row[1]), int(row[2]), int(row[3])

    def per_class(self) -> dict[int, dict[str, float]]:
        """category → ``pq``, ``sq``, ``rq``, ``tp``, ``fp``, ``fn`` (only categories that occurred)."""
        out = {}
        for c in sorted(self.known):
            tp, fp, fn = self.tp[c], self.fp[c], self.fn[c]
            if tp + fp + fn == 0:
                continue
            denom = tp + 0.5 * fp + 0.5 * fn
            sq = self.iou[c] / tp if tp else 0.0
            rq = tp / denom
            out[c] = {"pq": sq * rq, "sq": sq, "rq": rq, "tp": tp, "fp": fp, "fn": fn}
        return out

    def compute(self) -> dict[str, float]:
        """``pq, sq, rq`` over all categories and with ``_th`` / ``_st`` suffixes (NaN when none occurred)."""
        per = self.per_class()
        out = {}
        for suffix, group in (("", self.known), ("_th", set(self.thing_classes)), ("_st", set(self.stuff_classes))):
            rows = [v for c, v in per.items() if c in group]
            for key in ("pq", "sq", "rq"):
                out[key + suffix] = sum(r[key] for r in rows) / len(rows) if rows else float("nan")
        return out


def panoptic_quality(preds: Iterable[tuple[torch.Tensor, list]], targets: Iterable[tuple[torch.Tensor, list]],
                     thing_classes: Sequence[int], stuff_classes: Sequence[int]) -> dict[str, float]:
    """PQ over a dataset: ``preds`` and ``targets`` yield ``(segment_ids, segments)`` per image."""
    metric = PanopticQuality(thing_classes, stuff_classes)
    for (p_ids, p_segs), (g_ids, g_segs) in zip(preds, targets, strict=True):
        metric.update(p_ids, p_segs, g_ids, g_segs)
    return metric.compute()


def mean_iou(preds: Iterable[torch.Tensor], targets: Iterable[torch.Tensor], num_classes: int,
             ignore_index: int = 255) -> float:
    """Semantic mIoU with the confusion pooled over the dataset (torchmetrics' ``MulticlassJaccardIndex``).

    Predictions equal to ``ignore_index`` count as wrong; classes absent from both are left out.
    """
    from torchmetrics.classification import MulticlassJaccardIndex

    metric = MulticlassJaccardIndex(num_classes=num_classes + 1, ignore_index=ignore_index, average="none")
    for p, t in zip(preds, targets, strict=True):
        p = torch.where(p == ignore_index, torch.full_like(p, num_classes), p)  # an extra "no class" bin
        metric.update(p.reshape(1, -1).long(), t.reshape(1, -1).long())
    confusion = metric.confmat
    per_class = metric.compute()[:num_classes]
    seen = (confusion[:num_classes].sum(1) + confusion[:, :num_classes].sum(0)) > 0
    return float(per_class[seen].mean()) if bool(seen.any()) else float("nan")


def _categories(segments: Iterable[dict], name: str) -> dict[int, int]:
    out = {}
    for s in segments:
        if "id" not in s or "category_id" not in s:
            raise ValueError(f"every {name} segment needs 'id' and 'category_id', got {s}")
        if int(s["id"]) == 0:
            raise ValueError(f"{name} segment id 0 is reserved for VOID")
        out[int(s["id"])] = int(s["category_id"])
    return out


def _areas(ids: torch.Tensor) -> dict[int, int]:
    keys, counts = torch.unique(ids, return_counts=True)
    return {int(k): int(n) for k, n in zip(keys, counts)}


def _stacked(per_image: Sequence[PanopticQuality], classes: list[int]) -> torch.Tensor:
    """(n_images, n_classes, 4) float64 [iou, tp, fp, fn] counts."""
    return torch.tensor([[[m.iou[c], m.tp[c], m.fp[c], m.fn[c]] for c in classes] for m in per_image],
                        dtype=torch.float64)


def _pq_from_counts(counts: torch.Tensor, class_mask: torch.Tensor) -> torch.Tensor:
    """PQ averaged over the masked classes that occurred, for (..., n_classes, 4) counts."""
    iou, tp, fp, fn = counts.unbind(-1)
    denom = tp + 0.5 * fp + 0.5 * fn
    occurred = (denom > 0) & class_mask
    pq = torch.where(occurred, iou / denom.clamp_min(1e-12), torch.zeros_like(iou))
    return pq.sum(-1) / occurred.sum(-1).clamp_min(1)


def bootstrap_pq(per_image: Sequence[PanopticQuality], which: str = "th", n_boot: int = 2000, level: float = 0.95,
                 seed: int = 0, paired_with: Sequence[PanopticQuality] | None = None) -> tuple[float, float, float]:
    """Percentile bootstrap over images of PQ (``which``: "all", "th" or "st").

    ``per_image`` holds one :class:`PanopticQuality` per image (counts of that image only); each
    resample draws images with replacement and pools their counts, as the dataset-level PQ does.
    With ``paired_with`` (the same images scored for another method) the statistic is the
    difference ``PQ(per_image) − PQ(paired_with)`` on the same resamples.

    Returns:
        (estimate on all images, lower, upper) bound of the ``level`` interval.
    """
    first = per_image[0]
    classes = sorted(first.known)
    group = {"all": first.known, "th": set(first.thing_classes), "st": set(first.stuff_classes)}[which]
    mask = torch.tensor([c in group for c in classes])
    counts = _stacked(per_image, classes)
    other = _stacked(paired_with, classes) if paired_with is not None else None
    if other is not None and other.shape != counts.shape:
        raise ValueError("paired_with must score the same images (same length) as per_image")
    gen = torch.Generator().manual_seed(seed)
    n = len(per_image)
    draws = torch.randint(0, n, (n_boot, n), generator=gen)
    weights = torch.zeros(n_boot, n, dtype=torch.float64).scatter_add_(1, draws, torch.ones(n_boot, n, dtype=torch.float64))

    def stat(w: torch.Tensor) -> torch.Tensor:
        value = _pq_from_counts(torch.einsum("bn,nck->bck", w, counts), mask)
        if other is not None:
            value = value - _pq_from_counts(torch.einsum("bn,nck->bck", w, other), mask)
        return value

    estimate = float(stat(torch.ones(1, n, dtype=torch.float64))[0])
    samples = stat(weights)
    alpha = (1.0 - level) / 2
    low, high = torch.quantile(samples, torch.tensor([alpha, 1 - alpha], dtype=torch.float64)).tolist()
    return estimate, low, high
