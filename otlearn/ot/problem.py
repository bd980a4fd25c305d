"""The assignment problem one process holds: its shard of scores, ε and the marginals.

Math. Over all ranks the rows form a score matrix ``S`` (N x K); a larger score is a better
match, i.e. the transport cost is ``-S``. The entropic problem with regularisation ε > 0 is

    max_P  <P, S> + ε H(P)   s.t.  P 1_K = a,  P^T 1_N = b,

whose solution is ``P_ik = exp((S_ik + f_i + g_k) / ε)`` for dual potentials ``f`` (N,) and
``g`` (K,). ``a`` and ``b`` are normalised to sum to one over all ranks.

Validation is collective and costs one host read: every rank checks the shapes of its inputs on
the host and counts non-finite or negative entries on the device; one all-gather of a fixed-size
status vector (tensor collective, no pickling) tells every rank about every other, so a bad
input on one rank (or a K that differs across ranks) raises the same ``ValueError`` on every rank
instead of leaving the others waiting in an all-reduce. When ``b`` is given on several ranks it
is compared directly (one MAX all-reduce of ``[b, −b]``, a second host read).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Literal, NamedTuple, Union

import torch
import torch.distributed as dist

from otlearn.comm import Communicator, host_values, resolve

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

DtypeArg = Union[torch.dtype, Literal["auto"]]


class RankStatus(NamedTuple):
    """What validation learns of one rank's inputs; travels as one float64 vector per rank (all-gathered).

    The first six fields are known on the host, the others are measured on the device (:func:`_device_status`).
    """

    host_problems: float  # number of host-side problems (types, shapes, ε, ρ)
    n_local: float
    n_cols: float  # -1 when the shapes are invalid
    eps: float
    b_given: float  # 1.0 when b was passed
    rho: float  # -1.0 for the hard column marginal
    s_bad: float  # non-finite scores (a flag; the exact count on the error path)
    s_low: float
    s_high: float
    a_bad: float
    a_neg: float
    a_min: float
    a_sum: float
    b_bad: float
    b_neg: float
    b_min: float
    b_pos: float  # columns of positive mass


_N_HOST = 6
_N_DEVICE = len(RankStatus._fields) - _N_HOST


@dataclass
class AssignmentProblem:
    """A validated local shard of an entropic assignment problem.

    Attributes:
        scores: (n_local, K) scores in any float dtype, never modified.
        eps: entropic regularisation ε > 0 (SeLa's λ = 1/ε on log-probabilities).
        a: (n_local,) row masses in ``dtype``, normalised so the global sum is 1.
        b: (K,) column masses in ``dtype``, summing to 1 (identical on every rank).
        comm: the :class:`~otlearn.comm.Communicator` of the ranks that share the rows.
        n_global: total number of rows over all ranks.
        row_offset: global index of this rank's first row (rows are ordered rank by rank).
        dtype: compute dtype (float32 or float64).
        all_columns_positive: whether every ``b_k > 0`` (known on the host; lets the solver skip
            masking zero-mass columns).
        b_penalty: ρ of the relaxed column marginal ``ρ KL(P^T 1 ‖ b)`` (see :mod:`otlearn.ot.columns`);
            ``None`` = the hard constraint ``P^T 1 = b``.
        all_rows_positive: whether every ``a_i > 0`` (known on the host).
        auto_dtype: the caller asked for ``dtype="auto"``: the solver may move the problem to float64
            (see :meth:`otlearn.ot.SinkhornSolver`); ``dtype`` is then float32 until it does.
        score_low, score_high: global min and max of the scores (host floats from validation; NaN
            when not measured).
    """

    scores: torch.Tensor
    eps: float
    a: torch.Tensor
    b: torch.Tensor
    comm: Communicator
    n_global: int
    row_offset: int
    dtype: torch.dtype = field(default=torch.float32)
    all_columns_positive: bool = True
    b_penalty: float | None = None
    all_rows_positive: bool = True
    auto_dtype: bool = False
    score_low: float = math.nan
    score_high: float = math.nan

    @property
    def score_range(self) -> float:
        """``max S − min S`` over all ranks (NaN when not measured)."""
        return self.score_high - self.score_low

    @property
    def score_magnitude(self) -> float:
        """``max |S|`` over all ranks (NaN when not measured)."""
        return max(abs(self.score_low), abs(self.score_high))

    def with_dtype(self, dtype: torch.dtype) -> "AssignmentProblem":
        """The same problem computed in ``dtype`` (the masses re-cast; the scores untouched)."""
        return replace(self, a=self.a.to(dtype), b=self.b.to(dtype), dtype=dtype, auto_dtype=False)

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
        group: dist.ProcessGroup | Communicator | None = None,
        dtype: DtypeArg = "auto",
        b_penalty: float | None = None,
        check_finite: bool = True,
    ) -> "AssignmentProblem":
        """Validate the inputs on every rank together and normalise the masses.

        ``dtype``: float32, float64 or "auto" (float32, moved to float64 by the solver when the scores'
        magnitude against ε is beyond what float32 resolves at its tolerance). ``b_penalty``: ρ > 0 of
        the relaxed column marginal, ``None`` (or ``math.inf``) for the hard one.
        ``check_finite=False`` skips the NaN/Inf scan of the scores, for callers that built them from
        inputs they already checked (one pass over N x K saved; the score range is then not known).

        Raises:
            ValueError: naming the rank and the problem (NaN/Inf scores, ε ≤ 0, wrong shapes,
                negative or non-finite masses, all-zero masses, K, ε or b differing across ranks).
        """
        if not (dtype == "auto" or dtype in (torch.float32, torch.float64)):
            raise ValueError(f"dtype must be torch.float32, torch.float64 or 'auto', got {dtype!r}")
        auto_dtype = dtype == "auto"
        dtype = torch.float32 if auto_dtype else dtype
        if isinstance(b_penalty, float) and b_penalty == math.inf:  # ρ = ∞ is the hard marginal
            b_penalty = None
        comm = resolve(group)
        host_problems = _host_problems(scores, eps, a, b, b_penalty)
        valid = not host_problems
        device = scores.device if isinstance(scores, torch.Tensor) else torch.device("cpu")
        host = [
            float(len(host_problems)),
            float(scores.shape[0]) if valid else 0.0,
            float(scores.shape[1]) if valid else -1.0,
            float(eps) if isinstance(eps, (int, float)) else math.nan,
            float(b is not None),
            -1.0 if b_penalty is None or host_problems else float(b_penalty),
        ]
        measured = _device_status(scores, a, b, check_finite, device) if valid else torch.zeros(_N_DEVICE, device=device)
        if comm.distributed:
            status = torch.cat([torch.tensor(host, dtype=torch.float64, device=device), measured.double()])
            rows = host_values(torch.stack(comm.all_gather(status)))  # the one host read of validation
        else:
            rows = [host + host_values(measured)]
        table = [RankStatus(*row) for row in rows]
        if any(row.host_problems > 0 for row in table):
            _raise_host_problems(comm, host_problems)
        if any(row.s_bad for row in table):  # error path: the exact counts, on every rank together
            mine = int((~torch.isfinite(scores)).sum()) if check_finite and scores.numel() else 0
            table = [row._replace(s_bad=count) for row, count in zip(table, comm.all_gather_object(mine))]
        _raise_on_any(table)

        n_global = int(sum(row.n_local for row in table))
        row_offset = int(sum(row.n_local for row in table[: comm.rank]))
        total_a = sum(row.a_sum for row in table)
        if n_global == 0:
            raise ValueError("scores have 0 rows on every rank: there is nothing to assign")
        if not total_a > 0:
            raise ValueError("row masses a sum to 0 over all ranks: at least one must be positive")

        n_local, n_cols = scores.shape
        if a is None:
            a_norm = _uniform(n_local, n_global, dtype, device)
        else:
            a_norm = a.to(device=device, dtype=dtype) / total_a
        if b is None:
            b64 = torch.full((n_cols,), 1.0 / n_cols, dtype=torch.float64, device=device)
        else:
            b64 = b.to(device=device, dtype=torch.float64)
            b64 = b64 / b64.sum()
        if comm.distributed and any(row.b_given for row in table):
            _check_same_b(comm, b64)  # every rank takes part, also those that passed None
        b_norm = b64.to(dtype)
        all_positive = all(row.b_pos == row.n_cols for row in table)
        rows_positive = all(row.a_min > 0 or row.n_local == 0 for row in table)
        measured_rows = [row for row in table if row.n_local > 0]
        low = min(row.s_low for row in measured_rows) if check_finite else math.nan
        high = max(row.s_high for row in measured_rows) if check_finite else math.nan
        return cls(scores, float(eps), a_norm, b_norm, comm, n_global, row_offset, dtype, all_positive,
                   None if b_penalty is None else float(b_penalty), rows_positive, auto_dtype, low, high)

    @classmethod
    def trusted(
        cls,
        scores: torch.Tensor,
        eps: float,
        *,
        group: dist.ProcessGroup | Communicator | None = None,
        dtype: torch.dtype = torch.float32,
        b_penalty: float | None = None,
    ) -> "AssignmentProblem":
        """A problem with uniform masses from scores the caller built and checked itself.

        No validation: for internal callers on a hot path (the quantizer, once per step). One
        process reads nothing from the device; several exchange their row counts (one host read).
        ``b_penalty``: ρ of a relaxed column marginal (the caller has checked ρ > 0, the same on every rank).
        """
        comm = resolve(group)
        n_local, n_cols = scores.shape
        sizes = comm.gather_sizes(n_local, device=scores.device)
        n_global = sum(sizes)
        if n_global == 0:
            raise ValueError("scores have 0 rows on every rank: there is nothing to assign")
        a = _uniform(n_local, n_global, dtype, scores.device)
        b = _uniform(n_cols, n_cols, dtype, scores.device)
        return cls(scores, float(eps), a, b, comm, n_global, sum(sizes[: comm.rank]), dtype,
                   b_penalty=None if b_penalty is None else float(b_penalty))


def _uniform(length: int, total: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(length,) masses ``1/total``: this rank's share of a uniform marginal over ``total`` entries."""
    return torch.full((length,), 1.0 / total, dtype=dtype, device=device)


def _host_problems(scores: object, eps: object, a: object, b: object, b_penalty: object = None) -> list[str]:
    """What is wrong with this rank's inputs that the host can see (types, shapes, ε, ρ)."""
    problems: list[str] = []
    if not isinstance(eps, (int, float)) or isinstance(eps, bool) or not math.isfinite(eps) or eps <= 0:
        problems.append(f"eps must be a finite number > 0, got {eps!r}")
    if b_penalty is not None and (not isinstance(b_penalty, (int, float)) or isinstance(b_penalty, bool)
                                  or not math.isfinite(b_penalty) or b_penalty <= 0):
        problems.append(f"b_penalty must be a number > 0 (math.inf or None: hard column marginal), got {b_penalty!r}")
    if not isinstance(scores, torch.Tensor):
        return problems + [f"scores must be a torch.Tensor of shape (n_local, K), got {type(scores).__name__}"]
    if scores.dim() != 2:
        return problems + [f"scores must have shape (n_local, K), got shape {tuple(scores.shape)}"]
    if scores.dtype not in _FLOAT_DTYPES:
        problems.append(f"scores must be a floating-point tensor, got dtype {scores.dtype}")
    n_local, n_cols = scores.shape
    if n_cols == 0:
        problems.append("scores have K = 0 columns; expected at least one column")
    for name, mass, length in (("a", a, n_local), ("b", b, n_cols)):
        if mass is None:
            continue
        if not isinstance(mass, torch.Tensor):
            problems.append(f"{name} must be a torch.Tensor, got {type(mass).__name__}")
        elif mass.dim() != 1 or mass.shape[0] != length:
            expected = "(n_local,)" if name == "a" else "(K,)"
            problems.append(f"{name} must have shape {expected} = ({length},), got {tuple(mass.shape)}")
        elif not mass.dtype.is_floating_point:
            problems.append(f"{name} must be a floating-point tensor, got dtype {mass.dtype}")
    return problems


def _device_status(scores: torch.Tensor, a, b, check_finite: bool, device: torch.device) -> torch.Tensor:
    """(11,) float64 device-side counts (the device fields of :class:`RankStatus`, in order) of what is wrong with valid-shaped inputs (one stack, no read):
    non-finite scores, their min and max; for a and b: non-finite and negative entries, min (and sum
    of a, positive entries of b); masses that were not given read as uniform."""
    zero = torch.zeros((), dtype=torch.float64, device=device)
    if check_finite and scores.numel():
        # one read pass in the scores' own dtype: min and max are finite exactly when every score is
        # (NaN propagates); the exact count is taken on the error path
        low, high = torch.aminmax(scores)
        s_bad = (~(torch.isfinite(low) & torch.isfinite(high))).to(torch.float64)
        low, high = low.to(torch.float64), high.to(torch.float64)
    else:
        s_bad, low, high = zero, zero, zero
    if a is None:
        a_part = [zero, zero, zero, torch.full((), float(scores.shape[0]), dtype=torch.float64, device=device)]
    elif a.numel() == 0:
        a_part = [zero, zero, zero, zero]
    else:
        a64 = a.to(device=device, dtype=torch.float64)
        clean = torch.nan_to_num(a64, nan=0.0, posinf=0.0, neginf=0.0)
        a_part = [(~torch.isfinite(a64)).sum(dtype=torch.float64), (a64 < 0).sum(dtype=torch.float64), clean.min(), clean.sum()]
    if b is None:
        b_part = [zero, zero, zero, torch.full((), float(scores.shape[1]), dtype=torch.float64, device=device)]
    else:
        b64 = b.to(device=device, dtype=torch.float64)
        clean = torch.nan_to_num(b64, nan=0.0, posinf=0.0, neginf=0.0)
        b_part = [(~torch.isfinite(b64)).sum(dtype=torch.float64), (b64 < 0).sum(dtype=torch.float64), clean.min(),
                  (b64 > 0).sum(dtype=torch.float64)]
    return torch.stack([s_bad, low, high, *a_part, *b_part])


def _raise_host_problems(comm: Communicator, mine: list[str]) -> None:
    """Error path: exchange the host-side messages (pickled, once) and raise them on every rank."""
    messages = []
    for rank, problems in enumerate(comm.all_gather_object(mine)):
        prefix = f"rank {rank}: " if comm.distributed else ""
        messages += [prefix + p for p in problems]
    raise ValueError("invalid Sinkhorn input: " + "; ".join(messages))


def _raise_on_any(table: list[RankStatus]) -> None:
    """Raise the same ValueError on every rank from the gathered statuses."""
    messages = []
    for rank, row in enumerate(table):
        prefix = f"rank {rank}: " if len(table) > 1 else ""
        if row.s_bad:
            messages.append(prefix + f"scores contain {int(row.s_bad)} NaN/Inf entries; expected finite scores")
        for name, bad, neg, low in (("a", row.a_bad, row.a_neg, row.a_min), ("b", row.b_bad, row.b_neg, row.b_min)):
            if bad:
                messages.append(prefix + f"{name} contains NaN/Inf; expected finite non-negative masses")
            elif neg:
                messages.append(prefix + f"{name} has negative entries (min {low:.3g}); masses must be >= 0")
        if not row.b_bad and not row.b_neg and row.b_pos == 0 and row.n_cols > 0:
            messages.append(prefix + "b is all zeros; at least one column mass must be positive")
    if messages:
        raise ValueError("invalid Sinkhorn input: " + "; ".join(messages))
    cols = {int(row.n_cols) for row in table}
    if len(cols) > 1:
        per_rank = ", ".join(f"rank {r}: K={int(row.n_cols)}" for r, row in enumerate(table))
        raise ValueError(f"the number of columns K differs across ranks ({per_rank}); every rank must pass the same K")
    epss = {row.eps for row in table}
    if len(epss) > 1:
        raise ValueError(f"eps differs across ranks ({sorted(epss)}); every rank must pass the same eps")
    rhos = {row.rho for row in table}
    if len(rhos) > 1:
        shown = sorted("None" if r < 0 else f"{r:g}" for r in rhos)
        raise ValueError(f"b_penalty differs across ranks ({shown}); every rank must pass the same b_penalty")


def _check_same_b(comm: Communicator, b64: torch.Tensor) -> None:
    """Raise on every rank when the normalised ``b`` differs across ranks (compared directly)."""
    both = comm.all_reduce_(torch.cat([b64, -b64]), op="max")
    k = b64.shape[0]
    spread = (both[:k] + both[k:]).abs().max()  # max_r b - min_r b, per column
    if host_values(spread.reshape(1))[0] > 1e-12:
        raise ValueError(
            "column masses b differ across ranks; every rank must pass the same b (None means uniform)"
        )
