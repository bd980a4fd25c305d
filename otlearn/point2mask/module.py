"""``PointSupervisedSegmentation``: panoptic segmentation from one point per object.

A simplification of Point2Mask (Panoptic SegFormer + OT pseudo-labels), in one LightningModule:

* a **point branch** — semantic head trained by partial cross-entropy on the annotated points,
  boundary head and embedding head trained from the current pseudo-masks. These are the maps the
  pseudo-labels are built from;
* **pseudo-labels** regenerated without gradient at every training step by
  :class:`~otlearn.point2mask.masks.PseudoMaskGenerator` (``pseudo_method``: "ot" = Point2Mask,
  "voronoi", "geodesic", "centroid");
* a **panoptic branch** trained on the pseudo-labels: a semantic head (cross-entropy, VOID
  ignored) and a Panoptic-DeepLab instance head (centre heatmap + offsets) that replaces Panoptic
  SegFormer's query-based mask decoder; at inference it groups thing pixels without any points.

Pseudo-labels are computed on the CPU (scipy's Dijkstra; float64 OT on at most H·W x P entries
per image), one image after another: on a GPU the maps of each step are copied to the host. Use
``cost_stride`` > 1 to build the graph on pooled maps when images are large.

Batches are dicts from :func:`otlearn.data.shapes.collate_panoptic` (``image`` (B, 3, H, W) in
[0, 1], lists ``points`` (P, 2) ``(y, x)`` and ``point_labels`` (P,); validation also needs
``panoptic`` (B, H, W) and ``segments``).
"""
from __future__ import annotations

import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from otlearn.eval.panoptic import PanopticQuality
from otlearn.point2mask.cost import CostWeights
from otlearn.point2mask.losses import boundary_loss, color_affinity_loss, embedding_loss, instance_targets, point_cross_entropy
from otlearn.ot import SinkhornSolver
from otlearn.point2mask.masks import IGNORE, PseudoMaskGenerator, default_solver
from otlearn.point2mask.network import PanopticNet, group_instances


