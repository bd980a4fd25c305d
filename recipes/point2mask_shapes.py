"""Point2Mask on synthetic panoptic shapes: pseudo-mask arms compared in one run, then training.

Part 1 — pseudo-masks. On ``pseudo_images`` synthetic images (one point per segment), every arm
turns the same maps and points into panoptic pseudo-masks, scored against the ground truth:
``voronoi`` (Euclidean nearest thing point inside the foreground), ``geodesic`` (PSPS-style
geodesic nearest point: Point2Mask's initial masks), ``centroid`` (centroid reseeding alone),
``ot`` (otlearn's default: OT whose geodesic cost is measured from the centroid-reseeded seeds, each
seed supplying the pixel count of its geodesic nearest-seed cell), ``ot_point2mask`` (Point2Mask's
setting: cost from the original points, capacities = reseeded mask areas),
``ot_true_capacity`` (``ot`` given the true segment areas: an oracle ablation),
``watershed`` (scikit-image marker watershed of the boundary map), ``ot_class_cost`` (otlearn's
option: OT whose cost also weighs the point's class probability), ``ot_partial`` (``ot`` as a
partial transport: the points receive ``ot_mass`` of the foreground, a constant-cost dustbin leaves
the rest VOID) and ``centroid_drop`` (its ablation without transport: centroid reseeding, then the
same fraction of pixels farthest from their seed left VOID). PQ_th with 95% bootstrap
intervals over images, and paired intervals of the differences to ``voronoi`` and ``geodesic``.

The maps of part 1 stand in for a network's outputs and are built from the ground truth in a
declared way ("noisy oracle"): class probabilities = softmax(3 · box-blurred one-hot ground-truth
classes + ``map_noise`` · smooth Gaussian noise), boundary = Sobel edge magnitude of the image
(normalised per image); no embeddings. Every arm sees exactly the same maps.

Part 2 — training. ``PointSupervisedSegmentation`` (timm encoder, never pretrained) trained from
the points with the pseudo-masks of each of ``train_arms`` (``ot``, ``ot_partial``; e.g. ``voronoi``), with Voronoi pseudo-masks regenerated at every
step from its own maps, for each training seed; PQ, PQ_th, PQ_st and mIoU on held-out images (no
points at test time), means over seeds.
The pseudo arms are also scored on the maps of the networks trained with the first OT arm of
``train_arms`` (training images, every training seed's network: the intervals there are over
(seed, image) pairs).

Writes ``<out_dir>/metrics.json`` (PQ values in points, 0-100: ``pseudo`` → arm → ``pq_th``,
``pq_th_ci_low``, ``pq_th_ci_high``, …; ``pseudo_network_maps`` likewise; ``trained`` → (``ot``,
``voronoi``) → ``pq``, ``pq_th``, ``pq_st``, ``miou``), ``report.md`` and ``overlay.png``.

    python recipes/point2mask_shapes.py --config configs/point2mask/shapes.yaml [--smoke true]
"""
from __future__ import annotations

import json
import os
import statistics
import sys
import time
import warnings

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from jsonargparse import ActionConfigFile, ArgumentParser

from otlearn.data.datamodule import ShapesDataModule
from otlearn.data.shapes import NUM_CLASSES, THING_IDS, SyntheticPanopticShapes, collate_panoptic, noisy_oracle_maps
from otlearn.eval.panoptic import PanopticQuality, bootstrap_pq, mean_iou
from otlearn.ot import SinkhornSolver
from otlearn.point2mask import CostWeights, PointSupervisedSegmentation, PseudoMaskGenerator
from otlearn.point2mask.masks import GeodesicStages, default_solver

STUFF_IDS = tuple(c for c in range(NUM_CLASSES) if c not in THING_IDS)
ARMS = ("voronoi", "geodesic", "centroid", "ot", "ot_point2mask", "ot_true_capacity", "watershed", "ot_class_cost",
        "ot_partial", "centroid_drop")
