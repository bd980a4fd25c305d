import torch

from otlearn.vq import OTVectorQuantizer


def quantize_shard(rank: int, world_size: int, x, sizes, k: int, normalize: str):
    torch.manual_seed(0)
    q = OTVectorQuantizer(k, x.shape[1], normalize=normalize, tol=1e-6, max_iter=5000)  # group="auto": WORLD
    start = sum(sizes[:rank])
    out = q(x[start : start + sizes[rank]])
    return out.indices.numpy(), q.ema_g.numpy(), q.ema_stats.numpy()