class PointSupervisedSegmentation(pl.LightningModule):
    """Point-supervised panoptic segmentation with pseudo-masks regenerated at every step.

    Args:
        num_classes: C (things and stuff in one id space); required, it is the dataset's.
        thing_classes: category ids that are things; the others are stuff (required).
        backbone: timm model name for the encoder (``features_only``, never pretrained).
        embed_dim: D of the embedding head.
        width: decoder channels.
        pseudo_method: "ot" (Point2Mask), "voronoi", "geodesic" or "centroid".
        cost_semantic, cost_boundary, cost_feature, cost_step, cost_stride: :class:`CostWeights`.
        eps: ε of the transport, relative to the cost maximum (costs are divided by it; Point2Mask's ε).
        solver: the transport's :class:`~otlearn.ot.SinkhornSolver` (default
            :func:`otlearn.point2mask.masks.default_solver`).
        point_square: side of the square around each point in the category-wise map.
        pseudo_mass: the fraction of the thing foreground the points receive (``PseudoMaskGenerator.mass``;
            ``pseudo_method="ot"`` only): 1 is Point2Mask's full transport, < 1 a partial transport
            whose dustbin leaves the most expensive pixels VOID.
        capacity_warmup_steps: before this step OT capacities are the nearest-point cell sizes
            (Point2Mask's warm-up), afterwards the centroid-based counts.
        pseudo_start_step: steps of point-only training before pseudo-label losses start (the
            maps are meaningless at initialisation).
        w_point, w_affinity, w_boundary, w_embedding, w_panoptic, w_center, w_offset: loss weights.
        center_sigma: Gaussian width (pixels) of the centre targets.
        lr, weight_decay: AdamW.
    """

    def __init__(
        self,
        num_classes: int,
        thing_classes: list[int],
        backbone: str = "resnet18",
        embed_dim: int = 16,
        width: int = 64,
        pseudo_method: str = "ot",
        cost_semantic: float = 1.0,
        cost_boundary: float = 0.1,
        cost_feature: float = 0.1,
        cost_step: float = 1e-3,
        cost_stride: int = 1,
        eps: float = 1e-3,
        solver: SinkhornSolver | None = None,
        point_square: int = 1,
        pseudo_mass: float = 1.0,
        capacity_warmup_steps: int = 0,
        pseudo_start_step: int = 20,
        w_point: float = 1.0,
        w_affinity: float = 1.0,
        w_boundary: float = 1.0,
        w_embedding: float = 0.5,
        w_panoptic: float = 1.0,
        w_center: float = 200.0,
        w_offset: float = 1.0,
        center_sigma: float = 2.0,
        lr: float = 2e-3,
        weight_decay: float = 1e-4,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["solver"])
        if sorted(set(thing_classes)) != sorted(thing_classes) or not thing_classes:
            raise ValueError(f"thing_classes must be distinct ids, got {thing_classes}")
        self.thing_classes = list(thing_classes)
        self.stuff_classes = [c for c in range(num_classes) if c not in self.thing_classes]
        self.net = PanopticNet(num_classes, backbone, embed_dim, width)
        weights = CostWeights(cost_semantic, cost_boundary, cost_feature, cost_step, cost_stride)
        common = dict(num_classes=num_classes, thing_classes=self.thing_classes, method=pseudo_method,
                      weights=weights, eps=eps, solver=solver or default_solver(), point_square=point_square,
                      mass=pseudo_mass)
        self.generator = PseudoMaskGenerator(**common)
        self.warmup_generator = PseudoMaskGenerator(**common, capacity="nearest", ot_seeds="original")
        self.val_pq = PanopticQuality(self.thing_classes, self.stuff_classes)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.net((images - 0.5) / 0.25)

    # ---- pseudo-labels and panoptic output -------------------------------------------------------
    @torch.no_grad()
    def pseudo_labels(self, batch: dict, outputs: dict | None = None):
        """Pseudo-labels of a batch from the point branch's current maps (no gradient)."""
        outputs = outputs if outputs is not None else self(batch["image"])
        gen = self.warmup_generator if self.global_step < self.hparams.capacity_warmup_steps else self.generator
        return gen(outputs["point_logits"].softmax(1), batch["points"], batch["point_labels"],
                   boundary=outputs["boundary"], embeddings=outputs["embedding"])

    @torch.no_grad()
    def panoptic(self, images: torch.Tensor, outputs: dict | None = None) -> list[tuple[torch.Tensor, list[dict]]]:
        """Panoptic segmentation of (B, 3, H, W) images without points: ``(segment_ids, segments)`` each
        (from ``outputs`` of :meth:`forward` when the caller already has them)."""
        out = outputs if outputs is not None else self(images)
        semantic = out["panoptic_logits"].argmax(1).cpu()
        return [group_instances(semantic[b], out["center"][b].cpu(), out["offset"][b].cpu(), self.thing_classes,
                                self.hparams.num_classes) for b in range(len(images))]

    # ---- training ----------------------------------------------------------------------------
    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        out = self(batch["image"])
        hp = self.hparams
        loss_point = point_cross_entropy(out["point_logits"], batch["points"], batch["point_labels"])
        logs = {"train/loss_point": loss_point}
        loss = hp.w_point * loss_point
        if hp.w_affinity > 0:
            loss_affinity = color_affinity_loss(out["point_logits"], batch["image"])
            logs["train/loss_affinity"] = loss_affinity
            loss = loss + hp.w_affinity * loss_affinity
        if self.global_step >= hp.pseudo_start_step:
            pseudo = self.pseudo_labels(batch, {k: v.detach() for k, v in out.items()})
            semantic = torch.stack([p.semantic for p in pseudo]).to(self.device)
            heat, offset, things = (t.to(self.device) for t in instance_targets(pseudo, hp.center_sigma))
            loss_boundary = boundary_loss(out["boundary"], pseudo)
            loss_embedding = embedding_loss(out["embedding"], batch["points"], pseudo)
            loss_panoptic = F.cross_entropy(out["panoptic_logits"], semantic, ignore_index=IGNORE) \
                if bool((semantic != IGNORE).any()) else out["panoptic_logits"].sum() * 0.0
            loss_center = F.mse_loss(out["center"], heat)
            offset_err = (out["offset"] - offset).abs().sum(1)
            loss_offset = offset_err[things].mean() if bool(things.any()) else offset_err.sum() * 0.0
            loss = loss + hp.w_boundary * loss_boundary + hp.w_embedding * loss_embedding \
                + hp.w_panoptic * loss_panoptic + hp.w_center * loss_center + hp.w_offset * loss_offset
            logs.update({"train/loss_boundary": loss_boundary, "train/loss_embedding": loss_embedding,
                         "train/loss_panoptic": loss_panoptic, "train/loss_center": loss_center,
                         "train/loss_offset": loss_offset,
                         "train/ot_iters": float(sum(p.n_iters for p in pseudo)) / len(pseudo)})
        logs["train/loss"] = loss
        self.log_dict(logs, batch_size=len(batch["image"]), on_step=True, on_epoch=False)
        return loss

    # ---- evaluation ----------------------------------------------------------------------------
    def on_validation_epoch_start(self) -> None:
        self.val_pq = PanopticQuality(self.thing_classes, self.stuff_classes)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        for (ids, segs), gt_ids, gt_segs in zip(self.panoptic(batch["image"]), batch["panoptic"], batch["segments"]):
            self.val_pq.update(ids, segs, gt_ids.cpu(), gt_segs)

    def on_validation_epoch_end(self) -> None:
        self.val_pq.sync()
        result = self.val_pq.compute()
        self.log_dict({f"val/{k}": v for k, v in result.items() if k in ("pq_th", "pq_st", "sq", "rq")})
        self.log("val/pq", result["pq"], prog_bar=True)

    def predict_step(self, batch: dict, batch_idx: int):
        return self.panoptic(batch["image"])

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
