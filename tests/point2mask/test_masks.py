"""Pseudo-mask generation: the OT/nearest-point identity, batching, reseeding, baselines, bad input."""
import pytest
import torch

from otlearn.ot import SinkhornSolver

from otlearn.point2mask import CostWeights, PseudoMaskGenerator, category_map, point_distances
from otlearn.point2mask.masks import IGNORE, euclidean_distances, reseed


def _random_image(seed: int, size: int = 32, classes: int = 4, k_max: int = 7):
    """Random smooth class maps in which every pixel is a thing (classes 0..2 things, 3 stuff)."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.nn.functional.avg_pool2d(torch.randn(1, classes, size, size, generator=g, dtype=torch.float64),
                                            5, 1, 2)[0] * 4
    logits[3] -= 100.0  # no stuff: every pixel is a thing pixel
    probs = torch.softmax(logits, 0)
    k = int(torch.randint(2, k_max + 1, (1,), generator=g))
    points = torch.stack([torch.randint(0, size, (k,), generator=g), torch.randint(0, size, (k,), generator=g)], 1)
    labels = torch.randint(0, 3, (k,), generator=g)
    boundary = torch.rand(size, size, generator=g, dtype=torch.float64)
    return probs, points, labels, boundary


@pytest.mark.parametrize("seed", range(6))
def test_ot_with_nearest_cell_capacities_reproduces_the_nearest_point_partition(seed):
    """Unregularised OT with the nearest-cell sizes as capacities is solved by the nearest-point
    partition; at small ε the entropic plan's argmax reproduces it on every pixel except entropic
    near-ties, pixels whose two smallest normalised costs are closer than 5ε (checked to be under 2%)."""
    probs, points, labels, boundary = _random_image(seed)
    eps = 1e-4
    gen = PseudoMaskGenerator(4, [0, 1, 2], method="ot", capacity="nearest", ot_seeds="original", eps=eps,
                              solver=SinkhornSolver(tol=1e-4, max_iter=100_000, eps_scaling=0.3, mode="kernel"),
                              class_presence=False)
    out = gen(probs[None], [points], [labels], boundary=boundary[None])[0]
    cmap = category_map(probs.double(), points, labels, 1, class_presence=False)
    dist = point_distances(cmap, points, boundary.double(), None, gen.weights)
    nearest = dist.argmin(0)
    two = (dist / dist.max()).topk(2, dim=0, largest=False).values
    clear = (two[1] - two[0]) > 5 * eps
    assert torch.equal(out.instance[clear], nearest[clear])
    assert int((~clear).sum()) <= 0.02 * clear.numel()
    assert torch.equal(out.capacities, torch.bincount(nearest.reshape(-1), minlength=len(points)).double())


def test_default_settings_differ_from_the_nearest_partition_only_at_near_ties():
    changed, total = 0, 0
    for seed in range(6):
        probs, points, labels, boundary = _random_image(seed)
        gen = PseudoMaskGenerator(4, [0, 1, 2], method="ot", capacity="nearest", ot_seeds="original", class_presence=False)
        out = gen(probs[None], [points], [labels], boundary=boundary[None])[0]
        cmap = category_map(probs.double(), points, labels, 1, class_presence=False)
        nearest = point_distances(cmap, points, boundary.double(), None, gen.weights).argmin(0)
        changed += int((out.instance != nearest).sum())
        total += nearest.numel()
    assert changed / total < 0.01


@pytest.mark.parametrize("seed", range(4))
def test_default_cost_is_measured_from_the_reseeded_seeds(seed):
    """Default OT: cost = geodesic distance from the centroid-reseeded seeds, capacities = their nearest-cell
    pixel counts, so the entropic plan's argmax is that partition except at near-ties."""
    from otlearn.point2mask.masks import initial_assignment, reseed

    probs, points, labels, boundary = _random_image(seed)
    gen = PseudoMaskGenerator(4, [0, 1, 2], method="ot", eps=1e-4, class_presence=False,
                              solver=SinkhornSolver(tol=1e-4, max_iter=100_000, eps_scaling=0.3, mode="kernel"))
    cost, caps = gen.ot_problem(probs.double(), points, labels, boundary.double())
    cmap, foreground, _, k_idx = gen.layout(probs.double(), points, labels)
    dist = point_distances(cmap, points[k_idx], boundary.double(), None, gen.weights)[:, foreground]
    class_prob = cmap[labels[k_idx]][:, foreground]
    seeds = reseed(initial_assignment(dist, class_prob), foreground, points[k_idx])
    expected = point_distances(cmap, seeds, boundary.double(), None, gen.weights)[:, foreground]
    assert torch.allclose(cost, expected)
    assert torch.equal(caps, torch.bincount(expected.argmin(0), minlength=len(k_idx)).double())
    out = gen(probs[None], [points], [labels], boundary=boundary[None])[0]
    owner = out.instance[foreground]
    two = (expected / expected.max()).topk(2, dim=0, largest=False).values
    clear = (two[1] - two[0]) > 5e-4
    assert torch.equal(owner[clear], k_idx[expected.argmin(0)][clear])


