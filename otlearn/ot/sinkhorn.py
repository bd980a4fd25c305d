"""Entropic Sinkhorn-Knopp solver: one loop, log-domain or kernel operator, rows sharded over ranks.

Math (see :mod:`otlearn.ot.problem`). With ``P_ik = exp((S_ik + f_i + g_k) / ε)``:

* column update (global): ``g_k = ε log b_k − ε logsumexp_i((S_ik + f_i) / ε)``, the sum over i
  spanning all ranks (all-reduces of K floats);
* row update (local): ``f_i = ε log a_i − ε logsumexp_k((S_ik + g_k) / ε)``.

An iteration is a column update followed by a row update, so the plan always has exact rows and
the convergence error ``max_k |colsum_k / b_k − 1|`` (over columns with ``b_k > 0``) is read off the
global column sums that the next column update needs anyway. A cold start begins with a column
update from ``f = ε log a`` (as SwAV and SeLa do); a warm start begins with a row update from
``init_g``.

Two operators run the same loop and give the same iterates:

* ``"log"`` streams row chunks: each iteration is one exp() pass over the scores, extra memory
  O(chunk x K).
* ``"kernel"`` caches the stabilised kernel ``Kmat = exp((S + F + G) / ε)`` (rows summing to 1)
  and iterates scalings ``u = a / (Kmat v)``, ``v = b / (Kmat^T u)``: two matrix-vector products and
  one all-reduce of K floats per iteration, no exp(). The scalings are absorbed into the
  potentials (``G += ε log v``) and the kernel rebuilt from the scores when ``|log v|`` exceeds τ.
  Extra memory: one (n_local, K) buffer in the compute dtype.

Host synchronisation. The loop never asks the device a question between checks. Tolerance mode
reads one number per check (every ``check_every`` iterations; default 1 on the CPU, 10 on a GPU):
the column error, with the kernel's "absorb now" decision packed into its sign. Fixed-iteration
mode (``tol=None``) reads nothing; the kernel operator then absorbs unconditionally every
``check_every`` iterations (default 10). Safety without reads: a column sum below a floor
(1e-30 in float32, 1e-290 in float64) takes the step the floor allows, and ``|log v|`` is clamped at
L (40 in float32, 300 in float64). Such a step moves the potential towards, never past, its exact
update, so it still increases the concave dual objective: the fixed point and convergence are
unchanged, and nothing can overflow or divide by zero. These clamps bind only where float
precision is lost (columns that receive no representable mass).

Precision. The solver runs with autocast disabled, in its compute dtype (float32 or float64)
whatever the input dtype and whatever context calls it (Lightning's mixed precision runs training
steps under autocast, which would otherwise compute the matrix products in 16 bits). It is also
excluded from ``torch.compile`` tracing (``torch.compiler.disable``): a compiled model calls it
eagerly.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field, replace
from typing import Literal

import torch
import torch.distributed as dist

from otlearn.comm import Communicator, host_values
from otlearn.ot.precision import full_precision
from otlearn.ot.problem import AssignmentProblem

Mode = Literal["auto", "kernel", "log"]


class SinkhornConvergenceWarning(RuntimeWarning):
    """The solver stopped at ``max_iter`` before reaching ``tol``."""


@dataclass
class SinkhornResult:
    """Potentials and diagnostics of one solve; plans and labels are derived on demand.

    Attributes:
        f: (n_local,) row potentials of this rank (``-inf`` for rows of zero mass).
        g: (K,) column potentials, identical on every rank (``-inf`` for columns of zero mass).
        n_iters: column updates performed.
        converged: whether the column error reached ``tol`` (False in fixed-iteration mode).
        errors: column-marginal error read at each check, in order (host floats; empty in
            fixed-iteration mode, which reads nothing).
        problem: the solved :class:`AssignmentProblem` (holds a reference to the scores).
        mode: the operator that ran ("kernel" or "log").
        n_rebuilds: kernel builds from the scores (cold/warm start and absorptions; 0 in log mode).
        final_error: 0-dim device tensor, the column error of the returned plan (no sync until read).
        kept_plan: the plan, when the solver ran with ``return_plan=True``.
    """

    f: torch.Tensor
    g: torch.Tensor
    n_iters: int
    converged: bool
    errors: list[float]
    problem: AssignmentProblem = field(repr=False)
    mode: str = "log"
    n_rebuilds: int = 0
    final_error: torch.Tensor | None = field(default=None, repr=False)
    kept_plan: torch.Tensor | None = field(default=None, repr=False)

    @property
    def error(self) -> float:
        """The column-marginal error of the returned plan, as a float (one host read)."""
        if self.final_error is None:
            return self.errors[-1] if self.errors else float("nan")
        return float(host_values(self.final_error.reshape(1))[0])

    def plan(self) -> torch.Tensor:
        """(n_local, K) transport plan ``P_ik = exp((S_ik + f_i + g_k) / ε)``; all entries sum to 1.

        Since ``f`` is the exact row update of ``g``, this equals ``a_i softmax_k((S_ik + g_k)/ε)``,
        which is how it is computed (no cancellation between large ``S`` and ``f``), unless the
        solver kept it (``return_plan=True``).
        """
        if self.kept_plan is not None:
            return self.kept_plan
        p = self.problem
        with full_precision(p.device):
            return p.a[:, None] * torch.softmax((p.scores.to(p.dtype) + self.g[None, :]) / p.eps, dim=1)

    def assignments(self) -> torch.Tensor:
        """(n_local,) int64 hard labels ``argmax_k (S_ik + g_k)`` (the argmax of each plan row)."""
        from otlearn.ot.rounding import argmax_assignments

        return argmax_assignments(self.problem, self.g)

    def balanced_assignments(self) -> torch.Tensor:
        """(n_local,) int64 labels whose global count per column is exactly ``round(N b_k)``.

        See :func:`otlearn.ot.rounding.balanced_assignments`.
        """
        from otlearn.ot.rounding import balanced_assignments

        return balanced_assignments(self.problem, self.g)


@dataclass
class SinkhornSolver:
    """A Sinkhorn solver configured once and applied to many problems.

    Args:
        tol: stop when ``max_k |colsum_k / b_k − 1| <= tol``; ``None`` runs exactly ``max_iter``
            iterations (fixed-iteration mode, as SwAV and OptVQ do) and reads nothing from the device.
        max_iter: most column updates; reaching it with ``tol`` set warns.
        check_every: with ``tol``, measure the error every this many iterations (default 1 on the
            CPU, 10 on a GPU, where each check is one host synchronisation); with ``tol=None``, the
            kernel operator absorbs its scalings every this many iterations (default 10).
        mode: "auto", "kernel" or "log" (see the module docstring).
        chunk_size: rows per chunk in streamed passes (default: about 2**20 elements per chunk).
        max_kernel_bytes: "auto" caches the kernel when it needs at most this many bytes.
        log_scaling_bound: τ, the ``|log v|`` above which a check absorbs (kernel mode).
        eps_scaling: ε-scaling factor in (0, 1), or ``None``. Sinkhorn needs about
            ``range(S) / ε`` iterations, which is hopeless for tiny ε (near-exact assignment). With
            a factor, the solver first solves at ε₀ = the global score range, then at
            ``ε₀·factor, ε₀·factor², …`` down to ε, each stage warm-started from the previous g
            (intermediate stages stop at ``max(tol, 1e-2)``, each within ``max_iter`` iterations).
        return_plan: keep the (n_local, K) plan in the result. The kernel operator then turns its
            cached kernel into ``diag(u) Kmat diag(v)`` in place (one multiply pass, no exp(), no new
            memory); otherwise :meth:`SinkhornResult.plan` recomputes it from ``g`` (one exp pass).
        reuse_kernel: keep the kernel buffer between calls and reuse it for the next problem of the
            same shape, dtype and device (for a solver called every training step, e.g. by the
            quantizer). On the CPU a fresh N x K buffer per call costs page faults (glibc maps large
            allocations anew); the price is N x K memory held between calls.
    """

    tol: float | None = 1e-3
    max_iter: int = 1000
    check_every: int | None = None
    mode: Mode = "auto"
    chunk_size: int | None = None
    max_kernel_bytes: int = 2 * 1024**3
    log_scaling_bound: float = 20.0
    eps_scaling: float | None = None
    return_plan: bool = False
    reuse_kernel: bool = False
    _kernel_cache: torch.Tensor | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.eps_scaling is not None and not (0.0 < self.eps_scaling < 1.0):
            raise ValueError(f"eps_scaling must be in (0, 1) or None, got {self.eps_scaling!r}")
        if self.tol is not None and not (self.tol > 0):
            raise ValueError(f"tol must be > 0 or None, got {self.tol!r}")
        if not isinstance(self.max_iter, int) or self.max_iter < 1:
            raise ValueError(f"max_iter must be an int >= 1, got {self.max_iter!r}")
        if self.mode not in ("auto", "kernel", "log"):
            raise ValueError(f"mode must be 'auto', 'kernel' or 'log', got {self.mode!r}")
        if self.check_every is not None and self.check_every < 1:
            raise ValueError(f"check_every must be >= 1, got {self.check_every!r}")
        if self.chunk_size is not None and self.chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {self.chunk_size!r}")

    @torch.compiler.disable
    def __call__(
        self, problem: AssignmentProblem, init_g: torch.Tensor | None = None, *, check_init_g: bool = True
    ) -> SinkhornResult:
        """Solve ``problem``, warm-starting from ``init_g`` (K,) when given.

        ``check_init_g=False`` skips the NaN/+inf check of ``init_g`` (its one host read), for callers
        that pass the ``g`` of a previous result (the quantizer, every step).
        """
        with full_precision(problem.device):
            if init_g is not None:
                init_g = _checked_init_g(problem, init_g, check_init_g)
            if self.eps_scaling is None:
                return self._solve(problem, init_g)
            n_iters, errors = 0, []
            stage_solver = replace(self, tol=None if self.tol is None else max(self.tol, 1e-2), return_plan=False)
            for eps in _eps_stages(problem, self.eps_scaling):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", SinkhornConvergenceWarning)
                    result = stage_solver._solve(replace(problem, eps=eps), init_g)
                init_g, n_iters, errors = result.g, n_iters + result.n_iters, errors + result.errors
            result = self._solve(problem, init_g)
            result.n_iters += n_iters
            result.errors = errors + result.errors
            return result

    def _solve(self, problem: AssignmentProblem, init_g: torch.Tensor | None) -> SinkhornResult:
        mode = self._pick_mode(problem)
        if mode == "kernel":
            op = _KernelOperator(problem, self.chunk_size, self._kernel_buffer(problem))
        else:
            op = _LogOperator(problem, self.chunk_size)
        fixed = self.tol is None
        every = self.check_every or (10 if fixed or problem.device.type != "cpu" else 1)
        absorb_above = math.exp(self.log_scaling_bound)
        if init_g is None:
            op.cold_start()
            n_iters = 1
        else:
            op.warm_start(init_g)
            n_iters = 0
        errors: list[float] = []
        converged = False
        error = None
        while True:
            last = n_iters >= self.max_iter
            if not fixed and (last or n_iters % every == 0):
                error, values = op.check()
                err, *scalings = host_values(values)  # the one host read of a check
                errors.append(err)
                if err <= self.tol:
                    converged = True
                    break
                if last:
                    break
                if scalings and (scalings[0] > absorb_above or scalings[1] * absorb_above < 1.0):
                    op.absorb()
            elif last:
                break
            elif fixed and op.absorbs and n_iters % every == 0:
                op.absorb()
            op.column_update()
            n_iters += 1
            op.row_update()
            error = None
        if not fixed and not converged:
            warnings.warn(
                f"Sinkhorn did not converge: column-marginal error {errors[-1]:.3g} > tol {self.tol:g} "
                f"after {n_iters} iterations (eps={problem.eps:g}); raise max_iter or eps, or warm-start",
                SinkhornConvergenceWarning,
                stacklevel=4,
            )
        if error is None:
            error = _column_error(op.column_sums(), problem)
        f, g = op.potentials()
        plan = op.take_plan() if self.return_plan else None
        if plan is not None and plan is self._kernel_cache:
            self._kernel_cache = None  # the buffer now belongs to the result
        return SinkhornResult(f, g, n_iters, converged, errors, problem, mode, op.n_builds, error, plan)

    def _kernel_buffer(self, problem: AssignmentProblem) -> torch.Tensor:
        shape = (problem.n_local, problem.n_cols)
        cached = self._kernel_cache
        if cached is not None and cached.shape == shape and cached.dtype == problem.dtype and cached.device == problem.device:
            return cached
        buffer = torch.empty(shape, dtype=problem.dtype, device=problem.device)
        self._kernel_cache = buffer if self.reuse_kernel else None
        return buffer

    def _pick_mode(self, problem: AssignmentProblem) -> str:
        if self.mode != "auto":
            return self.mode
        item = 4 if problem.dtype == torch.float32 else 8
        return "kernel" if problem.n_local * problem.n_cols * item <= self.max_kernel_bytes else "log"


def sinkhorn(
    scores: torch.Tensor,
    eps: float,
    *,
    a: torch.Tensor | None = None,
    b: torch.Tensor | None = None,
    tol: float | None = 1e-3,
    max_iter: int = 1000,
    init_g: torch.Tensor | None = None,
    group: dist.ProcessGroup | Communicator | None = None,
    dtype: torch.dtype = torch.float32,
    mode: Mode = "auto",
    chunk_size: int | None = None,
    check_every: int | None = None,
    eps_scaling: float | None = None,
    max_kernel_bytes: int = 2 * 1024**3,
    log_scaling_bound: float = 20.0,
    return_plan: bool = False,
) -> SinkhornResult:
    """Solve ``max_P <P, S> + ε H(P)`` with marginals ``a`` (rows) and ``b`` (columns).

    Args:
        scores: (n_local, K) scores of this rank's rows, any float dtype and device; larger is a
            better match (log-probabilities, negative costs, logits). Cost = −scores.
        eps: ε > 0. The plan is ``P_ik = exp((S_ik + f_i + g_k) / ε)``.
        a: (n_local,) row masses, default uniform over all rows of all ranks.
        b: (K,) column masses, default uniform; both are normalised to sum to 1.
        tol: stop at ``max_k |colsum_k / b_k − 1| <= tol``; ``None`` = exactly ``max_iter`` iterations.
        max_iter: most iterations (column updates).
        init_g: (K,) warm start, e.g. the previous round's ``result.g``.
        group: process group the rows are sharded over; ``None`` = this process alone.
        dtype: compute dtype, float32 (default) or float64, whatever the input dtype.
        mode, chunk_size, check_every, eps_scaling, max_kernel_bytes, log_scaling_bound, return_plan:
            see :class:`SinkhornSolver`.

    Returns:
        A :class:`SinkhornResult`.
    """
    problem = AssignmentProblem.build(scores, eps, a=a, b=b, group=group, dtype=dtype)
    solver = SinkhornSolver(
        tol=tol, max_iter=max_iter, check_every=check_every, mode=mode, chunk_size=chunk_size,
        eps_scaling=eps_scaling, max_kernel_bytes=max_kernel_bytes, log_scaling_bound=log_scaling_bound,
        return_plan=return_plan,
    )
    return solver(problem, init_g=init_g)


# ----------------------------------------------------------------------------- helpers
def _checked_init_g(problem: AssignmentProblem, init_g: torch.Tensor, check: bool = True) -> torch.Tensor:
    """``init_g`` in the compute dtype; NaN/+inf raise (one host read, unless ``check`` is False);
    ``-inf`` on a column of positive mass becomes the smallest finite entry (any finite start converges)."""
    if init_g.shape != (problem.n_cols,):
        raise ValueError(f"init_g must have shape (K,) = ({problem.n_cols},), got {tuple(init_g.shape)}")
    g = init_g.detach().to(device=problem.device, dtype=problem.dtype)
    if check and host_values((torch.isnan(g) | (g == math.inf)).any().reshape(1))[0]:
        raise ValueError("init_g contains NaN or +inf; pass the g of a previous SinkhornResult")
    positive = problem.b > 0
    finite = torch.isfinite(g)
    lowest = torch.where(finite, g, torch.full_like(g, math.inf)).amin()
    lowest = torch.where(torch.isfinite(lowest), lowest, torch.zeros_like(lowest))
    g = torch.where(finite, g, lowest)
    return torch.where(positive, g, torch.full_like(g, -math.inf))


def _eps_stages(problem: AssignmentProblem, factor: float) -> list[float]:
    """ε₀ = global range of the scores, then ε₀·factor^t while still above the target ε."""
    local = torch.full((2,), -math.inf, dtype=torch.float64, device=problem.device)
    if problem.n_local:
        local[0] = problem.scores.max().double()
        local[1] = -problem.scores.min().double()
    problem.comm.all_reduce_(local, op="max")
    eps = float(sum(host_values(local)))
    stages = []
    while eps > problem.eps:
        stages.append(eps)
        eps *= factor
    return stages


def _column_error(col_sums: torch.Tensor, p: AssignmentProblem, ones: torch.Tensor | None = None) -> torch.Tensor:
    """0-dim ``max_k |colsum_k / b_k − 1|`` over columns with ``b_k > 0`` (no host read)."""
    if p.all_columns_positive:
        return torch.dist(col_sums / p.b, torch.ones_like(col_sums) if ones is None else ones, p=math.inf)
    rel = (col_sums / p.b - 1.0).abs()
    return torch.where(p.b > 0, rel, torch.zeros_like(rel)).amax()


def _normalised(g: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
    """``g`` shifted so that its largest entry over columns of positive mass is 0 (``-inf`` elsewhere).

    Potentials are defined up to ``(f + c, g − c)``; keeping max g = 0 keeps |f| near |S|, so
    ``(S + f + g)/ε`` keeps its float precision.
    """
    g = torch.where(positive, g, torch.full_like(g, -math.inf))
    return g - g.amax()


def _floor(dtype: torch.dtype) -> float:
    """Column sums below this are imprecise (underflowed terms); the step uses the floor instead."""
    return 1e-30 if dtype == torch.float32 else 1e-290


def _exp_blocks(p: AssignmentProblem, g: torch.Tensor | None, chunk_size: int | None, kernel: torch.Tensor | None = None):
    """Per row block: ``(rows, E, M, rowsum)`` with ``E = exp((S + g)/ε − M_i)`` (``g = None``: 0), ``M_i`` the
    row's max of ``(S + g)/ε`` and ``rowsum_i = Σ_k E_ik``; ``E`` is written into ``kernel[rows]`` when given.

    One exp() pass over the scores, in the compute dtype whatever their dtype.
    """
    blocks = p.row_blocks(chunk_size)
    single = len(blocks) == 1
    g_scaled = None if g is None else g / p.eps
    for rows in blocks:
        block = p.scores if single else p.scores[rows]
        if block.dtype != p.dtype and (g_scaled is None or block.dtype.itemsize > p.dtype.itemsize):
            block = block.to(p.dtype)  # float64 scores in float32 compute; half scores multiplied alone
        out = None if kernel is None else (kernel if single else kernel[rows])
        # (S + g)/ε; the add promotes half inputs to the compute dtype
        z = torch.mul(block, 1.0 / p.eps, out=out) if g_scaled is None else \
            torch.add(g_scaled, block, alpha=1.0 / p.eps, out=out)
        row_max = z.amax(1, keepdim=True)
        z.sub_(row_max).exp_()
        yield (slice(None) if single else rows), z, row_max.squeeze(1), z.sum(1)


def _row_pass(p: AssignmentProblem, g: torch.Tensor, chunk_size: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact row update from ``g``: ``f_i = ε (log a_i − M_i − log rowsum_i)``; returns ``(f, global column
    sums of the new plan)``."""
    f = torch.empty(p.n_local, dtype=p.dtype, device=p.device)
    col_sums = torch.zeros(p.n_cols, dtype=p.dtype, device=p.device)
    for rows, e, row_max, row_sum in _exp_blocks(p, g, chunk_size):
        a_rows = p.a[rows]
        f[rows] = p.eps * (torch.log(a_rows) - row_max - torch.log(row_sum))
        col_sums.addmv_(e.T, a_rows / row_sum)
    return f, p.comm.all_reduce_(col_sums)


