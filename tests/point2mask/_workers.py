import torch

from otlearn.data.shapes import SyntheticPanopticShapes
from otlearn.eval.panoptic import PanopticQuality
from otlearn.point2mask import PseudoMaskGenerator


def pq_of_shard(rank: int, world_size: int, n_images: int):
    """Each rank scores every world_size-th image's OT pseudo-masks (noisy maps), then sync() pools."""
    ds = SyntheticPanopticShapes(n_images, 40, seed=5)
    gen = PseudoMaskGenerator(5, [0, 1, 2], method="ot")
    metric = PanopticQuality([0, 1, 2], [3, 4])
    for i in range(rank, n_images, world_size):
        s = ds.sample(i)
        probs = torch.nn.functional.one_hot(s.semantic, 5).permute(2, 0, 1).float() * 3
        out = gen(probs.softmax(0)[None], [s.points], [s.point_labels])[0]
        metric.update(out.segment_ids, out.segments, s.panoptic, s.segments)
    metric.sync()
    return metric.compute()
