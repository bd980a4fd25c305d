"""Point-to-mask pseudo-labels: nearest point, centroid reseeding and optimal transport.

Given per-pixel class probabilities (and optionally boundary probabilities and embeddings) of an
image and its annotated points (one per object, things and stuff), every thing pixel is given to
one thing point:

* ``voronoi``  — the Euclidean nearest thing point (inside the predicted thing foreground);
* ``geodesic`` — Point2Mask's initial masks: ``argmax_k (1 − d_k / max d) · p(class_k)`` with
  ``d_k`` the geodesic distance from point k (:mod:`otlearn.point2mask.cost`) and ``p`` the
  category-wise map (PSPS-style geodesic nearest point, weighted by the point's class);
* ``centroid`` — the same rule after reseeding each mask at its centroid (when both the centroid
  pixel and the original point lie inside the mask) and recomputing the distances;
* ``ot``       — optimal transport: the thing points supply ``μ_k`` units (the pixel count of
  their reseeded mask, or given capacities), the thing pixels consume one unit each, the cost is
  the geodesic distance from the *original* points divided by its maximum; entropic OT with the
  core solver (log domain, float64, ε relative to that unit cost scale); the hard mask is the
  argmax of each pixel's plan row, i.e. ``argmin_k (d_k(p) − g_k)``; with ``mass < 1`` the
  transport is *partial*: the points ship ``mass · N`` units (each ``mass · μ_k``) and a dustbin
  of constant cost takes the other ``(1 − mass) · N``, so the pixels that are most expensive for
  every point under the transport's prices are left VOID;
* ``watershed`` — marker watershed (scikit-image) of the boundary map from the thing points,
  inside the foreground (a classical baseline).

Stuff pixels (semantic argmax is a stuff class) have mass 0 and get the stuff class of the argmax,
ignored (VOID / 255) where the top probability is below ``stuff_threshold``.

An image without any point gets an all-VOID label (nothing is annotated, the losses ignore it).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Literal, Sequence

import torch
import torch.nn.functional as F

from otlearn.ot import SinkhornConvergenceWarning, SinkhornSolver, sinkhorn
from otlearn.point2mask.cost import CostWeights, GeodesicGraph

Method = Literal["voronoi", "geodesic", "centroid", "ot", "watershed"]
METHODS = ("voronoi", "geodesic", "centroid", "ot", "watershed")
IGNORE = 255


@dataclass
class PseudoLabel:
    """Panoptic pseudo-label of one image.

    Attributes:
        segment_ids: (H, W) int64 segment id per pixel, 0 = VOID.
        segments: one dict per segment: ``id``, ``category_id``, ``isthing``, ``area`` and, for
            things, ``point`` (index into the image's point list).
        semantic: (H, W) int64 class per pixel, 255 = ignore.
        instance: (H, W) int64 index of the thing point owning each pixel, -1 elsewhere.
        capacities: (K,) float64 supplies of the thing points used by OT (``None`` otherwise).
        n_iters: Sinkhorn iterations (0 when OT did not run).
    """

    segment_ids: torch.Tensor
    segments: list
    semantic: torch.Tensor
    instance: torch.Tensor
    capacities: torch.Tensor | None = None
    n_iters: int = 0


class GeodesicStages:
    """The geodesic stages of one image, each computed from the previous (K thing seeds, N thing pixels).

    Attributes:
        class_prob: (K, N) ``p(class of seed k)`` at each thing pixel.
        dist: (K, N) geodesic distances from the annotated points.
        initial: (N,) initial masks ``argmax_k (1 − d_k / max d) · p(class_k)`` (geodesic nearest point).
        reseeded: (N,) the initial masks again, from the centroid-reseeded seeds (computed when first read).
        reseeded_dist: (K, N) geodesic distances from those seeds (``dist`` when no seed moved).
    """

    def __init__(self, cmap, foreground, seeds, labels, boundary, embeddings, weights: CostWeights) -> None:
        """From the category-wise map (C, H, W), the thing foreground (H, W), the seeds (K, 2) and their labels
        (K,): one graph; one Dijkstra pass from the points, and one from the moved seeds when they are read."""
        self._graph = GeodesicGraph.build(cmap, boundary, embeddings, weights)
        self._foreground, self._seeds = foreground, seeds
        self.class_prob = cmap[labels][:, foreground]
        self.dist = self._graph.distances(seeds)[:, foreground]
        self.initial = initial_assignment(self.dist, self.class_prob)
        self._reseeded: tuple[torch.Tensor, torch.Tensor] | None = None

    def _reseed(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._reseeded is None:
            new_seeds = reseed(self.initial, self._foreground, self._seeds)
            if not bool((new_seeds != self._seeds).any()):
                self._reseeded = (self.initial, self.dist)
            else:
                new_dist = self._graph.distances(new_seeds)[:, self._foreground]
                self._reseeded = (initial_assignment(new_dist, self.class_prob), new_dist)
        return self._reseeded

    @property
    def reseeded(self) -> torch.Tensor:
        return self._reseed()[0]

    @property
    def reseeded_dist(self) -> torch.Tensor:
        return self._reseed()[1]


def default_solver() -> SinkhornSolver:
    """Point2Mask's solver settings (see :class:`PseudoMaskGenerator`)."""
    return SinkhornSolver(tol=1e-2, max_iter=3000, eps_scaling=0.3, mode="kernel")


@dataclass
class PseudoMaskGenerator:
    """Configured once, called on a batch: ``generator(probs, points, point_labels, boundary, embeddings)``.

    Args:
        num_classes: C, the number of categories (things and stuff share one id space).
        thing_classes: the category ids that are things.
        method: "voronoi", "geodesic", "centroid", "ot" or "watershed" (see the module docstring).
        weights: edge-weight terms and graph stride (:class:`CostWeights`).
        eps: ε of the transport, relative to the cost scale: the costs are divided by their maximum,
            so ``P ∝ exp(−(d/max d)/ε)`` (Point2Mask's ε).
        solver: the configured :class:`~otlearn.ot.SinkhornSolver` (default :func:`default_solver`: tol 1e-2
            on every point's received mass relative to its capacity, max_iter 3000, ε-scaling by 0.3, kernel
            mode; looser than the solver's own 1e-3 because only each pixel's argmax is used, and ε-scaled
            because ε = 1e-3 of the cost range needs about range/ε = 1000 plain iterations).
        ot_cost: "distance" (Point2Mask: the normalised geodesic distance ``d_k / max d``) or
            "class_weighted" (``1 − (1 − d_k / max d) · p(class_k)``, the initial-mask score as a cost:
            a pixel is expensive for a point of a class it does not look like; an otlearn option).
        ot_seeds: where the transport cost is measured from: "reseeded" (default: the centroid-reseeded
            seeds) or "original" (Point2Mask: the annotated points).
        capacity: where OT supplies come from: "nearest" (default: the pixel counts of the geodesic
            nearest-seed cells of the cost's seeds) or "centroid" (Point2Mask: the pixel counts of the
            reseeded initial masks). ``ot_seeds="original", capacity="centroid"`` is Point2Mask;
            ``ot_seeds="original", capacity="nearest"`` its warm-up, which reproduces the geodesic
            partition. On the recipe's network maps (3 trained networks) the default is +1.4 PQ_th over
            geodesic nearest point [+0.7, +2.1], Point2Mask's setting +0.8 [+0.2, +1.4]; with ``mass=0.8`` +4.6
            [+3.5, +5.7] (benchmarks/RESULTS.md).
        mass: the fraction of the thing foreground that the points receive (method "ot" only).
            1 (default, Point2Mask): every foreground pixel goes to a point. ``m < 1``: partial
            transport — the points supply ``m · μ_k / Σ μ · N`` (the capacities scaled to ``m · N``), an
            extra dustbin row of constant cost 1 (the unit cost scale) supplies ``(1 − m) · N``, and the
            pixels whose argmax is the dustbin are left VOID (ignored by the losses). As the dustbin
            costs the same for every pixel, its value does not matter: this is the partial OT problem
            of moving ``m · N`` units at least cost. For maps whose thing foreground overshoots the
            objects (a network's halos): on the recipe's network maps about 28% of the predicted
            foreground is not a thing; on near-exact maps a fraction < 1 only erodes correct masks.
        stuff_threshold: stuff pixels whose top probability is below this are ignored.
        point_square: side (pixels) of the square around each point written into the category-wise
            map with probability 1 (Point2Mask uses 17 at full resolution; 1 = the point only).
        class_presence: zero the probabilities of classes without a point in the image.
    """

    num_classes: int
    thing_classes: Sequence[int]
    method: Method = "ot"
    weights: CostWeights = field(default_factory=CostWeights)
    eps: float = 1e-3
    solver: SinkhornSolver = field(default_factory=lambda: default_solver())
    capacity: Literal["centroid", "nearest"] = "nearest"
    ot_cost: Literal["distance", "class_weighted"] = "distance"
    ot_seeds: Literal["original", "reseeded"] = "reseeded"
    mass: float = 1.0
    stuff_threshold: float = 0.5
    point_square: int = 1
    class_presence: bool = True

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.ot_cost not in ("distance", "class_weighted"):
            raise ValueError(f"ot_cost must be 'distance' or 'class_weighted', got {self.ot_cost!r}")
        if self.ot_seeds not in ("original", "reseeded"):
            raise ValueError(f"ot_seeds must be 'original' or 'reseeded', got {self.ot_seeds!r}")
        if self.capacity not in ("centroid", "nearest"):
            raise ValueError(f"capacity must be 'centroid' or 'nearest', got {self.capacity!r}")
        bad = [c for c in self.thing_classes if not 0 <= int(c) < self.num_classes]
        if bad:
            raise ValueError(f"thing_classes {bad} are outside [0, num_classes={self.num_classes})")
        if not self.eps > 0:
            raise ValueError(f"eps must be > 0, got {self.eps!r}")
        if not 0.0 < self.mass <= 1.0:
            raise ValueError(f"mass must lie in (0, 1] (the fraction of the foreground the points receive), got {self.mass!r}")
        if self.mass < 1.0 and self.method != "ot":
            raise ValueError(f"mass < 1 (partial transport) needs method='ot', got method={self.method!r}")
        if self.point_square < 1:
            raise ValueError(f"point_square must be >= 1, got {self.point_square!r}")

    @torch.no_grad()
    def __call__(
        self,
        probs: torch.Tensor,
        points: Sequence[torch.Tensor],
        point_labels: Sequence[torch.Tensor],
        boundary: torch.Tensor | None = None,
        embeddings: torch.Tensor | None = None,
        capacities: Sequence[torch.Tensor | None] | None = None,
    ) -> list[PseudoLabel]:
        """Pseudo-labels for a batch of B images.

        Args:
            probs: (B, C, H, W) class probabilities (softmax outputs).
            points: B tensors (P_b, 2) of ``(y, x)`` pixel coordinates, things and stuff.
            point_labels: B tensors (P_b,) of category ids.
            boundary: (B, H, W) boundary probabilities in [0, 1], or ``None``.
            embeddings: (B, D, H, W) pixel embeddings, or ``None``.
            capacities: per image, ``None`` or (P_b,) supplies overriding the estimated ones
                (entries of stuff points are ignored); used by the true-capacity oracle.
        """
        _check_batch(probs, points, point_labels, boundary, embeddings, self.num_classes)
        out = []
        for i in range(probs.shape[0]):
            out.append(self.one(
                probs[i], points[i], point_labels[i],
                None if boundary is None else boundary[i],
                None if embeddings is None else embeddings[i],
                None if capacities is None else capacities[i],
            ))
        return out

    def one(self, probs, points, point_labels, boundary=None, embeddings=None, capacities=None) -> PseudoLabel:
        """The pseudo-label of one image: ``probs`` (C, H, W), ``points`` (P, 2), ``point_labels`` (P,)."""
        C, H, W = probs.shape
        probs = probs.detach().double().cpu()
        points = points.detach().long().cpu().reshape(-1, 2)
        point_labels = point_labels.detach().long().cpu().reshape(-1)
        boundary = None if boundary is None else boundary.detach().double().cpu()
        embeddings = None if embeddings is None else embeddings.detach().double().cpu()
        if len(points) == 0:
            return PseudoLabel(torch.zeros(H, W, dtype=torch.long), [], torch.full((H, W), IGNORE, dtype=torch.long),
                               torch.full((H, W), -1, dtype=torch.long))
        cmap, foreground, semantic, k_idx = self.layout(probs, points, point_labels)
        instance = torch.full((H, W), -1, dtype=torch.long)
        caps_used, n_iters = None, 0
        if len(k_idx) > 0 and bool(foreground.any()):
            caps = None if capacities is None else torch.as_tensor(capacities, dtype=torch.float64).reshape(-1)[k_idx]
            owner, caps_used, n_iters = self._owners(cmap, foreground, points[k_idx], point_labels[k_idx],
                                                     boundary, embeddings, caps)
            instance[foreground] = torch.where(owner >= 0, k_idx[owner.clamp_min(0)], torch.full_like(owner, -1))
        segment_ids, segments = assemble(instance, semantic, point_labels)
        return PseudoLabel(segment_ids, segments, semantic, instance, caps_used, n_iters)

    def _owners(self, cmap, foreground, seeds, labels, boundary, embeddings, capacities):
        """(N,) index into ``seeds`` (-1 = none) for the N foreground pixels by ``self.method``, the OT
        capacities used (or ``None``) and the Sinkhorn iterations."""
        H, W = foreground.shape
        if self.method == "voronoi":
            return euclidean_distances(seeds, (H, W))[:, foreground].argmin(0), None, 0
        if self.method == "watershed":
            elevation = boundary if boundary is not None else 1.0 - cmap.max(0).values
            return watershed_assignment(elevation, seeds, foreground), None, 0
        stages = GeodesicStages(cmap, foreground, seeds, labels, boundary, embeddings, self.weights)
        if self.method == "geodesic":
            return stages.initial, None, 0
        if self.method == "centroid":
            return stages.reseeded, None, 0
        cost, capacities = self._ot_inputs(stages, capacities)
        owner, n_iters = self.transport(cost, capacities)
        return owner, capacities, n_iters

    def _ot_inputs(self, stages: GeodesicStages, capacities: torch.Tensor | None = None):
        """(K, N) transport cost (from the seeds ``ot_seeds`` names) and (K,) supplies: the given ones, or
        the cell sizes ``capacity`` names (nearest-seed cells of the cost's seeds, or the reseeded masks)."""
        dist = stages.reseeded_dist if self.ot_seeds == "reseeded" else stages.dist
        if capacities is None:
            source = dist.argmin(0) if self.capacity == "nearest" else stages.reseeded
            capacities = torch.bincount(source, minlength=dist.shape[0]).double()
        cost = dist if self.ot_cost == "distance" else class_weighted_cost(dist, stages.class_prob)
        return cost, capacities

    def ot_problem(self, probs, points, point_labels, boundary=None, embeddings=None):
        """The transport :meth:`one` solves for one image (method "ot"): ``(cost (K, N), capacities (K,))``
        over its K thing points and N foreground pixels (for benchmarks and inspection)."""
        probs, points, point_labels = probs.double().cpu(), points.long().cpu(), point_labels.long().cpu()
        boundary = None if boundary is None else boundary.double().cpu()
        embeddings = None if embeddings is None else embeddings.double().cpu()
        cmap, foreground, _, k_idx = self.layout(probs, points, point_labels)
        stages = GeodesicStages(cmap, foreground, points[k_idx], point_labels[k_idx], boundary, embeddings, self.weights)
        return self._ot_inputs(stages)

    def layout(self, probs: torch.Tensor, points: torch.Tensor, point_labels: torch.Tensor):
        """What every method shares: the category-wise map (C, H, W), the thing foreground (H, W) bool,
        the stuff semantic labels (H, W) (255 on thing pixels and on unsure stuff) and the indices of
        the thing points (K,)."""
        C = probs.shape[0]
        cmap = category_map(probs, points, point_labels, self.point_square, self.class_presence)
        top, arg = cmap.max(0)
        is_thing_class = torch.zeros(C, dtype=torch.bool)
        is_thing_class[list(self.thing_classes)] = True
        thing_point = is_thing_class[point_labels]
        foreground = is_thing_class[arg]
        foreground[points[thing_point, 0], points[thing_point, 1]] = True  # an annotated thing pixel is a thing
        semantic = torch.where(top >= self.stuff_threshold, arg, torch.full_like(arg, IGNORE))
        semantic[foreground] = IGNORE  # thing pixels take the class of the point that owns them
        return cmap, foreground, semantic, torch.nonzero(thing_point).reshape(-1)

    def transport(self, dist: torch.Tensor, capacities: torch.Tensor) -> tuple[torch.Tensor, int]:
        """Hard OT assignment of N pixels to K points (partial when ``mass < 1``).

        Args:
            dist: (K, N) geodesic costs from the points to the thing pixels.
            capacities: (K,) supplies ``μ_k >= 0`` (normalised to the ``mass · N`` units the points ship).

        Returns:
            (N,) int64 point index per pixel (argmax of each plan row; -1 = the dustbin of a partial
            transport) and the iteration count.
        """
        K, N = dist.shape
        partial = self.mass < 1.0
        if K == 1 and not partial:
            return torch.zeros(N, dtype=torch.long), 0
        capacities = capacities.double().clamp_min(0.0)
        if not capacities.sum() > 0:
            capacities = torch.ones(K, dtype=torch.float64)
        scale = float(dist.max())
        cost = dist.T / (scale if scale > 0 else 1.0)  # (N, K), in [0, 1]
        if partial:  # a dustbin column of constant cost 1 takes (1 - mass) of the pixels
            capacities = torch.cat([capacities * (self.mass / float(capacities.sum())),
                                    torch.tensor([1.0 - self.mass], dtype=torch.float64)])
            cost = torch.cat([cost, torch.ones(N, 1, dtype=cost.dtype)], dim=1)
        with warnings.catch_warnings():  # the argmax is what is used; tol and max_iter only bound the work
            warnings.simplefilter("ignore", SinkhornConvergenceWarning)
            result = sinkhorn(-cost, self.eps, b=capacities, dtype=torch.float64, solver=self.solver)
        owner = result.assignments()
        if partial:
            owner = torch.where(owner == K, torch.full_like(owner, -1), owner)
        return owner, result.n_iters


def assemble(instance: torch.Tensor, semantic: torch.Tensor, point_labels: torch.Tensor) -> tuple[torch.Tensor, list]:
    """Panoptic form of one image: thing point k owning pixels → segment ``k + 1`` of its class;
    each stuff class in ``semantic`` (outside things, 255 = VOID) → segment ``P + 1 + class``.

    ``instance`` (H, W) holds point indices (-1 = none); ``semantic`` is updated in place with
    the class of each thing pixel. Returns ``segment_ids`` (H, W) and the segment list.
    """
    n_points = len(point_labels)
    segment_ids = torch.zeros(instance.shape, dtype=torch.long)
    segments = []
    for k in torch.unique(instance[instance >= 0]).tolist():
        region = instance == k
        segment_ids[region] = k + 1
        semantic[region] = int(point_labels[k])
        segments.append({"id": k + 1, "category_id": int(point_labels[k]), "isthing": True,
                         "area": int(region.sum()), "point": k})
    stuff = (semantic != IGNORE) & (instance < 0)
    for c in torch.unique(semantic[stuff]).tolist():
        region = stuff & (semantic == c)
        seg_id = n_points + 1 + c
        segment_ids[region] = seg_id
        segments.append({"id": seg_id, "category_id": int(c), "isthing": False, "area": int(region.sum())})
    return segment_ids, segments


def watershed_assignment(elevation: torch.Tensor, seeds: torch.Tensor, foreground: torch.Tensor) -> torch.Tensor:
    """(N,) marker watershed (scikit-image) of the ``elevation`` map (H, W) from the seeds (K, 2),
    flooding only the foreground; returns the seed index of each foreground pixel (-1 where the
    pixel's connected component holds no seed)."""
    from skimage.segmentation import watershed

    markers = torch.zeros(foreground.shape, dtype=torch.int64)
    markers[seeds[:, 0], seeds[:, 1]] = torch.arange(1, len(seeds) + 1)
    flooded = watershed(elevation.double().numpy(), markers=markers.numpy(), mask=foreground.numpy())
    return torch.from_numpy(flooded).long()[foreground] - 1  # -1: a component without any marker (left VOID)


def category_map(probs: torch.Tensor, points: torch.Tensor, point_labels: torch.Tensor, square: int = 1,
                 class_presence: bool = True) -> torch.Tensor:
    """(C, H, W) Point2Mask's category-wise map.

    ``max(probs_c · [class c has a point], square_c)`` where ``square_c`` is 1 on the ``square x square``
    window around each point of class c and 0 elsewhere.
    """
    C, H, W = probs.shape
    cmap = probs.clone()
    if class_presence:
        present = torch.zeros(C, dtype=probs.dtype)
        present[point_labels] = 1.0
        cmap = cmap * present[:, None, None]
    marks = torch.zeros_like(cmap)
    marks[point_labels, points[:, 0], points[:, 1]] = 1.0
    if square > 1:
        marks = F.max_pool2d(marks[None], square, stride=1, padding=square // 2)[0][:, :H, :W]
    return torch.maximum(cmap, marks)


def euclidean_distances(seeds: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """(K, H, W) Euclidean distance from each seed ``(y, x)`` to every pixel."""
    yy, xx = torch.meshgrid(torch.arange(shape[0], dtype=torch.float64), torch.arange(shape[1], dtype=torch.float64),
                            indexing="ij")
    s = seeds.double()
    return torch.sqrt((yy[None] - s[:, 0, None, None]) ** 2 + (xx[None] - s[:, 1, None, None]) ** 2)


def initial_assignment(dist: torch.Tensor, class_prob: torch.Tensor) -> torch.Tensor:
    """(N,) ``argmax_k (1 − d_k / max d) · p_k`` for ``dist`` and ``class_prob`` (K, N)."""
    d_max = float(dist.max())
    closeness = 1.0 - dist / (d_max if d_max > 0 else 1.0)
    return (closeness * class_prob).argmax(0)


def class_weighted_cost(dist: torch.Tensor, class_prob: torch.Tensor) -> torch.Tensor:
    """(K, N) ``1 − (1 − d_k / max d) · p_k``: the initial-assignment score turned into a cost in [0, 1]."""
    d_max = float(dist.max())
    return 1.0 - (1.0 - dist / (d_max if d_max > 0 else 1.0)) * class_prob


def reseed(owner: torch.Tensor, foreground: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
    """(K, 2) new seeds: each mask's centroid pixel when it and the original point lie in the mask.

    Args:
        owner: (N,) point index of each foreground pixel (row-major order of ``foreground``).
        foreground: (H, W) bool.
        seeds: (K, 2) original ``(y, x)``.
    """
    H, W = foreground.shape
    K = len(seeds)
    label = torch.full((H, W), -1, dtype=torch.long)
    label[foreground] = owner
    ys, xs = torch.nonzero(foreground, as_tuple=True)
    count = torch.bincount(owner, minlength=K).double()
    cy = torch.zeros(K, dtype=torch.float64).index_add_(0, owner, ys.double())
    cx = torch.zeros(K, dtype=torch.float64).index_add_(0, owner, xs.double())
    new = seeds.clone()
    for k in range(K):
        if count[k] == 0:
            continue
        y, x = int(torch.round(cy[k] / count[k])), int(torch.round(cx[k] / count[k]))
        if label[y, x] == k and label[seeds[k, 0], seeds[k, 1]] == k:
            new[k, 0], new[k, 1] = y, x
    return new


def _check_batch(probs, points, point_labels, boundary, embeddings, num_classes) -> None:
    """Raise ``ValueError`` naming the image and the problem."""
    if not isinstance(probs, torch.Tensor) or probs.dim() != 4:
        raise ValueError(f"probs must be a (B, C, H, W) tensor, got {getattr(probs, 'shape', type(probs))}")
    B, C, H, W = probs.shape
    if C != num_classes:
        raise ValueError(f"probs has {C} channels but the generator has num_classes={num_classes}")
    if not bool(torch.isfinite(probs).all()) or bool((probs < 0).any()):
        raise ValueError("probs must be finite and non-negative (softmax outputs)")
    if len(points) != B or len(point_labels) != B:
        raise ValueError(f"need one points tensor and one labels tensor per image: B={B}, got {len(points)} "
                         f"and {len(point_labels)}")
    for i, (pts, lab) in enumerate(zip(points, point_labels)):
        pts = torch.as_tensor(pts)
        lab = torch.as_tensor(lab)
        if pts.numel() and (pts.dim() != 2 or pts.shape[1] != 2):
            raise ValueError(f"image {i}: points must be (P, 2) (y, x), got shape {tuple(pts.shape)}")
        if pts.reshape(-1, 2).shape[0] != lab.reshape(-1).shape[0]:
            raise ValueError(f"image {i}: {pts.reshape(-1, 2).shape[0]} points but {lab.numel()} labels")
        if pts.numel():
            ys, xs = pts.reshape(-1, 2)[:, 0], pts.reshape(-1, 2)[:, 1]
            outside = (ys < 0) | (ys >= H) | (xs < 0) | (xs >= W)
            if bool(outside.any()):
                j = int(torch.nonzero(outside)[0])
                raise ValueError(f"image {i}: point {j} at (y, x) = ({int(ys[j])}, {int(xs[j])}) is outside the "
                                 f"{H} x {W} image")
        if lab.numel() and (bool((lab < 0).any()) or bool((lab >= num_classes).any())):
            raise ValueError(f"image {i}: point labels {lab.reshape(-1).tolist()} must lie in [0, {num_classes})")
    if boundary is not None and tuple(boundary.shape) != (B, H, W):
        raise ValueError(f"boundary must be (B, H, W) = {(B, H, W)}, got {tuple(boundary.shape)}")
    if boundary is not None and not bool(torch.isfinite(boundary).all()):
        raise ValueError("boundary contains NaN or Inf")
    if embeddings is not None and (embeddings.dim() != 4 or embeddings.shape[0] != B or tuple(embeddings.shape[2:]) != (H, W)):
        raise ValueError(f"embeddings must be (B, D, H, W) with B={B}, H={H}, W={W}, got {tuple(embeddings.shape)}")
    if embeddings is not None and not bool(torch.isfinite(embeddings).all()):
        raise ValueError("embeddings contain NaN or Inf")