OT_TRAIN_ARMS = {"ot": 1.0, "ot_partial": None}  # training arm -> transported mass (None: the config's ot_mass)


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(description="Point2Mask pseudo-mask arms and point-supervised training on synthetic shapes.")
    parser.add_argument("--config", action=ActionConfigFile)
    parser.add_argument("--pseudo_images", type=int, default=80, help="images scored in part 1 (>= 60)")
    parser.add_argument("--pseudo_size", type=int, default=96)
    parser.add_argument("--pseudo_seed", type=int, default=100)
    parser.add_argument("--map_noise", type=float, default=1.0, help="noise of the noisy-oracle class maps")
    parser.add_argument("--cost_semantic", type=float, default=1.0)
    parser.add_argument("--cost_boundary", type=float, default=0.1)
    parser.add_argument("--cost_feature", type=float, default=0.1)
    parser.add_argument("--eps", type=float, default=1e-3, help="OT ε, relative to the cost maximum")
    parser.add_argument("--ot_mass", type=float, default=0.8,
                        help="fraction of the thing foreground the points receive in the ot_partial arm")
    parser.add_argument("--solver", type=SinkhornSolver, default=default_solver(), help="the OT stage's solver")
    parser.add_argument("--n_boot", type=int, default=2000)
    parser.add_argument("--train_arms", type=list[str], default=["ot", "voronoi"])
    parser.add_argument("--train_size", type=int, default=96)
    parser.add_argument("--val_size", type=int, default=48)
    parser.add_argument("--image_size", type=int, default=64)
    parser.add_argument("--max_epochs", type=int, default=40)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--backbone", type=str, default="resnet18")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--train_seeds", type=list[int], default=[0, 1, 2], help="training seeds (data and init)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--progress_bar", type=bool, default=False)
    parser.add_argument("--out_dir", type=str, default="runs/point2mask_shapes")
    parser.add_argument("--smoke", type=bool, default=False, help="a few tiny images, 1 epoch: checks the pipeline only")
    return parser


def generators(cfg) -> dict[str, PseudoMaskGenerator]:
    weights = CostWeights(cfg.cost_semantic, cfg.cost_boundary, cfg.cost_feature)
    common = dict(num_classes=NUM_CLASSES, thing_classes=THING_IDS, weights=weights, eps=cfg.eps, solver=cfg.solver)
    gens = {arm: PseudoMaskGenerator(method=arm, **common) for arm in ("voronoi", "geodesic", "centroid", "ot", "watershed")}
    gens["ot_true_capacity"] = gens["ot"]
    gens["ot_class_cost"] = PseudoMaskGenerator(method="ot", ot_cost="class_weighted", **common)
    gens["ot_point2mask"] = PseudoMaskGenerator(method="ot", ot_seeds="original", capacity="centroid", **common)
    gens["ot_partial"] = PseudoMaskGenerator(method="ot", mass=cfg.ot_mass, **common)
    gens["centroid_drop"] = FarthestLeftVoid(method="centroid", drop=1.0 - cfg.ot_mass, **common)
    return gens


