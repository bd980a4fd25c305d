"""Losses of point-supervised panoptic segmentation.

All maps are full resolution: logits (B, C, H, W), boundary probabilities (B, H, W), embeddings
(B, D, H, W). Pseudo-labels come from :class:`~otlearn.point2mask.masks.PseudoMaskGenerator`.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from otlearn.point2mask.masks import PseudoLabel


def point_cross_entropy(logits: torch.Tensor, points: Sequence[torch.Tensor], labels: Sequence[torch.Tensor]) -> torch.Tensor:
    """Partial cross-entropy: mean CE over the annotated pixels only. ``logits`` (B, C, H, W)."""
    picked, targets = [], []
    for b, (pts, lab) in enumerate(zip(points, labels)):
        if len(pts):
            picked.append(logits[b, :, pts[:, 0], pts[:, 1]].T)
            targets.append(lab.to(logits.device))
    if not picked:
        return logits.sum() * 0.0
    return F.cross_entropy(torch.cat(picked), torch.cat(targets))


def boundary_loss(boundary: torch.Tensor, pseudo: Sequence[PseudoLabel], eps: float = 1e-6) -> torch.Tensor:
    """Point2Mask's boundary loss from pseudo-masks; ``boundary`` (B, H, W) probabilities.

    For 8-neighbour (here: right and down) pixel pairs both labelled (segment id > 0):
    same segment → ``−log(1 − max(B_p, B_q))``; different segments → ``−log(max(B_p, B_q))``.
    The two groups are averaged separately and added, so the rare boundary pairs count as much
    as the many interior pairs.
    """
    ids = torch.stack([p.segment_ids for p in pseudo]).to(boundary.device)
    same_terms, diff_terms = [], []
    for dy, dx in ((0, 1), (1, 0)):
        H, W = ids.shape[-2:]
        a, b = ids[:, : H - dy, : W - dx], ids[:, dy:, dx:]
        ba, bb = boundary[:, : H - dy, : W - dx], boundary[:, dy:, dx:]
        valid = (a > 0) & (b > 0)
        edge = torch.maximum(ba, bb).clamp(eps, 1 - eps)
        same = valid & (a == b)
        diff = valid & (a != b)
        same_terms.append(-torch.log1p(-edge[same]))
        diff_terms.append(-torch.log(edge[diff]))
    same_all, diff_all = torch.cat(same_terms), torch.cat(diff_terms)
    loss = boundary.sum() * 0.0
    if same_all.numel():
        loss = loss + same_all.mean()
    if diff_all.numel():
        loss = loss + diff_all.mean()
    return loss


def embedding_loss(embeddings: torch.Tensor, points: Sequence[torch.Tensor], pseudo: Sequence[PseudoLabel],
                   temperature: float = 0.07) -> torch.Tensor:
    """InfoNCE pulling each thing point's embedding to its pseudo-mask's mean embedding.

    Per image, prototypes are the normalised mean embeddings of all pseudo segments; the point of
    segment s is classified among them with logits ``cos / temperature``. ``embeddings``
    (B, D, H, W) are L2-normalised along D.
    """
    losses = []
    for b, (pts, lab) in enumerate(zip(points, pseudo)):
        things = [s for s in lab.segments if s["isthing"]]
        if len(lab.segments) < 2 or not things:
            continue
        ids = lab.segment_ids.to(embeddings.device).reshape(-1)
        emb = embeddings[b].reshape(embeddings.shape[1], -1)
        protos = torch.stack([emb[:, ids == s["id"]].mean(1) for s in lab.segments])
        protos = F.normalize(protos, dim=1)
        order = {s["id"]: i for i, s in enumerate(lab.segments)}
        anchors = torch.stack([emb[:, int(pts[s["point"], 0]) * lab.segment_ids.shape[1] + int(pts[s["point"], 1])]
                               for s in things])
        targets = torch.tensor([order[s["id"]] for s in things], device=embeddings.device)
        losses.append(F.cross_entropy(anchors @ protos.T / temperature, targets))
    if not losses:
        return embeddings.sum() * 0.0
    return torch.stack(losses).mean()


def instance_targets(pseudo: Sequence[PseudoLabel], sigma: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Centre heatmaps (B, H, W), offsets (B, 2, H, W) and thing-pixel masks (B, H, W) from pseudo-masks.

    Panoptic-DeepLab targets: a Gaussian of width ``sigma`` at each thing mask's centre of mass,
    and for every thing pixel the vector to its mask's centre.
    """
    B = len(pseudo)
    H, W = pseudo[0].segment_ids.shape
    yy, xx = torch.meshgrid(torch.arange(H, dtype=torch.float32), torch.arange(W, dtype=torch.float32), indexing="ij")
    heat = torch.zeros(B, H, W)
    offset = torch.zeros(B, 2, H, W)
    things = torch.zeros(B, H, W, dtype=torch.bool)
    for b, lab in enumerate(pseudo):
        for s in lab.segments:
            if not s["isthing"]:
                continue
            region = lab.segment_ids == s["id"]
            cy, cx = yy[region].mean(), xx[region].mean()
            heat[b] = torch.maximum(heat[b], torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2)))
            offset[b, 0][region] = cy - yy[region]
            offset[b, 1][region] = cx - xx[region]
            things[b] |= region
    return heat, offset, things


def color_affinity_loss(logits: torch.Tensor, images: torch.Tensor, theta: float = 0.1, threshold: float = 0.3,
                        dilation: int = 1) -> torch.Tensor:
    """Pairwise colour-affinity loss on the point branch (BoxInst-style; *not* part of Point2Mask).

    For 8-neighbour pixel pairs (at ``dilation``) whose colour similarity
    ``exp(−||c_p − c_q||_2 / theta)`` is at least ``threshold`` (``images`` (B, 3, H, W) in [0, 1]),
    the class distributions should agree: loss = mean of ``−log Σ_c P_p(c) P_q(c)``. With only one
    labelled pixel per object it keeps the semantic map from spilling over colour edges, which a
    randomly initialised CPU-sized encoder otherwise does.
    """
    logp = F.log_softmax(logits, dim=1)
    terms = []
    d = dilation
    H, W = logits.shape[-2:]
    for dy, dx in ((0, d), (d, 0), (d, d), (d, -d)):
        ys = slice(0, H - dy)
        ys2 = slice(dy, H)
        xs = slice(0, W - dx) if dx >= 0 else slice(-dx, W)
        xs2 = slice(dx, W) if dx >= 0 else slice(0, W + dx)
        sim = torch.exp(-(images[:, :, ys, xs] - images[:, :, ys2, xs2]).norm(dim=1) / theta)
        agree = torch.logsumexp(logp[:, :, ys, xs] + logp[:, :, ys2, xs2], dim=1)  # log Σ_c P_p(c) P_q(c)
        terms.append(-agree[sim >= threshold])
    all_terms = torch.cat(terms)
    return all_terms.mean() if all_terms.numel() else logits.sum() * 0.0