@pytest.mark.parametrize("seed", [11, 12, 13, 15])
def test_transport_meets_the_capacities(seed):
    """The plan (rebuilt from its potentials) receives each point's capacity to the solver's tolerance; the hard
    mask is each pixel's argmax, so a point's pixel count misses its capacity by at most the pixels the plan
    splits between points (ties of the cost: seed 12 has a point whose whole share is split)."""
    from otlearn.ot import sinkhorn

    probs, points, labels, boundary = _random_image(seed, k_max=5)
    solver = SinkhornSolver(tol=1e-4, max_iter=20_000, eps_scaling=0.3, mode="kernel")
    gen = PseudoMaskGenerator(4, [0, 1, 2], method="ot", class_presence=False, solver=solver)
    dist = point_distances(probs.double(), points, boundary.double()).reshape(len(points), -1)
    caps = torch.linspace(1.0, 3.0, len(points), dtype=torch.float64)
    owner, _ = gen.transport(dist, caps)
    cost = dist.T / dist.max()
    result = sinkhorn(-cost, gen.eps, b=caps, dtype=torch.float64, solver=solver)
    plan = torch.exp((-cost + result.f[:, None] + result.g[None, :]) / gen.eps)  # (N, K) from f and g
    target = caps / caps.sum()
    assert ((plan.sum(0) / target) - 1).abs().max() <= 1e-4 * (1 + 1e-6)
    assert torch.equal(owner, plan.argmax(1))
    counts = torch.bincount(owner, minlength=len(points)).double()
    split = int((plan.max(1).values < 0.99 / dist.shape[1]).sum())  # pixels whose unit mass the plan divides
    assert ((counts - target * dist.shape[1]).abs() <= split + 1).all(), (counts, target * dist.shape[1], split)


@pytest.mark.parametrize("method", ["voronoi", "geodesic", "centroid", "ot", "watershed"])
def test_each_image_of_a_batch_depends_on_its_own_inputs_only(method):
    """A batch's pseudo-labels follow its images when the batch is reordered, and changing one image's maps,
    embeddings and points changes that image's pseudo-label and no other's."""
    images = [_random_image(s, size=24) for s in (3, 4, 5)]
    probs = torch.stack([im[0] for im in images]).float()
    boundary = torch.stack([im[3] for im in images]).float()
    emb = torch.randn(3, 6, 24, 24, generator=torch.Generator().manual_seed(0))
    points, labels = [im[1] for im in images], [im[2] for im in images]
    gen = PseudoMaskGenerator(4, [0, 1, 2], method=method)
    batched = gen(probs, points, labels, boundary=boundary, embeddings=emb)
    order = [2, 0, 1]
    reordered = gen(probs[order], [points[i] for i in order], [labels[i] for i in order], boundary=boundary[order],
                    embeddings=emb[order])
    for j, i in enumerate(order):
        assert torch.equal(reordered[j].segment_ids, batched[i].segment_ids)
        assert reordered[j].segments == batched[i].segments
    other_probs, other_points, other_labels, other_boundary = _random_image(9, size=24)
    changed = gen(torch.stack([probs[0], other_probs.float(), probs[2]]), [points[0], other_points, points[2]],
                  [labels[0], other_labels, labels[2]], boundary=torch.stack([boundary[0], other_boundary.float(), boundary[2]]),
                  embeddings=torch.stack([emb[0], emb[0].flip(1), emb[2]]))
    for i in (0, 2):
        assert torch.equal(changed[i].segment_ids, batched[i].segment_ids) and changed[i].segments == batched[i].segments
    assert not torch.equal(changed[1].segment_ids, batched[1].segment_ids)


def test_voronoi_is_the_euclidean_nearest_point_inside_the_foreground():
    probs, points, labels, _ = _random_image(7)
    out = PseudoMaskGenerator(4, [0, 1, 2], method="voronoi")(probs[None], [points], [labels])[0]
    ys, xs = torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij")
    d = ((ys[None] - points[:, 0, None, None]) ** 2 + (xs[None] - points[:, 1, None, None]) ** 2).double()
    assert torch.equal(out.instance, d.argmin(0))
    assert torch.allclose(euclidean_distances(points, (32, 32)) ** 2, d)


