"""Entropic Sinkhorn-Knopp solver: log-domain exact, kernel-mode fast, rows sharded over ranks.

Math (see :mod:`otlearn.ot.problem`). With ``P_ik = exp((S_ik + f_i + g_k) / ε)``:

* column update (global): ``g_k = ε log b_k − ε logsumexp_i((S_ik + f_i) / ε)``, the sum over i
  spanning all ranks (an all-reduced per-column MAX, then an all-reduced SUM: K floats each);
* row update (local): ``f_i = ε log a_i − ε logsumexp_k((S_ik + g_k) / ε)``.

An iteration is a column update followed by a row update, so the plan always has exact rows and
the convergence error ``max_k |colsum_k / b_k − 1|`` (over columns with ``b_k > 0``) is read off the
global column sums that the next column update needs anyway. A cold start begins with a column
update from ``f = ε log a`` (as SwAV and SeLa do); a warm start begins with a row update from
``init_g``.

Two execution modes give the same iterates:

* ``"log"`` streams row chunks: each iteration is one exp() pass over the scores, extra memory
  O(chunk x K).
* ``"kernel"`` caches the stabilised kernel ``Kmat = exp((S + F + G) / ε)`` (rows summing to 1,
  so nothing overflows) and iterates scaling vectors ``u, v`` with ``P = diag(u) Kmat diag(v)``:
  two matrix-vector products and one all-reduce of K floats per iteration, no exp(). Whenever a
  scaling leaves ``[e^-τ, e^τ]`` or a column sum underflows, the scalings are absorbed into the
  potentials and the kernel is rebuilt from the scores in the log domain, which keeps the
  log-domain's safety. Extra memory: one (n_local, K) buffer in the compute dtype.

``"auto"`` picks the kernel when that buffer fits ``max_kernel_bytes``.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field, replace
from typing import Literal

import torch
import torch.distributed as dist

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
        errors: column-marginal error at each check, in order.
        problem: the solved :class:`AssignmentProblem` (holds a reference to the scores).
        mode: the execution mode that ran ("kernel" or "log").
        n_rebuilds: how many times the kernel was rebuilt from the scores (log steps).
    """

    f: torch.Tensor
    g: torch.Tensor
    n_iters: int
    converged: bool
    errors: list[float]
    problem: AssignmentProblem = field(repr=False)
    mode: str = "log"
    n_rebuilds: int = 0

    @property
    def error(self) -> float:
        """The last measured column-marginal error (``nan`` if never measured)."""
        return self.errors[-1] if self.errors else float("nan")

    def plan(self) -> torch.Tensor:
        """(n_local, K) transport plan ``P_ik = exp((S_ik + f_i + g_k) / ε)``; all entries sum to 1.

        Since ``f`` is the exact row update of ``g``, this equals ``a_i softmax_k((S_ik + g_k)/ε)``,
        which is how it is computed: no cancellation between large ``S`` and ``f``.
        """
        p = self.problem
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
            iterations (fixed-iteration mode, as SwAV and OptVQ do).
        max_iter: most column updates; reaching it with ``tol`` set warns.
        check_every: measure the error every this many iterations (default 1 on CPU, 10 on GPU,
            where each check synchronises the device).
        mode: "auto", "kernel" or "log" (see the module docstring).
        chunk_size: rows per chunk in streamed passes (default: about 2**20 elements per chunk).
        max_kernel_bytes: "auto" caches the kernel when it needs at most this many bytes.
        log_scaling_bound: τ, the largest ``|log u|``, ``|log v|`` before absorption (kernel mode).
        eps_scaling: ε-scaling factor in (0, 1), or ``None``. Sinkhorn needs about
            ``range(S) / ε`` iterations, which is hopeless for tiny ε (near-exact assignment). With
            a factor, the solver first solves at ε₀ = the global score range, then at
            ``ε₀·factor, ε₀·factor², …`` down to ε, each stage warm-started from the previous g
            (intermediate stages stop at ``max(tol, 1e-2)``, each within ``max_iter`` iterations).
    """

    tol: float | None = 1e-3
    max_iter: int = 1000
    check_every: int | None = None
    mode: Mode = "auto"
    chunk_size: int | None = None
    max_kernel_bytes: int = 2 * 1024**3
    log_scaling_bound: float = 20.0
    eps_scaling: float | None = None

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

    def __call__(self, problem: AssignmentProblem, init_g: torch.Tensor | None = None) -> SinkhornResult:
        """Solve ``problem``, warm-starting from ``init_g`` (K,) when given."""
        if self.eps_scaling is None:
            return self._solve(problem, init_g)
        stage_eps = _eps_stages(problem, self.eps_scaling)
        n_iters, errors = 0, []
        stage_solver = replace(self, tol=None if self.tol is None else max(self.tol, 1e-2))
        for eps in stage_eps:
            stage = replace(problem, eps=eps)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", SinkhornConvergenceWarning)
                result = stage_solver._solve(stage, init_g)
            init_g, n_iters, errors = result.g, n_iters + result.n_iters, errors + result.errors
        result = self._solve(problem, init_g)
        result.n_iters += n_iters
        result.errors = errors + result.errors
        return result

    def _solve(self, problem: AssignmentProblem, init_g: torch.Tensor | None) -> SinkhornResult:
        if init_g is not None:
            if init_g.shape != (problem.n_cols,):
                raise ValueError(f"init_g must have shape (K,) = ({problem.n_cols},), got {tuple(init_g.shape)}")
            init_g = init_g.to(device=problem.device, dtype=problem.dtype)
            if bool(torch.isnan(init_g).any()) or bool((init_g == math.inf).any()):
                raise ValueError("init_g contains NaN or +inf; pass the g of a previous SinkhornResult")
            init_g = torch.where(problem.b > 0, init_g, torch.full_like(init_g, -math.inf))
        mode = self._pick_mode(problem)
        state = _KernelState(problem, self) if mode == "kernel" else _LogState(problem, self)
        check_every = self.check_every or (10 if problem.device.type == "cuda" else 1)

        if init_g is None:
            state.cold_start()
            n_iters = 1
        else:
            state.set_g(init_g)
            n_iters = 0
        errors: list[float] = []
        converged = False
        while True:
            col_sums = state.row_update()  # rows exact; global column sums of this plan
            last = n_iters >= self.max_iter
            if self.tol is not None and (last or n_iters % check_every == 0):
                err = _column_error(col_sums, problem.b)
                errors.append(err)
                if err <= self.tol:
                    converged = True
                    break
            if last:
                break
            state.column_update(col_sums)
            n_iters += 1
        if self.tol is not None and not converged:
            warnings.warn(
                f"Sinkhorn did not converge: column-marginal error {errors[-1]:.3g} > tol {self.tol:g} "
                f"after {n_iters} iterations (eps={problem.eps:g}); raise max_iter or eps, or warm-start",
                SinkhornConvergenceWarning,
                stacklevel=2,
            )
        f, g = state.potentials()
        return SinkhornResult(f, g, n_iters, converged, errors, problem, mode, state.n_rebuilds)

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
    group: dist.ProcessGroup | None = None,
    dtype: torch.dtype = torch.float32,
    mode: Mode = "auto",
    chunk_size: int | None = None,
    check_every: int | None = None,
    eps_scaling: float | None = None,
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
        mode, chunk_size, check_every, eps_scaling: see :class:`SinkhornSolver`.

    Returns:
        A :class:`SinkhornResult`.
    """
    problem = AssignmentProblem.build(scores, eps, a=a, b=b, group=group, dtype=dtype)
    solver = SinkhornSolver(
        tol=tol, max_iter=max_iter, check_every=check_every, mode=mode, chunk_size=chunk_size, eps_scaling=eps_scaling
    )
    return solver(problem, init_g=init_g)


