"""Every distributed path of the library, run on a real process group of one process on ``device``.

A group of one process still runs real collectives (only ``group=None`` short-cuts them), so this
exercises the communication device of the backend: gloo on the CPU in the normal suite, NCCL on a
CUDA device in ``tests/gpu``. Each path is compared with the same computation without a group
(and, on CUDA, computed on the CPU). Returns plain Python values.
"""
from __future__ import annotations

import warnings

import torch
import torch.distributed as dist


def every_path(rank: int, world_size: int, device_name: str) -> dict:
    from torch.utils.data import DataLoader

    from otlearn.eval import extract
    from otlearn.eval.panoptic import PanopticQuality
    from otlearn.ot import SinkhornSolver, sinkhorn
    from otlearn.sela.labeling import assign_labels
    from otlearn.vq import CodebookMonitor, OTVectorQuantizer

    warnings.simplefilter("ignore")
    device = torch.device(device_name)
    group = dist.group.WORLD
    out: dict = {}
    gen = torch.Generator().manual_seed(0)
    scores = torch.log_softmax(3 * torch.randn(600, 24, generator=gen), dim=1)

    # solver and rounding with a group, on the device, against one process on the CPU
    for mode in ("kernel", "log"):
        ref = sinkhorn(scores, 0.1, tol=1e-6, max_iter=5000, mode=mode)
        res = sinkhorn(scores.to(device), 0.1, tol=1e-6, max_iter=5000, mode=mode, group=group)
        out[f"solver_{mode}_g_diff"] = float((res.g.cpu() - ref.g).abs().max())
        out[f"solver_{mode}_iters"] = (res.n_iters, ref.n_iters)
        out[f"solver_{mode}_labels_equal"] = bool(torch.equal(res.assignments().cpu(), ref.assignments()))
        out[f"solver_{mode}_balanced_equal"] = bool(torch.equal(res.balanced_assignments().cpu(), ref.balanced_assignments()))

    # a SeLa label round: indices on the CPU, logits on the device
    n, heads = 600, 2
    logits = [torch.randn(n, 10, generator=gen) * 3 for _ in range(heads)]
    previous = torch.stack([torch.randperm(n, generator=gen) % 10 for _ in range(heads)])
    solver = SinkhornSolver(tol=1e-6, max_iter=5000)
    ref_bank, _, _ = assign_labels(torch.arange(n), [lg.clone() for lg in logits], previous, [None] * heads, 10.0, solver,
                                   None, rounding="balanced")
    bank, _, pots = assign_labels(torch.arange(n), [lg.to(device) for lg in logits], previous, [None] * heads, 10.0, solver,
                                  group, rounding="balanced")
    out["sela_labels_equal"] = bool(torch.equal(bank, ref_bank))
    out["sela_potentials_on_cpu"] = all(p.device.type == "cpu" for p in pots)

    # VQ: OT assignment over the group, EMA codebook (counts and sums all-reduced), monitor
    x = torch.randn(512, 8, generator=gen)
    torch.manual_seed(3)
    single = OTVectorQuantizer(32, 8, codebook_update="ema", rounding="balanced", group=None,
                                solver=SinkhornSolver(tol=1e-6, max_iter=5000))
    torch.manual_seed(3)
    grouped = OTVectorQuantizer(32, 8, codebook_update="ema", rounding="balanced", group=group,
                                 solver=SinkhornSolver(tol=1e-6, max_iter=5000)).to(device)
    ref_idx = single(x).indices
    idx = grouped(x.to(device)).indices
    out["vq_indices_equal"] = bool(torch.equal(idx.cpu(), ref_idx))
    out["vq_codebook_diff"] = float((grouped.codebook.detach().cpu() - single.codebook.detach()).abs().max())
    monitor = CodebookMonitor(group=group)
    out["monitor_usage_equal"] = bool(torch.equal(monitor._reduce(grouped.usage).cpu(), single.usage))

    # panoptic quality: CPU counts summed over the group
    ids = torch.zeros(8, 8, dtype=torch.long)
    ids[:4] = 1
    ids[4:, :4] = 2
    segs = [{"id": 1, "category_id": 0, "isthing": True}, {"id": 2, "category_id": 1, "isthing": False}]
    pred = ids.clone()
    pred[:, 6:] = 0
    pq = PanopticQuality([0], [1])
    pq.update(pred, segs, ids, segs)
    before = pq.compute()
    pq.sync(group)
    out["pq_equal"] = pq.compute() == before

    # feature gathering over the group
    data = [{"image": torch.randn(3), "target": torch.tensor(i % 2), "index": torch.tensor(i)} for i in range(10)]
    model = torch.nn.Linear(3, 2).to(device)
    loader = DataLoader(data, batch_size=4)
    feats, targets, index = extract(model, loader, lambda b: model(b["image"]), device=device, group=group)
    ref_feats, _, _ = extract(model, loader, lambda b: model(b["image"]), device=device)
    out["features_equal"] = bool(torch.equal(feats, ref_feats)) and index.tolist() == list(range(10))
    out["backend"] = dist.get_backend(group)
    return out


def assert_every_path(out: dict) -> None:
    for mode in ("kernel", "log"):
        assert out[f"solver_{mode}_g_diff"] < 1e-4, out
        assert out[f"solver_{mode}_labels_equal"] and out[f"solver_{mode}_balanced_equal"], out
    for key in ("sela_labels_equal", "sela_potentials_on_cpu", "vq_indices_equal", "monitor_usage_equal", "pq_equal",
                "features_equal"):
        assert out[key], (key, out)
    assert out["vq_codebook_diff"] < 1e-5, out