def test_reseed_moves_to_the_centroid_only_when_it_and_the_point_are_inside():
    fg = torch.zeros(20, 20, dtype=torch.bool)
    fg[2:9, 2:9] = True  # a square: its centroid (5, 5) is inside
    fg[12:19, 12:19] = True
    fg[14:17, 14:17] = False  # a ring: its centroid (15, 15) is outside
    owner_map = torch.full((20, 20), -1)
    owner_map[2:9, 2:9] = 0
    owner_map[fg & (torch.arange(20)[:, None] >= 12)] = 1
    seeds = torch.tensor([[2, 2], [12, 12]])
    new = reseed(owner_map[fg], fg, seeds)
    assert new[0].tolist() == [5, 5]
    assert new[1].tolist() == [12, 12]


def test_stuff_labels_follow_the_argmax_and_are_ignored_when_unsure():
    probs = torch.zeros(3, 10, 10)
    probs[1] = 0.9  # confident stuff class 1 on the left
    probs[2] = 0.1
    probs[1, :, 5:] = 0.45  # unsure on the right
    probs[2, :, 5:] = 0.55 - 0.1
    probs[0, :, 5:] = 0.1
    out = PseudoMaskGenerator(3, [0], method="ot")(probs[None], [torch.tensor([[0, 0]])], [torch.tensor([1])])[0]
    assert (out.semantic[:, :5] == 1).all()
    assert (out.semantic[:, 5:] == IGNORE).all()
    assert (out.segment_ids[:, 5:] == 0).all() and out.instance.max() == -1


def test_an_image_without_points_is_all_void():
    out = PseudoMaskGenerator(3, [0])(torch.rand(1, 3, 8, 8).softmax(1), [torch.zeros(0, 2, dtype=torch.long)],
                                       [torch.zeros(0, dtype=torch.long)])[0]
    assert (out.segment_ids == 0).all() and (out.semantic == IGNORE).all() and out.segments == []


@pytest.mark.parametrize("points,labels,match", [
    (torch.tensor([[3, 8]]), torch.tensor([0]), "outside the 8 x 8 image"),
    (torch.tensor([[-1, 2]]), torch.tensor([0]), "outside"),
    (torch.tensor([[1, 1]]), torch.tensor([3]), r"must lie in \[0, 3\)"),
    (torch.tensor([[1, 1], [2, 2]]), torch.tensor([0]), "2 points but 1 labels"),
])
def test_bad_points_raise_clear_errors(points, labels, match):
    gen = PseudoMaskGenerator(3, [0])
    with pytest.raises(ValueError, match=match):
        gen(torch.rand(1, 3, 8, 8).softmax(1), [points], [labels])


def test_bad_maps_raise_clear_errors():
    gen = PseudoMaskGenerator(3, [0])
    pts, lab = [torch.tensor([[1, 1]])], [torch.tensor([0])]
    bad = torch.rand(1, 3, 8, 8)
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="finite"):
        gen(bad, pts, lab)
    with pytest.raises(ValueError, match="num_classes=3"):
        gen(torch.rand(1, 4, 8, 8), pts, lab)
    with pytest.raises(ValueError, match="boundary"):
        gen(torch.rand(1, 3, 8, 8), pts, lab, boundary=torch.rand(1, 7, 8))
    with pytest.raises(ValueError, match="one points tensor"):
        gen(torch.rand(2, 3, 8, 8), pts, lab)
    with pytest.raises(ValueError, match="thing_classes"):
        PseudoMaskGenerator(3, [5])
    with pytest.raises(ValueError, match="method"):
        PseudoMaskGenerator(3, [0], method="nearest")


def test_watershed_leaves_a_component_without_marker_void():
    probs = torch.zeros(1, 3, 20, 20)
    probs[0, 1] = 1.0
    probs[0, 0, 2:8, 2:8] = 2.0
    probs[0, 0, 12:18, 12:18] = 2.0
    out = PseudoMaskGenerator(3, [0], method="watershed")(probs.softmax(1), [torch.tensor([[3, 3], [10, 10]])],
                                                          [torch.tensor([0, 1])])[0]
    assert (out.segment_ids[2:8, 2:8] == 1).all()
    assert (out.segment_ids[12:18, 12:18] == 0).all()
    assert [s["isthing"] for s in out.segments] == [True, False]


