"""Edge weights follow the formula; Dijkstra distances equal an independent heap-based search."""
import heapq
import math

import pytest
import torch

from otlearn.point2mask.cost import CostWeights, edge_weights, geodesic_distances, point_distances
from otlearn.point2mask.cost import _grid_edges

NEIGHBOURS = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]


def _edge(probs, boundary, emb, p, q, w: CostWeights) -> float:
    (py, px), (qy, qx) = p, q
    value = w.semantic * float((probs[:, py, px] - probs[:, qy, qx]).abs().sum()) + w.step
    value += w.boundary * max(float(boundary[py, px]), float(boundary[qy, qx]))
    cos = float(torch.nn.functional.cosine_similarity(emb[:, py, px], emb[:, qy, qx], dim=0))
    return value + w.feature * max(0.0, 1.0 - cos)


def _reference_dijkstra(probs, boundary, emb, source, w):
    h, wd = probs.shape[-2:]
    dist = {source: 0.0}
    heap = [(0.0, source)]
    done = set()
    while heap:
        d, p = heapq.heappop(heap)
        if p in done:
            continue
        done.add(p)
        for dy, dx in NEIGHBOURS:
            q = (p[0] + dy, p[1] + dx)
            if 0 <= q[0] < h and 0 <= q[1] < wd:
                nd = d + _edge(probs, boundary, emb, p, q, w)
                if nd < dist.get(q, math.inf):
                    dist[q] = nd
                    heapq.heappush(heap, (nd, q))
    return torch.tensor([[dist[(y, x)] for x in range(wd)] for y in range(h)], dtype=torch.float64)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_geodesic_distances_match_an_independent_search(seed):
    g = torch.Generator().manual_seed(seed)
    h, w = 7, 9
    probs = torch.softmax(torch.randn(4, h, w, generator=g, dtype=torch.float64), 0)
    boundary = torch.rand(h, w, generator=g, dtype=torch.float64)
    emb = torch.randn(5, h, w, generator=g, dtype=torch.float64)
    weights = CostWeights(semantic=1.0, boundary=0.7, feature=0.3, step=0.01)
    sources = torch.tensor([[0, 0], [3, 4], [6, 8]])
    got = point_distances(probs, sources, boundary, emb, weights)
    for k, (y, x) in enumerate(sources.tolist()):
        ref = _reference_dijkstra(probs, boundary, emb, (y, x), weights)
        assert torch.allclose(got[k], ref, atol=1e-10)


def test_every_edge_weight_is_the_formula():
    g = torch.Generator().manual_seed(3)
    probs = torch.softmax(torch.randn(3, 4, 5, generator=g, dtype=torch.float64), 0)
    boundary = torch.rand(4, 5, generator=g, dtype=torch.float64)
    emb = torch.randn(2, 4, 5, generator=g, dtype=torch.float64)
    weights = CostWeights(boundary=0.5, feature=0.2)
    got = edge_weights(probs, boundary, emb, weights)
    src, dst = _grid_edges(4, 5)
    assert len(src) == 4 * 4 + 3 * 5 + 2 * 3 * 4  # right + down + two diagonals, each once
    for e, (a, b) in enumerate(zip(src.tolist(), dst.tolist())):
        p, q = divmod(a, 5), divmod(b, 5)
        assert max(abs(p[0] - q[0]), abs(p[1] - q[1])) == 1
        assert got[e].item() == pytest.approx(_edge(probs, boundary, emb, p, q, weights), abs=1e-12)


def test_stride_builds_a_coarse_graph_and_upsamples():
    probs = torch.full((2, 32, 48), 0.5, dtype=torch.float64)
    dist = point_distances(probs, torch.tensor([[0, 0]]), weights=CostWeights(step=1.0, stride=4))
    assert dist.shape == (1, 32, 48)
    # on a uniform map the coarse distance is the Chebyshev distance in graph nodes
    coarse = geodesic_distances(edge_weights(torch.full((2, 8, 12), 0.5, dtype=torch.float64),
                                             weights=CostWeights(step=1.0)), (8, 12), torch.tensor([[0, 0]]))
    assert coarse[0, 7, 11].item() == pytest.approx(11.0)
    assert dist[0, -1, -1].item() == pytest.approx(11.0, abs=0.5)


def test_bad_weights_are_rejected():
    with pytest.raises(ValueError, match="boundary"):
        CostWeights(boundary=-1.0)
    with pytest.raises(ValueError, match="stride"):
        CostWeights(stride=0)