class FarthestLeftVoid(PseudoMaskGenerator):
    """Ablation of the partial transport without transport: the ``centroid`` masks, then the fraction
    ``drop`` of the foreground pixels farthest (geodesic distance) from their reseeded seed left VOID."""

    def __init__(self, *args, drop: float, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.drop = drop

    def _owners(self, cmap, foreground, seeds, labels, boundary, embeddings, capacities):
        stages = GeodesicStages(cmap, foreground, seeds, labels, boundary, embeddings, self.weights)
        owner = stages.reseeded.clone()
        to_own_seed = stages.reseeded_dist.gather(0, owner[None])[0]
        n_drop = int(round(self.drop * owner.numel()))
        if n_drop > 0:
            owner[to_own_seed.argsort(descending=True)[:n_drop]] = -1
        return owner, None, 0


def true_capacities(panoptic: torch.Tensor, point_segments: torch.Tensor) -> torch.Tensor:
    """(P,) ground-truth area of the segment each point was drawn from."""
    return torch.tensor([float((panoptic == s).sum()) for s in point_segments.tolist()], dtype=torch.float64)


def score_arms(cfg, items, gens) -> tuple[dict, dict, dict]:
    """items: (probs, boundary, embeddings, points, labels, gt_ids, gt_segments, true caps) per image.

    Returns per-arm lists of per-image PanopticQuality, per-arm seconds per image, and the outputs
    of the first three images (for the overlay)."""
    per_image = {arm: [] for arm in gens}
    seconds = {arm: [] for arm in gens}
    shown = {arm: [] for arm in gens}
    for i, (probs, boundary, emb, points, labels, gt_ids, gt_segs, caps) in enumerate(items):
        for arm, gen in gens.items():
            start = time.perf_counter()
            out = gen(probs[None], [points], [labels], boundary=None if boundary is None else boundary[None],
                      embeddings=None if emb is None else emb[None],
                      capacities=[caps] if arm == "ot_true_capacity" else None)[0]
            seconds[arm].append(time.perf_counter() - start)
            metric = PanopticQuality(THING_IDS, STUFF_IDS)
            metric.update(out.segment_ids, out.segments, gt_ids, gt_segs)
            per_image[arm].append(metric)
            if i < 3:
                shown[arm].append(out.segment_ids)
    return per_image, seconds, shown


def summarise(per_image: dict, seconds: dict, n_boot: int) -> dict:
    table = {}
    for arm, metrics in per_image.items():
        est, low, high = bootstrap_pq(metrics, "th", n_boot=n_boot)
        full = PanopticQuality.pooled(metrics).compute()
        row = {"pq_th": 100 * est, "pq_th_ci_low": 100 * low, "pq_th_ci_high": 100 * high,
               "sq_th": 100 * full["sq_th"], "rq_th": 100 * full["rq_th"], "pq": 100 * full["pq"],
               "ms_per_image": 1000 * statistics.median(seconds[arm])}
        for ref in ("voronoi", "geodesic"):
            if ref in per_image and ref != arm:
                d, dl, dh = bootstrap_pq(metrics, "th", n_boot=n_boot, paired_with=per_image[ref])
                row[f"minus_{ref}"] = 100 * d
                row[f"minus_{ref}_ci"] = [100 * dl, 100 * dh]
        table[arm] = row
    return table


def train_and_evaluate(cfg, arm: str, seed: int):
    """Train on the points of ``train_size`` images (pseudo-masks by ``arm``), score held-out images."""
    pl.seed_everything(seed, workers=True)
    dm = ShapesDataModule(train_size=cfg.train_size, val_size=cfg.val_size, image_size=cfg.image_size,
                          seed=0, batch_size=cfg.batch_size)
    mass = OT_TRAIN_ARMS.get(arm, 1.0)
    model = PointSupervisedSegmentation(num_classes=NUM_CLASSES, thing_classes=list(THING_IDS), backbone=cfg.backbone,
                                        pseudo_method="ot" if arm in OT_TRAIN_ARMS else arm,
                                        pseudo_mass=cfg.ot_mass if mass is None else mass, cost_semantic=cfg.cost_semantic,
                                        cost_boundary=cfg.cost_boundary, cost_feature=cfg.cost_feature,
                                        eps=cfg.eps, solver=cfg.solver, lr=cfg.lr,
                                        pseudo_start_step=2 if cfg.smoke else 20)
    trainer = pl.Trainer(max_epochs=cfg.max_epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=cfg.progress_bar, enable_model_summary=False, num_sanity_val_steps=0,
                         limit_val_batches=0, deterministic=False)
    start = time.perf_counter()
    trainer.fit(model, dm)
    fit_seconds = time.perf_counter() - start
    model.eval()
    metric = PanopticQuality(THING_IDS, STUFF_IDS)
    per_image, sem_pred, sem_true = [], [], []
    for batch in dm.val_dataloader():
        with torch.no_grad():
            out = model(batch["image"])
        semantic = out["panoptic_logits"].argmax(1)
        for (ids, segs), gt_ids, gt_segs in zip(model.panoptic(batch["image"], out), batch["panoptic"], batch["segments"]):
            metric.update(ids, segs, gt_ids, gt_segs)
            one = PanopticQuality(THING_IDS, STUFF_IDS)
            one.update(ids, segs, gt_ids, gt_segs)
            per_image.append(one)
        sem_pred.extend(semantic)
        sem_true.extend(batch["semantic"])
    result = metric.compute()
    row = {"pq": 100 * result["pq"], "pq_th": 100 * result["pq_th"], "pq_st": 100 * result["pq_st"],
           "miou": 100 * mean_iou(sem_pred, sem_true, NUM_CLASSES), "fit_seconds": fit_seconds}
    return row, model, dm, per_image


def overlay(path: str, samples, shown: dict, arms=("voronoi", "geodesic", "ot", "ot_true_capacity")) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = 2 + len(arms)
    fig, axes = plt.subplots(len(samples), cols, figsize=(2.4 * cols, 2.4 * len(samples)), squeeze=False)
    for r, s in enumerate(samples):
        axes[r, 0].imshow(s.image.permute(1, 2, 0))
        axes[r, 0].scatter(s.points[:, 1], s.points[:, 0], c="red", s=10)
        axes[r, 1].imshow(s.image.permute(1, 2, 0))
        axes[r, 1].imshow(s.panoptic % 20, cmap="tab20", alpha=0.6, interpolation="nearest")
        for c, arm in enumerate(arms):
            ax = axes[r, 2 + c]
            ax.imshow(s.image.permute(1, 2, 0))
            ax.imshow(shown[arm][r] % 20, cmap="tab20", alpha=0.6, interpolation="nearest")
            ax.scatter(s.points[:, 1], s.points[:, 0], c="red", s=6)
        for c, title in enumerate(("image + points", "ground truth", *arms)):
            axes[0, c].set_title(title, fontsize=8)
    for ax in axes.ravel():
        ax.set_axis_off()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def fmt_table(table: dict) -> list[str]:
    lines = ["| arm | PQ_th | 95% CI | SQ_th | RQ_th | PQ | − voronoi (95% CI) | − geodesic (95% CI) | ms/image |",
             "|---|---|---|---|---|---|---|---|---|"]
    for arm, r in table.items():
        def diff(ref):
            return f"{r[f'minus_{ref}']:+.1f} [{r[f'minus_{ref}_ci'][0]:+.1f}, {r[f'minus_{ref}_ci'][1]:+.1f}]" \
                if f"minus_{ref}" in r else "—"
        lines.append(f"| {arm} | {r['pq_th']:.1f} | [{r['pq_th_ci_low']:.1f}, {r['pq_th_ci_high']:.1f}] | "
                     f"{r['sq_th']:.1f} | {r['rq_th']:.1f} | {r['pq']:.1f} | {diff('voronoi')} | {diff('geodesic')} | "
                     f"{r['ms_per_image']:.0f} |")
    return lines


def main(argv: list[str] | None = None) -> dict:
    parser = build_parser()
    cfg = parser.instantiate(parser.parse_args(argv))  # the solver option becomes a SinkhornSolver
    if cfg.smoke:
        cfg.pseudo_images, cfg.pseudo_size, cfg.n_boot = 6, 48, 200
        cfg.train_size, cfg.val_size, cfg.image_size, cfg.max_epochs, cfg.batch_size = 8, 4, 48, 1, 4
        cfg.backbone, cfg.train_seeds = "resnet10t", [0]
    elif cfg.pseudo_images < 60:
        print(f"note: pseudo_images={cfg.pseudo_images} is below the 60 images the comparison asks for", file=sys.stderr)
    torch.set_num_threads(cfg.threads)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    os.makedirs(cfg.out_dir, exist_ok=True)
    started = time.perf_counter()

    # Part 1: pseudo-mask arms on noisy-oracle maps
    dataset = SyntheticPanopticShapes(cfg.pseudo_images, cfg.pseudo_size, seed=cfg.pseudo_seed)
    samples = [dataset.sample(i) for i in range(len(dataset))]
    items = []
    for i, s in enumerate(samples):
        probs, edge = noisy_oracle_maps(s, i, cfg.map_noise)
        items.append((probs, edge, None, s.points, s.point_labels, s.panoptic, s.segments,
                      true_capacities(s.panoptic, s.point_segments)))
    gens = generators(cfg)
    per_image, seconds, shown = score_arms(cfg, items, gens)
    pseudo = summarise(per_image, seconds, cfg.n_boot)
    overlay(os.path.join(cfg.out_dir, "overlay.png"), samples[:3], shown)
    print("pseudo-masks (noisy-oracle maps):", {a: round(r["pq_th"], 1) for a, r in pseudo.items()}, flush=True)

    # Part 2: training with OT and with Voronoi pseudo-masks
    trained, models, held_out = {}, {}, {}
    for arm in cfg.train_arms:
        runs, held_out[arm] = [], []
        for seed in cfg.train_seeds:
            row, model, dm, per_image = train_and_evaluate(cfg, arm, seed)
            runs.append(row)
            held_out[arm] += per_image  # (seed, image) pairs, in the same order for every arm
            models.setdefault(arm, []).append(model)
            print(f"trained with {arm} pseudo-masks, seed {seed}:", {k: round(v, 1) for k, v in row.items()}, flush=True)
        keys = ("pq", "pq_th", "pq_st", "miou", "fit_seconds")
        trained[arm] = {k: statistics.mean(r[k] for r in runs) for k in keys}
        trained[arm].update({f"{k}_std": statistics.pstdev(r[k] for r in runs) for k in ("pq", "pq_th")})
        _, low, high = bootstrap_pq(held_out[arm], "th", n_boot=cfg.n_boot)
        trained[arm].update({"pq_th_ci_low": 100 * low, "pq_th_ci_high": 100 * high, "seeds": runs})
    for arm in held_out:
        if arm in OT_TRAIN_ARMS and "voronoi" in held_out:
            d, dl, dh = bootstrap_pq(held_out[arm], "th", n_boot=cfg.n_boot, paired_with=held_out["voronoi"])
            trained[arm]["minus_voronoi"], trained[arm]["minus_voronoi_ci"] = 100 * d, [100 * dl, 100 * dh]

    # Pseudo arms on the maps of the networks trained with the first OT arm (training images)
    pseudo_net, ablation = {}, None
    map_arm = next((a for a in cfg.train_arms if a in OT_TRAIN_ARMS), None)
    if map_arm is not None:
        dm.setup()
        net_items = []
        for model in models[map_arm]:  # one OT-trained network per training seed, the same images for each
            for i in range(min(len(dm.train_set), cfg.pseudo_images)):
                s = dm.train_set.sample(i)
                with torch.no_grad():
                    out = model(s.image[None])
                net_items.append((out["point_logits"][0].softmax(0), out["boundary"][0], out["embedding"][0], s.points,
                                  s.point_labels, s.panoptic, s.segments, true_capacities(s.panoptic, s.point_segments)))
        per_net, sec_net, _ = score_arms(cfg, net_items, gens)
        pseudo_net = summarise(per_net, sec_net, cfg.n_boot)
        d, dl, dh = bootstrap_pq(per_net["ot_partial"], "th", n_boot=cfg.n_boot, paired_with=per_net["centroid_drop"])
        ablation = {"minus": 100 * d, "ci": [100 * dl, 100 * dh]}

    metrics = {"pseudo": pseudo, "pseudo_network_maps": pseudo_net, "network_maps_of": map_arm, "trained": trained,
               **({"ablation": ablation} if ablation else {}),
               "config": {k: v for k, v in vars(cfg).items() if k != "config"},
               "seconds": time.perf_counter() - started}
    with open(os.path.join(cfg.out_dir, "metrics.json"), "w") as fh:
        json.dump(metrics, fh, indent=2, default=str)
    write_report(cfg, metrics)
    return metrics


def write_report(cfg, metrics: dict) -> None:
    lines = ["# Point2Mask on synthetic panoptic shapes", ""]
    if cfg.smoke:
        lines += ["**Smoke run** (tiny images, one epoch): checks the pipeline only, the numbers mean nothing.", ""]
    ot, vor, geo = (metrics["pseudo"].get(a, {}) for a in ("ot", "voronoi", "geodesic"))
    lines += [f"Pseudo-masks on {cfg.pseudo_images} images of {cfg.pseudo_size}x{cfg.pseudo_size} pixels, one point per "
              "segment; noisy-oracle maps (class probabilities from the blurred ground truth plus smooth noise "
              f"{cfg.map_noise}, Sobel boundary); cost weights semantic {cfg.cost_semantic}, boundary "
              f"{cfg.cost_boundary}; OT ε = {cfg.eps} (relative), tol {cfg.solver.tol}. PQ in points; 95% percentile "
              f"bootstrap over images ({cfg.n_boot} resamples); differences are paired (same resamples).", ""]
    lines += fmt_table(metrics["pseudo"]) + [""]
    if ot and vor and geo:
        lines += [f"Targets: OT − Voronoi = {ot['minus_voronoi']:+.1f} PQ_th (target ≥ +4: "
                  f"{'met' if ot['minus_voronoi'] >= 4 else 'NOT met'}); OT − geodesic = {ot['minus_geodesic']:+.1f} "
                  f"(target ≥ 0: {'met' if ot['minus_geodesic'] >= 0 else 'NOT met'}).", ""]
    if metrics["pseudo_network_maps"]:
        net = metrics["pseudo_network_maps"]
        lines += [f"## Pseudo-masks from the networks' own maps (training images, networks trained with "
                  f"`{metrics['network_maps_of']}` pseudo-masks)", "",
                  f"The same {cfg.pseudo_images} training images scored on the maps of each training seed's network "
                  f"trained with `{metrics['network_maps_of']}` pseudo-masks (seeds {cfg.train_seeds}); intervals over "
                  f"the (seed, image) pairs. `ot_partial` transports mass {cfg.ot_mass}.", ""]
        lines += fmt_table(net) + [""]
        for arm in ("ot", "ot_partial"):
            if arm in net and "minus_geodesic" in net[arm]:
                d, (lo, hi) = net[arm]["minus_geodesic"], net[arm]["minus_geodesic_ci"]
                lines += [f"Target: `{arm}` − geodesic nearest point ≥ +1.5 PQ_th with the 95% paired interval above "
                          f"0: {d:+.1f} [{lo:+.1f}, {hi:+.1f}] → {'met' if d >= 1.5 and lo > 0 else 'NOT met'}.", ""]
        if "ablation" in metrics:
            d, (lo, hi) = metrics["ablation"]["minus"], metrics["ablation"]["ci"]
            lines += [f"Ablation: `ot_partial` − `centroid_drop` (the same fraction left VOID without transport) = "
                      f"{d:+.1f} [{lo:+.1f}, {hi:+.1f}] PQ_th.", ""]
    lines += ["## Trained on pseudo-masks, evaluated on held-out images (no points at test time)", "",
              f"{cfg.train_size} training / {cfg.val_size} held-out images of {cfg.image_size}x{cfg.image_size}, "
              f"{cfg.backbone} from scratch, {cfg.max_epochs} epochs, training seeds {cfg.train_seeds} (mean ± std over "
              "seeds; the interval is a bootstrap over the (seed, image) pairs).", "",
              "| pseudo-masks | PQ | PQ_th | PQ_th 95% CI | PQ_th per seed | PQ_st | mIoU | fit s |",
              "|---|---|---|---|---|---|---|---|"]
    for arm, r in metrics["trained"].items():
        per_seed = " / ".join(f"{x['pq_th']:.1f}" for x in r["seeds"])
        lines.append(f"| {arm} | {r['pq']:.1f} ± {r['pq_std']:.1f} | {r['pq_th']:.1f} ± {r['pq_th_std']:.1f} | "
                     f"[{r['pq_th_ci_low']:.1f}, {r['pq_th_ci_high']:.1f}] | {per_seed} | {r['pq_st']:.1f} | "
                     f"{r['miou']:.1f} | {r['fit_seconds']:.0f} |")
    for arm, r in metrics["trained"].items():
        if "minus_voronoi" in r:
            lines += ["", f"`{arm}` − Voronoi on held-out PQ_th: {r['minus_voronoi']:+.1f} "
                      f"[{r['minus_voronoi_ci'][0]:+.1f}, {r['minus_voronoi_ci'][1]:+.1f}] (paired bootstrap over the "
                      "(seed, image) pairs)."]
    lines += ["", "![overlay](overlay.png)", "", f"Total {metrics['seconds']:.0f} s."]
    with open(os.path.join(cfg.out_dir, "report.md"), "w") as fh:
        fh.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