def test_category_map_keeps_present_classes_and_marks_point_squares():
    probs = torch.full((3, 9, 9), 1 / 3)
    cmap = category_map(probs, torch.tensor([[4, 4]]), torch.tensor([2]), square=3)
    assert (cmap[:2] == 0).all()  # classes without a point are zeroed
    assert (cmap[2, 3:6, 3:6] == 1).all() and cmap[2, 0, 0] == pytest.approx(1 / 3)


@pytest.mark.parametrize("seed", range(4))
def test_partial_transport_is_pots_exact_partial_ot(seed):
    """``mass < 1``: the points ship their capacities scaled to ``mass · N`` and the rest of the pixels are left to
    the dustbin. That is the partial OT problem of moving ``mass · N`` units at least cost, which POT solves
    exactly (``ot.partial.partial_wasserstein``, an LP); with integral capacities its plan is a hard assignment,
    and the entropic plan's argmax at small ε must reproduce it. Costs are i.i.d. uniform so that the LP's plan is
    unique (geodesic costs have plateaus where d_k − d_j is constant over whole regions, and a plan splits those
    pixels: see ``test_transport_meets_the_capacities``)."""
    ot_partial = pytest.importorskip("ot.partial", reason="POT (the reference) is not installed")
    import numpy as np

    g = torch.Generator().manual_seed(100 + seed)
    K, N = int(torch.randint(2, 7, (1,), generator=g)), 800
    dist = torch.rand(K, N, generator=g, dtype=torch.float64) * 5.0
    mass = [0.75, 0.5, 0.9, 0.3][seed]
    share = torch.rand(K, generator=g, dtype=torch.float64) + 0.5
    caps = torch.floor(share / share.sum() * mass * N)
    caps[-1] += mass * N - caps.sum()  # integers summing to mass · N, so each point ships exactly caps_k
    gen = PseudoMaskGenerator(4, [0, 1, 2], method="ot", mass=mass, eps=1e-4, class_presence=False,
                              solver=SinkhornSolver(tol=1e-6, max_iter=200_000, eps_scaling=0.3, mode="kernel"))
    owner, _ = gen.transport(dist, caps)
    cost = (dist.T / dist.max()).numpy()
    plan = ot_partial.partial_wasserstein(np.ones(N), caps.numpy(), cost, m=float(mass * N))
    moved = plan.sum(1)
    assert np.all((moved < 1e-9) | (moved > 1 - 1e-9))  # the LP's plan is integral: each pixel all or nothing
    exact = torch.from_numpy(np.where(moved > 0.5, plan.argmax(1), -1))
    agree = float((owner == exact).double().mean())
    assert agree >= 0.995, agree
    assert abs(int((owner < 0).sum()) - round((1 - mass) * N)) <= 0.005 * N
    value = float(torch.from_numpy(cost)[torch.arange(N)[owner >= 0], owner[owner >= 0]].sum())
    assert value <= float((plan * cost).sum()) * (1 + 1e-3)


def test_partial_transport_of_one_point_keeps_its_cheapest_pixels():
    """With one point (cost measured from it), partial transport keeps the ``mass · N`` pixels nearest to it
    (geodesic cost) and leaves the
    others VOID, whatever the dustbin's constant cost."""
    probs, points, labels, boundary = _random_image(3)
    points, labels = points[:1], torch.tensor([0])
    gen = PseudoMaskGenerator(4, [0, 1, 2], method="ot", mass=0.6, ot_seeds="original", class_presence=False,
                              solver=SinkhornSolver(tol=1e-6, max_iter=100_000, eps_scaling=0.3, mode="kernel"))
    out = gen(probs[None], [points], [labels], boundary=boundary[None])[0]
    cmap, foreground, _, _ = gen.layout(probs.double(), points, labels)
    dist = point_distances(cmap, points, boundary.double(), None, gen.weights)[0][foreground]
    kept = out.instance[foreground] == 0
    n_kept = round(0.6 * int(foreground.sum()))
    assert abs(int(kept.sum()) - n_kept) <= 2
    order = dist.argsort()
    assert bool(kept[order[: n_kept - 2]].all()) and not bool(kept[order[n_kept + 2:]].any())
    assert bool((out.segment_ids[foreground][~kept] == 0).all())  # the dustbin's pixels are VOID


def test_partial_mass_is_checked():
    with pytest.raises(ValueError, match=r"mass must lie in \(0, 1\]"):
        PseudoMaskGenerator(3, [0], mass=0.0)
    with pytest.raises(ValueError, match=r"mass must lie in \(0, 1\]"):
        PseudoMaskGenerator(3, [0], mass=1.5)
    with pytest.raises(ValueError, match="needs method='ot'"):
        PseudoMaskGenerator(3, [0], method="geodesic", mass=0.8)
