"""The assignment problem one process holds: its shard of scores, ε and the marginals.

Math. Over all ranks the rows form a score matrix ``S`` (N x K); a larger score is a better
match, i.e. the transport cost is ``-S``. The entropic problem with regularisation ε > 0 is

    max_P  <P, S> + ε H(P)   s.t.  P 1_K = a,  P^T 1_N = b,

whose solution is ``P_ik = exp((S_ik + f_i + g_k) / ε)`` for dual potentials ``f`` (N,) and
``g`` (K,). ``a`` and ``b`` are normalised to sum to one over all ranks.

Validation is collective: every rank checks its own inputs, then all ranks exchange a small
status vector, so a bad input on one rank (or a K that differs across ranks) raises the same
``ValueError`` on every rank instead of leaving the others waiting in an all-reduce.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from otlearn.ot.reduce import ColumnReducer, make_reducer

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


@dataclass
class AssignmentProblem:
    """A validated local shard of an entropic assignment problem.

    Attributes:
        scores: (n_local, K) scores in any float dtype, never modified.
        eps: entropic regularisation ε > 0 (SeLa's λ = 1/ε on log-probabilities).
        a: (n_local,) row masses in ``dtype``, normalised so the global sum is 1.
        b: (K,) column masses in ``dtype``, summing to 1 (identical on every rank).
        reducer: how column statistics are combined across ranks.
        n_global: total number of rows over all ranks.
        row_offset: global index of this rank's first row (rows are ordered rank by rank).
        dtype: compute dtype (float32 or float64).
    """

    scores: torch.Tensor
    eps: float
    a: torch.Tensor
    b: torch.Tensor
    reducer: ColumnReducer
    n_global: int
    row_offset: int
    dtype: torch.dtype = field(default=torch.float32)

    @property
    def n_local(self) -> int:
        return self.scores.shape[0]

    @property
    def n_cols(self) -> int:
        return self.scores.shape[1]

    @property
    def device(self) -> torch.device:
        return self.scores.device

    def row_blocks(self, chunk_size: int | None = None) -> list[slice]:
        """Slices of this rank's rows, ``chunk_size`` rows each (default: about 2**20 scores per block)."""
        size = chunk_size or max(1, (1 << 20) // max(self.n_cols, 1))
        return [slice(start, min(self.n_local, start + size)) for start in range(0, self.n_local, size)]

    @classmethod
    def build(
        cls,
        scores: torch.Tensor,
        eps: float,
        *,
        a: torch.Tensor | None = None,
        b: torch.Tensor | None = None,
        group: dist.ProcessGroup | None = None,
        dtype: torch.dtype = torch.float32,
        check_finite: bool = True,
    ) -> "AssignmentProblem":
        """Validate the inputs on every rank together and normalise the masses.

        ``check_finite=False`` skips the NaN/Inf scan of the scores, for callers that built them from
        inputs they already checked (one pass over N x K saved).

        Raises:
            ValueError: naming the rank and the problem (NaN/Inf scores, ε ≤ 0, wrong shapes,
                negative or non-finite masses, all-zero masses, K or ε differing across ranks).
        """
        if dtype not in (torch.float32, torch.float64):
            raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
        reducer = make_reducer(group)
        problems = _local_problems(scores, eps, a, b, check_finite)
        n_local = scores.shape[0] if isinstance(scores, torch.Tensor) and scores.dim() == 2 else 0
        n_cols = scores.shape[1] if isinstance(scores, torch.Tensor) and scores.dim() == 2 else -1
        eps_value = float(eps) if isinstance(eps, (int, float)) else float("nan")
        device = scores.device if isinstance(scores, torch.Tensor) else torch.device("cpu")
        a_sum = float(a.double().sum()) if (a is not None and not problems) else float(n_local)
        b_print = _fingerprint(b, n_cols) if (not problems and reducer.world_size > 1) else (0.0, 0.0)

        statuses = reducer.all_gather_object((problems, n_local, n_cols, eps_value, a_sum, b_print))
        _raise_on_any(statuses, reducer.world_size)

        n_global = sum(s[1] for s in statuses)
        row_offset = sum(s[1] for s in statuses[: reducer.rank])
        total_a = sum(s[4] for s in statuses)
        if n_global == 0:
            raise ValueError("scores have 0 rows on every rank: there is nothing to assign")
        if not total_a > 0:
            raise ValueError("row masses a sum to 0 over all ranks: at least one must be positive")

        if a is None:
            a_norm = torch.full((n_local,), 1.0 / n_global, dtype=dtype, device=device)
        else:
            a_norm = a.to(device=device, dtype=dtype) / total_a
        if b is None:
            b_norm = torch.full((n_cols,), 1.0 / n_cols, dtype=dtype, device=device)
        else:
            b_norm = b.to(device=device, dtype=dtype)
            b_norm = b_norm / b_norm.sum()
        return cls(scores, float(eps), a_norm, b_norm, reducer, n_global, row_offset, dtype)


def _local_problems(scores: object, eps: object, a: object, b: object, check_finite: bool = True) -> list[str]:
    """Everything wrong with this rank's inputs, as messages (empty when valid)."""
    problems: list[str] = []
    if not isinstance(eps, (int, float)) or isinstance(eps, bool) or not math.isfinite(eps) or eps <= 0:
        problems.append(f"eps must be a finite number > 0, got {eps!r}")
    if not isinstance(scores, torch.Tensor):
        return problems + [f"scores must be a torch.Tensor of shape (n_local, K), got {type(scores).__name__}"]
    if scores.dim() != 2:
        return problems + [f"scores must have shape (n_local, K), got shape {tuple(scores.shape)}"]
    if scores.dtype not in _FLOAT_DTYPES:
        problems.append(f"scores must be a floating-point tensor, got dtype {scores.dtype}")
    n_local, n_cols = scores.shape
    if n_cols == 0:
        problems.append("scores have K = 0 columns; expected at least one column")
    if check_finite and not problems and n_local > 0 and not bool(torch.isfinite(scores).all()):
        bad = int((~torch.isfinite(scores)).sum())
        problems.append(f"scores contain {bad} NaN/Inf entries; expected finite scores")
    for name, mass, length in (("a", a, n_local), ("b", b, n_cols)):
        if mass is None:
            continue
        if not isinstance(mass, torch.Tensor):
            problems.append(f"{name} must be a torch.Tensor, got {type(mass).__name__}")
        elif mass.dim() != 1 or mass.shape[0] != length:
            expected = "(n_local,)" if name == "a" else "(K,)"
            problems.append(f"{name} must have shape {expected} = ({length},), got {tuple(mass.shape)}")
        elif not bool(torch.isfinite(mass).all()):
            problems.append(f"{name} contains NaN/Inf; expected finite non-negative masses")
        elif bool((mass < 0).any()):
            problems.append(f"{name} has negative entries (min {float(mass.min()):.3g}); masses must be >= 0")
        elif name == "b" and not bool((mass > 0).any()):
            problems.append("b is all zeros; at least one column mass must be positive")
    return problems


def _fingerprint(b: torch.Tensor | None, n_cols: int) -> tuple[float, float]:
    """Two numbers that differ when the normalised column masses differ (None = uniform)."""
    if b is None:
        b64 = torch.full((max(n_cols, 1),), 1.0 / max(n_cols, 1), dtype=torch.float64)
    else:
        b64 = b.detach().double().cpu()
        b64 = b64 / b64.sum()
    weights = torch.arange(1, b64.numel() + 1, dtype=torch.float64)
    return float((b64 * weights).sum()), float((b64.square() * weights).sum())


def _raise_on_any(statuses: list[tuple], world_size: int) -> None:
    messages = []
    for rank, (problems, *_) in enumerate(statuses):
        prefix = f"rank {rank}: " if world_size > 1 else ""
        messages += [prefix + p for p in problems]
    if messages:
        raise ValueError("invalid Sinkhorn input: " + "; ".join(messages))
    cols = {s[2] for s in statuses if s[2] >= 0}
    if len(cols) > 1:
        per_rank = ", ".join(f"rank {r}: K={s[2]}" for r, s in enumerate(statuses))
        raise ValueError(f"the number of columns K differs across ranks ({per_rank}); every rank must pass the same K")
    epss = {s[3] for s in statuses}
    if len(epss) > 1:
        raise ValueError(f"eps differs across ranks ({sorted(epss)}); every rank must pass the same eps")
    first = statuses[0][5]
    for rank, status in enumerate(statuses):
        if any(abs(x - y) > 1e-6 * max(abs(x), abs(y), 1e-300) for x, y in zip(first, status[5])):
            raise ValueError(
                f"column masses b differ across ranks (rank 0 and rank {rank}); every rank must pass the same b "
                "(None means uniform)"
            )
