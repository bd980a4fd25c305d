"""One harness for "W processes give the single-process result", as torchmetrics' tester does for metrics.

A *case* is a function ``fn(rows, group, **options) -> dict[str, numpy array | number]`` that computes
something from a block of rows (any tensors with a leading row dimension) over a process group
(``None`` for one process). :func:`assert_sharded_equals_single` runs it once on all rows in this
process, then on W gloo processes holding uneven shards of the rows (an empty shard included where
the sizes say so), and compares every output: per-row outputs (named in ``row_outputs``) concatenated
over the ranks, the others on every rank; exactly for integers, to ``tolerance[dtype]`` for floats.
Cases live at module level of an importable module (the workers are spawned).
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
import torch.distributed as dist

from tests._dist import run_workers

#: rtol / atol of floating-point outputs by compute dtype: float64 reductions in another order agree to
#: about 1e-12 relative; float32 ones to a few units of 2^-24.
TOLERANCE = {torch.float64: (1e-9, 1e-12), torch.float32: (1e-5, 1e-7)}

#: world sizes and uneven shard proportions (one empty rank in each world size)
SHARDINGS = {2: [(0.7, 0.3), (0.0, 1.0)], 3: [(0.45, 0.0, 0.55), (0.2, 0.5, 0.3)]}


def shard_sizes(n: int, proportions: Sequence[float]) -> list[int]:
    """Row counts per rank summing to ``n`` from ``proportions`` (the last rank takes the rest)."""
    sizes = [int(round(n * p)) for p in proportions[:-1]]
    return sizes + [n - sum(sizes)]


def _run_shard(rank: int, world_size: int, fn: Callable, rows: tuple, sizes: list[int], options: dict) -> dict:
    start = sum(sizes[:rank])
    mine = tuple(None if r is None else r[start : start + sizes[rank]] for r in rows)
    return fn(mine, dist.group.WORLD, **options)


def assert_sharded_equals_single(fn: Callable, rows: tuple, sizes: list[int], options: Mapping[str, Any] | None = None,
                                 *, row_outputs: Sequence[str] = (), dtype: torch.dtype = torch.float64,
                                 tolerance: tuple[float, float] | None = None, timeout: float = 180.0) -> dict:
    """Run ``fn`` on all ``rows`` here and on ``len(sizes)`` processes holding ``sizes`` rows each; returns the
    single-process outputs after checking every rank's against them."""
    options = dict(options or {})
    assert sum(sizes) == next(r for r in rows if r is not None).shape[0], (sizes, "must cover all rows")
    single = fn(rows, None, **options)
    outs = run_workers(_run_shard, len(sizes), fn, rows, sizes, options, timeout=timeout)
    rtol, atol = tolerance or TOLERANCE[dtype]
    for key, expected in single.items():
        if key in row_outputs:
            got = [np.concatenate([np.asarray(o[key]) for o in outs])]
        else:
            got = [np.asarray(o[key]) for o in outs]
        for rank_value in got:
            expected_arr = np.asarray(expected)
            if np.issubdtype(expected_arr.dtype, np.floating):
                np.testing.assert_allclose(rank_value, expected_arr, rtol=rtol, atol=atol, err_msg=f"{key} (sizes {sizes})")
            else:
                np.testing.assert_array_equal(rank_value, expected_arr, err_msg=f"{key} (sizes {sizes})")
    return single
