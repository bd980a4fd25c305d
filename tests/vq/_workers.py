import torch

from otlearn.ot import SinkhornSolver
from otlearn.vq import OPTVQ_SETTINGS, OTVectorQuantizer


def kmeans_init_shard(rank: int, world_size: int, x, sizes, k: int):
    """Each rank's codebook after the first training batch with the default k-means init."""
    q = OTVectorQuantizer(k, x.shape[1], codebook_update="gradient")  # codes stay at the k-means centres
    start = sum(sizes[:rank])
    q(x[start : start + sizes[rank]])
    return q.codebook.detach().numpy()


def restart_shard(rank: int, world_size: int, x, sizes, k: int, steps: int, sampling: str = "uniform"):
    """Codebook, restarts and usage shares after ``steps`` training forwards with far-away initial codes."""
    torch.manual_seed(rank)  # different local random streams: equality must come from the shared candidates
    init = torch.cat([x[:4], x[:4].mean(0) + 100 + torch.arange(k - 4, dtype=torch.float32)[:, None]])
    q = OTVectorQuantizer(k, x.shape[1], codebook_init=init, assignment="nn", restart_sampling=sampling)
    start = sum(sizes[:rank])
    for _ in range(steps):
        q(x[start : start + sizes[rank]])
    return q.codebook.detach().numpy(), int(q.restarts), q.nn_share.numpy()
