"""Run a function on W gloo processes on 127.0.0.1 and collect what each rank returns.

Workers are spawned (not forked) so that no OpenMP state is inherited; each returns a
picklable value (numpy arrays, not tensors). An exception on any rank is re-raised here with
that rank's traceback, and a hang fails after ``timeout`` seconds instead of blocking pytest.
"""
from __future__ import annotations

import os
import queue
import socket
import traceback
from typing import Any, Callable

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from otlearn.comm import release_process_group


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world_size: int, port: int, fn: Callable, args: tuple, results: Any, backend: str) -> None:
    try:
        torch.set_num_threads(1)
        if backend == "nccl":
            torch.cuda.set_device(rank)
        dist.init_process_group(
            backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size
        )
        out = fn(rank, world_size, *args)
        results.put((rank, True, out))
    except BaseException:  # noqa: BLE001 - report everything to the parent
        results.put((rank, False, traceback.format_exc()))
    finally:
        release_process_group()


def run_workers(fn: Callable, world_size: int, *args: Any, timeout: float = 180.0, backend: str = "gloo") -> list[Any]:
    """``[fn(rank, world_size, *args) for rank in range(world_size)]``, each on its own process
    (``backend="nccl"``: rank r on CUDA device r)."""
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    port = free_port()
    env_threads = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"
    try:
        procs = [
            ctx.Process(target=_worker, args=(r, world_size, port, fn, args, results, backend), daemon=True)
            for r in range(world_size)
        ]
        for p in procs:
            p.start()
        outputs: dict[int, Any] = {}
        errors: list[str] = []
        for _ in range(world_size):
            try:
                rank, ok, value = results.get(timeout=timeout)
            except queue.Empty:
                raise TimeoutError(f"distributed run of {fn.__name__} hung for {timeout}s") from None
            if ok:
                outputs[rank] = value
            else:
                errors.append(f"rank {rank}:\n{value}")
        for p in procs:
            p.join(timeout=30)
        if errors:
            raise RuntimeError("distributed worker failed:\n" + "\n".join(errors))
        return [outputs[r] for r in range(world_size)]
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
        if env_threads is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = env_threads