def _build_kernel(
    p: AssignmentProblem, g: torch.Tensor | None, chunk_size: int | None, kernel: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fill ``kernel`` with ``exp((S + g)/ε − M_i)`` (each row's largest entry is 1); returns the row
    normaliser ``F = −ε M`` and the row sums (the kernel operator's first ``u`` is ``a / rowsum``)."""
    f = torch.empty(p.n_local, dtype=p.dtype, device=p.device)
    row_sums = torch.empty(p.n_local, dtype=p.dtype, device=p.device)
    for rows, _, row_max, row_sum in _exp_blocks(p, g, chunk_size, kernel):
        f[rows] = row_max.mul_(-p.eps)
        row_sums[rows] = row_sum
    return f, row_sums


def _exact_column_update(p: AssignmentProblem, f: torch.Tensor, chunk_size: int | None) -> torch.Tensor:
    """Exact ``g_k = ε log b_k − ε logsumexp_i((S_ik + f_i)/ε)`` in one streamed pass (normalised).

    Each rank keeps a running per-column max and a sum rescaled to it (online logsumexp); ranks
    then all-reduce the maxima (MAX), rescale their sums to the global max and all-reduce those
    (SUM): 2K floats, one exp() pass over the scores, nothing read by the host.
    """
    eps = p.eps
    col_max = torch.full((p.n_cols,), -math.inf, dtype=p.dtype, device=p.device)
    col_sum = torch.zeros(p.n_cols, dtype=p.dtype, device=p.device)
    for rows in p.row_blocks(chunk_size):
        z = p.scores[rows].to(p.dtype) + f[rows, None]
        new_max = torch.maximum(col_max, z.amax(0))
        safe_max = torch.where(torch.isfinite(new_max), new_max, torch.zeros_like(new_max))
        col_sum *= torch.exp((col_max - safe_max) / eps)
        col_sum += z.sub_(safe_max).div_(eps).exp_().sum(0)
        col_max = new_max
    global_max = p.comm.all_reduce_(col_max.clone(), op="max")
    finite_max = torch.where(torch.isfinite(global_max), global_max, torch.zeros_like(global_max))
    local_safe = torch.where(torch.isfinite(col_max), col_max, finite_max)
    col_sum *= torch.exp((local_safe - finite_max) / eps)
    p.comm.all_reduce_(col_sum)
    g = torch.log(p.b) * eps - finite_max - eps * torch.log(col_sum)
    return _normalised(g, p.b > 0)


# ----------------------------------------------------------------------------- operators
class _LogOperator:
    """Log-domain iterates: potentials ``f`` (n_local,) and ``g`` (K,), streamed in row chunks.

    The operator protocol of the loop: ``cold_start``/``warm_start`` (each ends with a row update),
    ``column_update``, ``row_update``, ``column_sums`` (of the current plan), ``check`` (the error
    and what the host must read), ``absorb``, ``potentials``, ``take_plan``.
    """

    absorbs = False

    def __init__(self, problem: AssignmentProblem, chunk_size: int | None) -> None:
        self.p = problem
        self.chunk_size = chunk_size
        self.positive = problem.b > 0
        self.log_b = torch.log(problem.b)
        self.floor = _floor(problem.dtype)
        self.f = torch.zeros(problem.n_local, dtype=problem.dtype, device=problem.device)
        self.g = torch.zeros(problem.n_cols, dtype=problem.dtype, device=problem.device)
        self.col = torch.zeros_like(self.g)
        self.n_builds = 0

    def cold_start(self) -> None:
        """The first column update from ``f = ε log a`` (SwAV's and SeLa's start), then a row update."""
        self.g = _exact_column_update(self.p, self.p.eps * torch.log(self.p.a), self.chunk_size)
        self.row_update()

    def warm_start(self, g: torch.Tensor) -> None:
        self.g = _normalised(g, self.positive)
        self.row_update()

    def row_update(self) -> None:
        self.f, self.col = _row_pass(self.p, self.g, self.chunk_size)

    def column_sums(self) -> torch.Tensor:
        return self.col

    def column_update(self) -> None:
        """``g += ε (log b − log colsum)`` (the exact update; a floored step for underflowed columns)."""
        step = self.log_b - torch.log(self.col.clamp(min=self.floor))
        self.g = _normalised(self.g + self.p.eps * step, self.positive)

    def check(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(error, values to read)``: the column error, as a 1-vector."""
        error = _column_error(self.column_sums(), self.p)
        return error, error.reshape(1)

    def absorb(self) -> None:  # pragma: no cover - never called (absorbs is False)
        raise RuntimeError("the log operator has nothing to absorb")

    def potentials(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.f, self.g

    def take_plan(self) -> torch.Tensor:
        p = self.p
        return p.a[:, None] * torch.softmax((p.scores.to(p.dtype) + self.g[None, :]) / p.eps, dim=1)


class _KernelOperator(_LogOperator):
    """Scaling iterates ``P = diag(u) Kmat diag(v)`` on the cached ``Kmat = exp((S + F + G)/ε)``.

    ``f = F + ε log u`` and ``g = G + ε log v``. Each row of ``Kmat`` has its largest entry, 1, on a
    column of positive mass, and ``e^-L <= v <= e^L`` there, so ``Kmat v >= e^-L``: the row update never
    divides by 0.
    Per iteration: ``u = a / (Kmat v)``, ``ktu = Kmat^T u`` (all-reduced), ``v = b / ktu``; the column
    sums ``v ⊙ ktu`` are formed only when a check or the result needs them.
    """

    absorbs = True

    def __init__(self, problem: AssignmentProblem, chunk_size: int | None, kernel: torch.Tensor) -> None:
        super().__init__(problem, chunk_size)
        p = problem
        self.kernel = kernel  # (n_local, K) buffer in the compute dtype
        self.u = p.a.clone()
        self.v = self.positive.to(p.dtype)
        self.ktu = torch.zeros(p.n_cols, dtype=p.dtype, device=p.device)
        self.clamp = 40.0 if p.dtype == torch.float32 else 300.0
        self.ones = torch.ones_like(self.v)
        self.cpu_blocks = None
        if p.device.type == "cpu" and p.n_local:
            # fused over row blocks that stay in cache: Kmat is read from memory once per iteration
            item = torch.finfo(p.dtype).bits // 8
            rows = max(16, (3 << 20) // max(1, p.n_cols * item))
            if rows < p.n_local:
                self.cpu_blocks = [(self.kernel[i : i + rows], self.kernel[i : i + rows].T, slice(i, i + rows))
                                   for i in range(0, p.n_local, rows)]
        self.kernel_t = self.kernel.T

    def _build(self, g: torch.Tensor | None) -> None:
        """Absorbed state: ``G = g`` (``None``: 0), the kernel rebuilt from the scores, ``v = 1``, and the
        row update ``u = a / rowsum`` done (``ktu = Kmat^T u``)."""
        if g is None and self.p.all_columns_positive:
            self.g = torch.zeros_like(self.v)
            self.f, row_sums = _build_kernel(self.p, None, self.chunk_size, self.kernel)  # F
        else:
            self.g = _normalised(torch.zeros_like(self.v) if g is None else g, self.positive)  # G
            self.f, row_sums = _build_kernel(self.p, self.g, self.chunk_size, self.kernel)
        self.v = self.positive.to(self.p.dtype)
        self.u = torch.div(self.p.a, row_sums)
        ktu = torch.mv(self.kernel_t, self.u) if self.p.n_local else torch.zeros_like(self.v)
        self.ktu = self.p.comm.all_reduce_(ktu)
        self.n_builds += 1

    def cold_start(self) -> None:
        """The first column update from ``f = ε log a`` with one exp() pass.

        The kernel is built at G = 0 (``Kmat_ik = exp(S_ik/ε − M_i)``, M_i the row's max); then
        ``Σ_i a_i exp(S_ik/ε) = Σ_i w_i Kmat_ik`` with ``log w_i = log a_i + M_i``, shifted by the
        global max of log w, and the column update is ``v ∝ b / (Kmat^T w)``, scaled to max 1 (the
        global shift cancels). One matrix-vector product and two all-reduces of K floats; a column
        sum below the floor takes the floored step (see the module docstring).
        """
        p, eps = self.p, self.p.eps
        self._build(None)
        if p.n_local:
            log_w = torch.log(p.a) - self.f / eps
            top = p.comm.all_reduce_(log_w.amax().reshape(1), op="max")
            col = torch.mv(self.kernel_t, torch.exp(log_w - top))
        else:
            p.comm.all_reduce_(torch.full((1,), -math.inf, dtype=p.dtype, device=p.device), op="max")
            col = torch.zeros_like(self.v)
        ratio = p.b / p.comm.all_reduce_(col).clamp_(min=self.floor)
        ratio.div_(ratio.amax()).clamp_(min=math.exp(-self.clamp))
        self.v = ratio if p.all_columns_positive else torch.where(self.positive, ratio, torch.zeros_like(ratio))
        self.row_update()

    def warm_start(self, g: torch.Tensor) -> None:
        self._build(g)

    def row_update(self) -> None:
        """``u = a / (Kmat v)`` and ``ktu = Kmat^T u`` (all-reduced)."""
        p = self.p
        if self.cpu_blocks is not None:
            for i, (block, block_t, rows) in enumerate(self.cpu_blocks):
                u = torch.div(p.a[rows], torch.mv(block, self.v), out=self.u[rows])
                if i == 0:
                    ktu = torch.mv(block_t, u)
                else:
                    ktu.addmv_(block_t, u)
        elif p.n_local:
            torch.div(p.a, torch.mv(self.kernel, self.v), out=self.u)
            ktu = torch.mv(self.kernel_t, self.u)
        else:
            ktu = torch.zeros_like(self.v)
        self.ktu = p.comm.all_reduce_(ktu)

    def column_sums(self) -> torch.Tensor:
        return self.v * self.ktu

    def column_update(self) -> None:
        """``v = b / (Kmat^T u)``, floored and clamped to ``[e^-L, e^L]`` (0 on columns of zero mass)."""
        v = torch.div(self.p.b, self.ktu.clamp(min=self.floor))
        v.clamp_(math.exp(-self.clamp), math.exp(self.clamp))
        self.v = v if self.p.all_columns_positive else torch.where(self.positive, v, torch.zeros_like(v))

    def check(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(error, [error, max v, min v])``: one read tells the host both whether to stop and
        whether ``|log v|`` exceeds τ (absorb)."""
        error = _column_error(self.column_sums(), self.p, self.ones)
        v = self.v if self.p.all_columns_positive else torch.where(self.positive, self.v, torch.ones_like(self.v))
        low, high = torch.aminmax(v)
        return error, torch.stack([error, high, low])

    def absorb(self) -> None:
        """``G += ε log v``, rebuild the kernel: the same plan, with ``u = a``, ``v = 1`` again."""
        self._build(self.g + self.p.eps * torch.log(self.v))

    def potentials(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(F + ε log u, G + ε log v)``, shifted like the log operator's (max g = 0)."""
        eps = self.p.eps
        g = self.g + eps * torch.log(self.v)
        shift = (g if self.p.all_columns_positive else torch.where(self.positive, g, torch.full_like(g, -math.inf))).amax()
        return self.f + eps * torch.log(self.u) + shift, g - shift

    def take_plan(self) -> torch.Tensor:
        """The plan ``diag(u) Kmat diag(v)``, made in place in the kernel's memory."""
        plan, self.kernel, self.kernel_t, self.cpu_blocks = self.kernel, None, None, None
        return plan.mul_(self.u[:, None]).mul_(self.v[None, :])
