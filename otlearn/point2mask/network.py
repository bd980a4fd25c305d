"""The segmentation network: a timm encoder, a small FPN decoder and five heads.

(B, 3, H, W) images → dict of full-resolution maps:

* ``point_logits`` (B, C, H, W): semantic head trained on the annotated points only; its softmax
  is the class-probability map the pseudo-labels are built from;
* ``boundary`` (B, H, W): boundary probabilities (trained from pseudo-masks);
* ``embedding`` (B, D, H, W): L2-normalised pixel embeddings (trained from pseudo-masks);
* ``panoptic_logits`` (B, C, H, W): semantic head of the panoptic branch (trained on pseudo-labels);
* ``center`` (B, H, W) and ``offset`` (B, 2, H, W): Panoptic-DeepLab-style instance head
  (trained on pseudo-masks) that groups thing pixels at inference, when no points are given.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class PanopticNet(nn.Module):
    """timm ``features_only`` encoder (never pretrained) → top-down FPN to the finest stride → heads."""

    def __init__(self, num_classes: int, backbone: str = "resnet18", embed_dim: int = 16, width: int = 64) -> None:
        super().__init__()
        import timm

        if not timm.is_model(backbone):
            raise ValueError(f"unknown timm backbone {backbone!r} (see timm.list_models())")
        self.encoder = timm.create_model(backbone, features_only=True, pretrained=False)
        channels = self.encoder.feature_info.channels()
        self.reductions = self.encoder.feature_info.reduction()
        self.lateral = nn.ModuleList(nn.Conv2d(c, width, 1) for c in channels)
        self.smooth = _conv(width, width)
        self.tower = nn.ModuleDict({name: _conv(width, width) for name in ("semantic", "instance")})
        self.point_head = nn.Conv2d(width, num_classes, 1)
        self.panoptic_head = nn.Conv2d(width, num_classes, 1)
        self.boundary_head = nn.Conv2d(width, 1, 1)
        self.embedding_head = nn.Conv2d(width, embed_dim, 1)
        self.center_head = nn.Conv2d(width, 1, 1)
        self.offset_head = nn.Conv2d(width, 2, 1)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        H, W = images.shape[-2:]
        feats = self.encoder(images)
        x = self.lateral[-1](feats[-1])
        for lat, f in zip(reversed(self.lateral[:-1]), reversed(feats[:-1])):
            x = lat(f) + F.interpolate(x, size=f.shape[-2:], mode="bilinear", align_corners=False)
        x = self.smooth(x)
        sem, ins = self.tower["semantic"](x), self.tower["instance"](x)

        def up(t: torch.Tensor) -> torch.Tensor:
            return F.interpolate(t, size=(H, W), mode="bilinear", align_corners=False)

        return {
            "point_logits": up(self.point_head(sem)),
            "panoptic_logits": up(self.panoptic_head(sem)),
            "boundary": torch.sigmoid(up(self.boundary_head(ins)))[:, 0],
            "embedding": F.normalize(up(self.embedding_head(ins)), dim=1),
            "center": torch.sigmoid(up(self.center_head(ins)))[:, 0],
            "offset": up(self.offset_head(ins)),
        }


def group_instances(semantic: torch.Tensor, center: torch.Tensor, offset: torch.Tensor, thing_classes,
                    num_classes: int, threshold: float = 0.1, nms_kernel: int = 7, top_k: int = 32,
                    min_area: int = 8) -> tuple[torch.Tensor, list[dict]]:
    """Panoptic output of one image from the panoptic branch (Panoptic-DeepLab grouping).

    Args:
        semantic: (H, W) int64 class per pixel; center: (H, W) heatmap; offset: (2, H, W).

    Centres are local maxima of the heatmap above ``threshold`` (max-pool NMS, at most ``top_k``);
    every thing pixel joins the centre nearest to ``pixel + offset``; an instance's class is the
    majority class of its pixels; instances under ``min_area`` pixels become VOID. Each stuff class
    present is one segment.

    Returns:
        ``segment_ids`` (H, W) int64 (0 = VOID) and the segment list (``id``, ``category_id``,
        ``isthing``, ``area``).
    """
    H, W = semantic.shape
    is_thing = torch.zeros(num_classes, dtype=torch.bool)
    is_thing[list(thing_classes)] = True
    thing_mask = is_thing[semantic]
    segment_ids = torch.zeros(H, W, dtype=torch.long)
    segments: list[dict] = []
    next_id = 1
    for c in torch.unique(semantic[~thing_mask]).tolist():
        region = (~thing_mask) & (semantic == c)
        segment_ids[region] = next_id
        segments.append({"id": next_id, "category_id": int(c), "isthing": False, "area": int(region.sum())})
        next_id += 1
    if not bool(thing_mask.any()):
        return segment_ids, segments
    pooled = F.max_pool2d(center[None, None], nms_kernel, stride=1, padding=nms_kernel // 2)[0, 0]
    peaks = (center == pooled) & (center > threshold)
    scores = center[peaks]
    coords = torch.nonzero(peaks).float()
    if len(coords) == 0:
        coords = torch.nonzero(center == center[thing_mask].max()).float()[:1]
    elif len(coords) > top_k:
        coords = coords[scores.topk(top_k).indices]
    ys, xs = torch.nonzero(thing_mask, as_tuple=True)
    voted = torch.stack([ys.float() + offset[0, ys, xs], xs.float() + offset[1, ys, xs]], 1)
    owner = torch.cdist(voted, coords).argmin(1)
    for k in torch.unique(owner).tolist():
        sel = owner == k
        if int(sel.sum()) < min_area:
            continue
        cls = int(torch.mode(semantic[ys[sel], xs[sel]]).values)
        segment_ids[ys[sel], xs[sel]] = next_id
        segments.append({"id": next_id, "category_id": cls, "isthing": True, "area": int(sel.sum())})
        next_id += 1
    return segment_ids, segments