def _eps_stages(problem: AssignmentProblem, factor: float) -> list[float]:
    """ε₀ = global range of the scores, then ε₀·factor^t while still above the target ε."""
    local = torch.zeros(2, dtype=torch.float64, device=problem.device)
    if problem.n_local:
        local[0] = problem.scores.max().double()
        local[1] = -problem.scores.min().double()
    else:
        local.fill_(-math.inf)
    problem.reducer.max_(local)
    eps = float(local.sum())
    stages = []
    while eps > problem.eps:
        stages.append(eps)
        eps *= factor
    return stages


def problem_log_a(problem: AssignmentProblem) -> torch.Tensor:
    """(n_local,) ``ε log a``: the row potential a cold start's first column update uses."""
    return problem.eps * torch.log(problem.a)


def _column_error(col_sums: torch.Tensor, b: torch.Tensor) -> float:
    """``max_k |colsum_k / b_k − 1|`` over columns with ``b_k > 0``."""
    positive = b > 0
    return float(((col_sums[positive] / b[positive]) - 1.0).abs().max())


class _LogState:
    """Log-domain iterates: potentials ``f`` (n_local,) and ``g`` (K,), streamed in row chunks."""

    def __init__(self, problem: AssignmentProblem, solver: SinkhornSolver) -> None:
        self.p = problem
        self.chunk_size = solver.chunk_size
        self.f = torch.zeros(problem.n_local, dtype=problem.dtype, device=problem.device)
        self.g = torch.zeros(problem.n_cols, dtype=problem.dtype, device=problem.device)
        self.log_b = torch.log(problem.b)
        self.n_rebuilds = 0

    def set_g(self, g: torch.Tensor) -> None:
        self.g = g.clone()

    def potentials(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.f, self.g

    def column_update_log(self, f: torch.Tensor) -> None:
        """Exact ``g_k = ε log b_k − ε logsumexp_i((S_ik + f_i)/ε)`` in one streamed pass.

        Each rank keeps a running per-column max and a sum rescaled to it (online logsumexp);
        ranks then all-reduce the maxima (MAX), rescale their sums to the global max and
        all-reduce those (SUM): 2K floats, and a single exp() pass over the scores.
        """
        p, eps = self.p, self.p.eps
        col_max = torch.full((p.n_cols,), -math.inf, dtype=p.dtype, device=p.device)
        col_sum = torch.zeros(p.n_cols, dtype=p.dtype, device=p.device)
        for rows in p.row_blocks(self.chunk_size):
            z = p.scores[rows].to(p.dtype) + f[rows, None]
            new_max = torch.maximum(col_max, z.amax(0))
            safe_max = torch.where(torch.isfinite(new_max), new_max, torch.zeros_like(new_max))
            col_sum *= torch.exp((col_max - safe_max) / eps)
            col_sum += z.sub_(safe_max).div_(eps).exp_().sum(0)
            col_max = new_max
        global_max = p.reducer.max_(col_max.clone())
        finite_max = torch.where(torch.isfinite(global_max), global_max, torch.zeros_like(global_max))
        local_safe = torch.where(torch.isfinite(col_max), col_max, finite_max)
        col_sum *= torch.exp((local_safe - finite_max) / eps)
        p.reducer.sum_(col_sum)
        g = self.log_b * eps - finite_max - eps * torch.log(col_sum)
        g = torch.where(p.b > 0, g, torch.full_like(g, -math.inf))
        # potentials are defined up to g - c, f + c: keep max g = 0 so |f| stays near |S| and
        # (S + f + g) / ε keeps its float precision
        self.g = g - g[p.b > 0].max()

    def _row_pass(self, g: torch.Tensor, kernel: torch.Tensor | None) -> torch.Tensor:
        """Exact row update from ``g``; returns the global column sums of the new plan.

        When ``kernel`` is given, it is filled with ``exp((S + F + g)/ε)`` normalised so that each
        row sums to 1 (``F`` the row normaliser), and ``self.f`` holds that ``F`` (without ε log a).
        """
        p, eps = self.p, self.p.eps
        col_sums = torch.zeros(p.n_cols, dtype=p.dtype, device=p.device)
        g_scaled = g / eps
        for rows in p.row_blocks(self.chunk_size):
            block = p.scores[rows]
            if block.dtype.itemsize > g_scaled.dtype.itemsize:
                block = block.to(p.dtype)  # float64 scores, float32 compute
            z = torch.add(g_scaled, block, alpha=1.0 / eps)  # (S + g)/ε; promotes half inputs to the compute dtype
            row_max = z.amax(1, keepdim=True)
            z.sub_(row_max).exp_()
            row_sum = z.sum(1)
            log_norm = row_max.squeeze(1) + torch.log(row_sum)  # logsumexp_k((S+g)/ε)
            a_rows = p.a[rows]
            if kernel is None:
                self.f[rows] = eps * (torch.log(a_rows) - log_norm)
                col_sums += z.T @ (a_rows / row_sum)
            else:
                z.div_(row_sum[:, None])
                kernel[rows] = z
                self.f[rows] = -eps * log_norm
                col_sums += z.T @ a_rows
        return p.reducer.sum_(col_sums)

    def row_update(self) -> torch.Tensor:
        return self._row_pass(self.g, None)

    def cold_start(self) -> None:
        """The first column update, from ``f = ε log a`` (the row potential SwAV and SeLa start from)."""
        self.column_update_log(problem_log_a(self.p))

    def column_update(self, col_sums: torch.Tensor) -> None:
        """``g += ε (log b − log colsum)``: the column update, from sums the row pass gave."""
        if bool((col_sums[self.p.b > 0] <= torch.finfo(self.p.dtype).tiny).any()):
            self.column_update_log(self.f)  # a column underflowed: redo it exactly
            return
        step = self.log_b - torch.log(col_sums)
        self.g = torch.where(self.p.b > 0, self.g + self.p.eps * step, self.g)


class _KernelState(_LogState):
    """Kernel-mode iterates: ``P = diag(u) Kmat diag(v)`` with ``Kmat = exp((S + F + G)/ε)``.

    ``f = F + ε log u`` and ``g = G + ε log v``. ``Kmat`` rows sum to 1 at each rebuild, so
    ``Kmat <= 1`` and no exp() can overflow; rebuilds happen when ``|log u|`` or ``|log v|``
    exceed τ or a column sum underflows.
    """

    def __init__(self, problem: AssignmentProblem, solver: SinkhornSolver) -> None:
        super().__init__(problem, solver)
        self.kernel = torch.empty(problem.n_local, problem.n_cols, dtype=problem.dtype, device=problem.device)
        self.u = problem.a.clone()
        self.v = torch.ones(problem.n_cols, dtype=problem.dtype, device=problem.device)
        self.bound = solver.log_scaling_bound
        self.stale = True  # kernel not built for the current G yet
        self.tiny = torch.finfo(problem.dtype).tiny
        self.device_is_cpu = problem.device.type == "cpu"
        item = torch.finfo(problem.dtype).bits // 8
        block_rows = max(16, (3 << 20) // max(1, problem.n_cols * item))  # about 3 MiB of kernel per block
        self.blocks = [slice(i, min(problem.n_local, i + block_rows)) for i in range(0, problem.n_local, block_rows)]

    def set_g(self, g: torch.Tensor) -> None:
        super().set_g(g)
        self.stale = True

    def _current_g(self) -> torch.Tensor:
        if self.stale:
            return self.g
        return self.g + self.p.eps * torch.log(self.v)

    def potentials(self) -> tuple[torch.Tensor, torch.Tensor]:
        eps = self.p.eps
        return self.f + eps * torch.log(self.u), self.g + eps * torch.log(self.v)

    def column_update_log(self, f: torch.Tensor) -> None:
        super().column_update_log(f)
        self.stale = True

    def cold_start(self) -> None:
        """The first column update from ``f = ε log a`` with one exp() pass instead of two.

        The kernel is built at g = 0 (rows normalised: ``Kmat_ik = exp(S_ik/ε − L_i)``, L_i the row's
        log-normaliser), then ``Σ_i a_i exp(S_ik/ε) = Σ_i w_i Kmat_ik`` with ``log w_i = log a_i + L_i``,
        shifted by the global max of log w: one matrix-vector product and two all-reduces of K
        floats. Rows whose shifted weight underflows contribute at most N·e^-87 in total, so a
        column sum below ``N·1e-30`` (float32) falls back to the exact streamed update.
        """
        p, eps = self.p, self.p.eps
        if not bool((p.b > 0).all()):
            super().cold_start()  # zero-mass columns: the kernel must be built with their g = -inf
            return
        zeros = torch.zeros_like(self.v)
        self._row_pass(zeros, self.kernel)  # self.f = F = -ε L
        self.n_rebuilds += 1
        log_w = torch.log(p.a) - self.f / eps
        top = log_w.max().reshape(1) if p.n_local else torch.full((1,), -math.inf, dtype=p.dtype, device=p.device)
        top = p.reducer.max_(top)
        weights = torch.exp(log_w - top)
        col = torch.mv(self.kernel.T, weights) if p.n_local else torch.zeros_like(self.v)
        col = p.reducer.sum_(col)
        floor = p.n_global * (1e-30 if p.dtype == torch.float32 else 1e-290)
        if not bool((col > floor).all()):
            super().cold_start()  # exact, streamed; the kernel is rebuilt at the next row update
            self.stale = True
            return
        g = eps * (torch.log(p.b) - top - torch.log(col))
        g = g - g.max()
        self.g = zeros  # G: what the kernel was built with
        self.v = torch.exp(g / eps)
        self.u = p.a.clone()
        self.stale = bool((g.abs() > self.bound * eps).any())  # v too far from 1: absorb at once
        if self.stale:
            self.g = g
            self.v = torch.ones_like(self.v)

    def _rebuild(self) -> torch.Tensor:
        """Absorb ``v`` into ``G``, rebuild the kernel from the scores; returns column sums."""
        self.g = self._current_g()
        col_sums = self._row_pass(self.g, self.kernel)
        self.u = self.p.a.clone()
        self.v = torch.ones_like(self.v)
        self.stale = False
        self.n_rebuilds += 1
        return col_sums

    def row_update(self) -> torch.Tensor:
        if self.stale:
            return self._rebuild()
        # u = a / (Kmat v); column sums = v * (Kmat^T u). Kmat rows sum to 1 at a rebuild and v is
        # bounded by e^±τ, so Kmat v cannot underflow.
        col_sums = torch.zeros_like(self.v)
        if self.device_is_cpu:
            # fused over row blocks that stay in cache: Kmat is read from memory once per iteration
            for rows in self.blocks:
                block = self.kernel[rows]
                u = torch.div(self.p.a[rows], torch.mv(block, self.v), out=self.u[rows])
                col_sums.addmv_(block.T, u)
        elif self.p.n_local:
            torch.div(self.p.a, torch.mv(self.kernel, self.v), out=self.u)
            col_sums = torch.mv(self.kernel.T, self.u)
        col_sums = self.p.reducer.sum_(col_sums)
        return col_sums.mul_(self.v)

    def column_update(self, col_sums: torch.Tensor) -> None:
        positive = self.p.b > 0
        if bool((col_sums[positive] <= self.tiny).any()):
            # a column underflowed in the cached kernel: exact log-domain column update
            self.column_update_log(self.f + self.p.eps * torch.log(self.u))
            return
        ratio = torch.where(positive, self.p.b / col_sums, torch.zeros_like(col_sums))
        self.v.mul_(ratio)
        log_v = torch.log(self.v[positive])
        if bool((log_v.abs() > self.bound).any()):
            self.stale = True  # absorb at the next row update
            self.g = self.g + self.p.eps * torch.log(self.v)
            self.v = torch.ones_like(self.v)
