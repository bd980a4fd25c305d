"""otlearn.comm: the communication device per backend, the only caller of torch.distributed
collectives, and its collectives on a real gloo group."""
import os
import re

import numpy as np
import pytest
import torch
import torch.distributed as dist
from torch._subclasses.fake_tensor import FakeTensorMode

from otlearn.comm import Communicator, communication_device
from tests._dist import run_workers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class _FakeGroup:
    """Monkeypatches torch.distributed so that a 2-rank group of ``backend`` seems initialised;
    every tensor handed to a collective is recorded (device, op)."""

    def __init__(self, monkeypatch, backend: str) -> None:
        self.seen: list[tuple[str, torch.device]] = []
        monkeypatch.setattr(dist, "is_available", lambda: True)
        monkeypatch.setattr(dist, "is_initialized", lambda: True)
        monkeypatch.setattr(dist, "get_rank", lambda group=None: 0)
        monkeypatch.setattr(dist, "get_world_size", lambda group=None: 2)
        monkeypatch.setattr(dist, "get_backend", lambda group=None: backend)
        monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)

        def all_reduce(tensor, op=None, group=None):
            self.seen.append(("all_reduce", tensor.device))

        def all_gather(outs, tensor, group=None):
            self.seen.append(("all_gather", tensor.device))
            for out in outs:
                out.copy_(tensor)

        monkeypatch.setattr(dist, "all_reduce", all_reduce)
        monkeypatch.setattr(dist, "all_gather", all_gather)


def test_backend_decides_the_communication_device(monkeypatch):
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 3)
    assert communication_device("nccl") == torch.device("cuda", 3)
    assert communication_device("gloo") == torch.device("cpu")
    assert communication_device("cpu:gloo,cuda:nccl") is None  # each tensor stays where it is


def test_nccl_group_sends_every_tensor_to_the_cuda_device(monkeypatch):
    """CPU tensors (labels, counts, PQ sums) travel to the current CUDA device and come back."""
    fake = _FakeGroup(monkeypatch, "nccl")
    comm = Communicator(object())
    assert comm.device == torch.device("cuda", 0) and comm.world_size == 2
    monkeypatch.setattr(comm, "gather_sizes", lambda n, device=None: [n, n])  # host read: not on fake tensors
    with FakeTensorMode(allow_non_fake_inputs=True):
        counts = torch.zeros(5, dtype=torch.long)
        back = comm.all_reduce_(counts, op="max")
        parts = comm.all_gather(torch.ones(3))
        (rows, labels), _ = comm.all_gather_rows(torch.arange(4), torch.zeros(4, 2, dtype=torch.long))
    assert back is counts and back.device.type == "cpu"
    assert all(p.device.type == "cpu" for p in parts) and rows.device.type == "cpu" and labels.device.type == "cpu"
    assert len(fake.seen) == 4 and all(device == torch.device("cuda", 0) for _, device in fake.seen), fake.seen


def test_gloo_group_sends_cuda_tensors_to_the_cpu(monkeypatch):
    fake = _FakeGroup(monkeypatch, "gloo")
    comm = Communicator(object())
    with FakeTensorMode(allow_non_fake_inputs=True):
        on_gpu = torch.zeros(4, device="cuda")
        back = comm.all_reduce_(on_gpu)
    assert back.device.type == "cuda" and fake.seen == [("all_reduce", torch.device("cpu"))]


def test_no_module_but_comm_calls_torch_distributed():
    """Every collective of the library goes through otlearn/comm.py."""
    collective = re.compile(
        r"\b(dist|torch\.distributed)\.(all_reduce|all_gather\w*|broadcast\w*|reduce\w*|gather|scatter\w*|"
        r"all_to_all\w*|barrier|send|recv|isend|irecv|get_backend|get_rank|get_world_size|new_group)\("
    )
    offenders = []
    for folder, _, files in os.walk(os.path.join(ROOT, "otlearn")):
        for name in files:
            path = os.path.join(folder, name)
            if not name.endswith(".py") or path.endswith(os.path.join("otlearn", "comm.py")):
                continue
            text = open(path).read()
            offenders += [f"{os.path.relpath(path, ROOT)}: {m.group(0)}" for m in collective.finditer(text)]
            if re.search(r"from torch\.distributed import|from torch import distributed", text):
                offenders.append(f"{os.path.relpath(path, ROOT)}: imports from torch.distributed")
    assert offenders == []


def _collectives(rank, world_size):
    comm = Communicator(dist.group.WORLD)
    summed = comm.all_reduce_(torch.tensor([rank + 1.0, 2.0 * rank], dtype=torch.float64))
    largest = comm.all_reduce_(torch.tensor([rank, -rank], dtype=torch.long), op="max")
    smallest = comm.all_reduce_(torch.tensor([rank, -rank], dtype=torch.long), op="min")
    n = [3, 0, 2][rank]
    (rows, extra), sizes = comm.all_gather_rows(torch.full((n, 2), rank, dtype=torch.long), torch.full((n,), rank * 0.5))
    return {"sum": summed.numpy(), "max": largest.numpy(), "min": smallest.numpy(), "rows": rows.numpy(),
            "extra": extra.numpy(), "sizes": sizes, "device": comm.device}


def test_collectives_on_three_gloo_ranks_with_an_empty_one():
    outs = run_workers(_collectives, 3)
    for out in outs:
        np.testing.assert_array_equal(out["sum"], [6.0, 6.0])
        np.testing.assert_array_equal(out["max"], [2, 0])
        np.testing.assert_array_equal(out["min"], [0, -2])
        assert out["sizes"] == [3, 0, 2] and out["device"] == torch.device("cpu")
        np.testing.assert_array_equal(out["rows"], [[0, 0]] * 3 + [[2, 2]] * 2)
        np.testing.assert_array_equal(out["extra"], [0.0, 0.0, 0.0, 1.0, 1.0])


def test_single_process_is_the_identity_and_bad_groups_are_clear():
    comm = Communicator()
    t = torch.ones(3)
    assert comm.all_reduce_(t) is t and comm.all_gather(t)[0] is t and not comm.distributed
    with pytest.raises(ValueError, match="torch.distributed is not initialized"):
        Communicator(object())
    from otlearn.comm import resolve

    with pytest.raises(ValueError, match="'auto'"):
        resolve("world")


def _release_twice(rank, world_size):
    from otlearn.comm import release_process_group

    alive_before = dist.is_initialized()
    release_process_group()
    alive_after = dist.is_initialized()
    release_process_group()  # a second call is a no-op, not an error
    return alive_before, alive_after


def test_release_process_group_destroys_a_live_gloo_group_once():
    assert run_workers(_release_twice, 2) == [(True, False), (True, False)]
