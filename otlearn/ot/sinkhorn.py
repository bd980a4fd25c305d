"""Entropic Sinkhorn-Knopp solver: one loop over a log-domain or kernel operator, rows sharded over ranks.

Math (see :mod:`otlearn.ot.problem` and :mod:`otlearn.ot.columns`). With ``P_ik = exp((S_ik + f_i + g_k) / ε)``:

* row update (local): ``f_i = ε log a_i − ε logsumexp_k((S_ik + g_k) / ε)``;
* column update (global): ``g ← g + r(g)`` with ``r = ε (log b − log c)`` for the hard marginal, or
  ``r = θ ε (log b − log c) − (1 − θ) g``, ``θ = ρ/(ρ + ε)``, for the relaxed one (``b_penalty = ρ``); ``c``
  are the global column sums (an all-reduce of K floats).

Every iterate has exact rows, and the convergence error (``max_k |c_k / t_k − 1|``, ``t = b`` when hard)
is read off the column sums the next update needs anyway. A cold start begins with the column
update from ``f = ε log a`` (as SwAV and SeLa do); a warm start from ``init_g``.

Acceleration (default with a tolerance): Anderson mixing of the column updates, each step accepted
only if the concave semi-dual objective does not decrease, otherwise the plain step is taken next
(:mod:`otlearn.ot.anderson`). Fixed-iteration mode (``tol=None``, SwAV's and OptVQ's few iterations)
runs the plain iteration unless ``acceleration="anderson"``.

Host synchronisation. The loop never asks the device a question between checks: the accept test,
the fallback and the history reset of acceleration are device tensors. Tolerance mode reads one
small vector per check (every ``check_every`` iterations; default 1 on the CPU, 10 on a GPU): the
error and, for the kernel, the range of its scalings (whether to absorb). Fixed-iteration mode reads
nothing; the kernel then absorbs unconditionally every ``check_every`` iterations (default 10).
Safety without reads: a column sum below a floor (1e-30 in float32, 1e-290 in float64) takes the
step the floor allows, and ``|log v|`` is clamped at L (40 in float32, 300 in float64). Such a step
moves the potential towards, never past, its exact update, so it still increases the dual
objective; these clamps bind only where float precision is lost.

Defaults for hard problems. ``dtype="auto"`` computes in float32 unless the scores' magnitude against
ε is beyond what float32 resolves at the tolerance (``2^-24 · max|S| / ε > tol / 10``), then in float64.
``eps_scaling="auto"`` ε-scales (factor 1/2 from ε₀ = range(S)) when ``range(S) / ε`` exceeds ``max_iter``,
the order of the iterations Sinkhorn needs at that ε. The result says what was chosen
(``result.dtype``, ``result.stages``).

Precision. The solver runs with autocast disabled, in its compute dtype (float32 or float64)
whatever the input dtype and whatever context calls it (Lightning's mixed precision runs training
steps under autocast, which would otherwise compute the matrix products in 16 bits). It is also
excluded from ``torch.compile`` tracing (``torch.compiler.disable``): a compiled model calls it
eagerly.
"""
from __future__ import annotations

import math
import warnings
import weakref
from dataclasses import dataclass, field, fields, replace
from typing import Literal, Union

import torch
import torch.distributed as dist

from otlearn.comm import Communicator, host_values
from otlearn.ot.anderson import AndersonMixer
from otlearn.ot.columns import ColumnMarginal
from otlearn.ot.operators import KernelOperator, LogOperator, floor_of
from otlearn.ot.precision import full_precision
from otlearn.ot.problem import AssignmentProblem, DtypeArg

Mode = Literal["auto", "kernel", "log"]
Acceleration = Literal["auto", "anderson", "none"]
EpsScaling = Union[float, None, Literal["auto"]]

FLOAT32_UNIT = 2.0**-24
SMALL_PROBLEM = 1 << 16  # n_local x K below which "auto" acceleration waits
SMALL_PLAIN_ITERS = 5
AUTO_EPS_FACTOR = 0.5


class SinkhornConvergenceWarning(RuntimeWarning):
    """The solver stopped at ``max_iter`` before reaching ``tol``."""


@dataclass
class SinkhornResult:
    """Potentials and diagnostics of one solve; plans and labels are derived on demand.

    Attributes:
        f: (n_local,) row potentials of this rank (``-inf`` for rows of zero mass).
        g: (K,) column potentials, identical on every rank (``-inf`` for columns of zero mass).
        n_iters: row passes performed (every proposed step counts, rejected ones included), over all stages.
        converged: whether the error reached ``tol`` (False in fixed-iteration mode).
        errors: ``list[float]``, the error read at each check, in order (host floats, read anyway by the
            checks; empty in fixed-iteration mode, which reads nothing).
        mode: the operator that ran ("kernel" or "log").
        n_rebuilds: kernel builds from the scores (cold/warm start and absorptions; 0 in log mode).
        final_error: 0-dim device tensor, the error of the returned plan (no sync until read).
        kept_plan: the plan, when the solver ran with ``return_plan=True``.
        dtype: the compute dtype that ran (float64 when ``dtype="auto"`` chose it).
        stages: the ε of each stage, ending with the problem's ε (more than one when ε-scaled).
        acceleration: "anderson" or "none".
        rejected: 0-dim device tensor, accelerated steps rejected by the safeguard (None without acceleration).

    The result does not keep the (n_local, K) scores alive unless the solver was asked to
    (``keep_scores=True``; the functional :func:`sinkhorn` does, so that ``sinkhorn(S, eps).plan()``
    works on a temporary): it holds the problem's masses and a weak reference to the scores, and
    :attr:`problem`, :meth:`plan` and the assignments need the scores still alive.
    """

    f: torch.Tensor
    g: torch.Tensor
    n_iters: int
    converged: bool
    errors: list[float]
    mode: str = "log"
    n_rebuilds: int = 0
    final_error: torch.Tensor | None = field(default=None, repr=False)
    kept_plan: torch.Tensor | None = field(default=None, repr=False)
    dtype: torch.dtype = torch.float32
    stages: list[float] = field(default_factory=list)
    acceleration: str = "none"
    rejected: torch.Tensor | None = field(default=None, repr=False)
    _kept_problem: AssignmentProblem | None = field(default=None, repr=False, compare=False)
    _shell: AssignmentProblem | None = field(default=None, repr=False, compare=False)
    _scores_ref: weakref.ref | None = field(default=None, repr=False, compare=False)

    def _hold(self, problem: AssignmentProblem, keep_scores: bool) -> "SinkhornResult":
        """Keep ``problem`` (``keep_scores``) or only its masses and a weak reference to its scores."""
        if keep_scores:
            self._kept_problem, self._shell, self._scores_ref = problem, None, None
        else:
            meta = torch.empty(problem.scores.shape, dtype=problem.scores.dtype, device="meta")
            self._kept_problem, self._shell = None, replace(problem, scores=meta)
            self._scores_ref = weakref.ref(problem.scores)
        return self

    @property
    def problem(self) -> AssignmentProblem:
        """The solved :class:`AssignmentProblem` (needs its scores alive, see the class docstring)."""
        if self._kept_problem is not None:
            return self._kept_problem
        scores = None if self._scores_ref is None else self._scores_ref()
        if scores is None or self._shell is None:
            raise RuntimeError(
                "the scores of this SinkhornResult were released (a solver's result keeps no reference to them); "
                "keep the scores tensor alive while using the result, or solve with SinkhornSolver(keep_scores=True)"
            )
        return replace(self._shell, scores=scores)

    @property
    def error(self) -> float:
        """The error of the returned plan, as a float (one host read)."""
        if self.final_error is None:
            return self.errors[-1] if self.errors else float("nan")
        return float(host_values(self.final_error.reshape(1))[0])

    @property
    def n_rejected(self) -> int:
        """Accelerated steps the safeguard rejected (one host read; 0 without acceleration)."""
        return 0 if self.rejected is None else int(host_values(self.rejected.reshape(1))[0])

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
        tol: stop when the error ``max_k |c_k / t_k − 1|`` is at most ``tol``; ``None`` runs exactly
            ``max_iter`` iterations (fixed-iteration mode, as SwAV and OptVQ do) and reads nothing.
        max_iter: most row passes per stage; reaching it with ``tol`` set warns.
        check_every: with ``tol``, measure the error every this many iterations (default 1 on the
            CPU, 10 on a GPU, where each check is one host synchronisation); with ``tol=None``, the
            kernel operator absorbs its scalings every this many iterations (default 10).
        mode: "auto", "kernel" or "log" (see :mod:`otlearn.ot.operators`).
        chunk_size: rows per chunk in streamed passes and per fused row block of the kernel's CPU iteration
            (default: about 2**20 scores per streamed chunk, about 3 MiB of kernel per CPU block).
        max_kernel_bytes: "auto" caches the kernel when it needs at most this many bytes.
        log_scaling_bound: τ, the ``|log v|`` above which a check absorbs (kernel mode).
        eps_scaling: "auto" (default; see the module docstring), a factor in (0, 1), or ``None``.
            Sinkhorn needs about ``range(S) / ε`` iterations, hopeless for tiny ε (near-exact
            assignment). With a factor, the solver first solves at ε₀ = the global score range, then at
            ``ε₀·factor, ε₀·factor², …`` down to ε, each stage warm-started from the previous g
            (every stage stops at ``tol``, each within ``max_iter`` iterations: a stage that starts from
            a looser one can stall where the plan is nearly a vertex of the LP; measured on bfloat16
            scores of 3e4 at ε = 1e-3, stages to 1e-2 left the last one stuck at 8e-3, stages to tol
            converge in 15–35 iterations each).
            Fixed-iteration mode never ε-scales on "auto".
        acceleration: "auto" (default: Anderson with a tolerance, plain in fixed-iteration mode; on a
            problem of fewer than 65,536 scores (N x K over all ranks), where Anderson's own step costs as much as an iteration,
            it starts after 5 plain iterations), "anderson" (from the first iteration, also with
            ``tol=None``) or "none" (plain Sinkhorn).
        memory: Anderson's memory m (differences kept).
        mixing: Anderson's mixing β: the step is ``β r − (ΔG + β ΔR) γ`` (β = 1: plain Anderson; 1.3, the
            default, over-relaxes the extrapolated step; the safeguard's fallback step is always β = 1).
        return_plan: keep the (n_local, K) plan in the result. The kernel operator then turns its
            cached kernel into ``diag(u) Kmat diag(v)`` in place (one multiply pass, no exp(), no new
            memory); otherwise :meth:`SinkhornResult.plan` recomputes it from ``g`` (one exp pass).
        reuse_kernel: keep the kernel buffer between calls and reuse it for the next problem of the
            same shape, dtype and device (for a solver called every training step, e.g. by the
            quantizer). On the CPU a fresh N x K buffer per call costs page faults (glibc maps large
            allocations anew); the price is N x K memory held between calls.
        keep_scores: the result holds a strong reference to the problem's scores (default: a weak one,
            so a kept result does not pin an N x K bank; see :class:`SinkhornResult`).
    """

    tol: float | None = 1e-3
    max_iter: int = 1000
    check_every: int | None = None
    mode: Mode = "auto"
    chunk_size: int | None = None
    max_kernel_bytes: int = 2 * 1024**3
    log_scaling_bound: float = 20.0
    eps_scaling: EpsScaling = "auto"
    acceleration: Acceleration = "auto"
    memory: int = 5
    mixing: float = 1.3
    return_plan: bool = False
    reuse_kernel: bool = False
    keep_scores: bool = False
    _kernel_cache: torch.Tensor | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.eps_scaling != "auto" and self.eps_scaling is not None and not (
            isinstance(self.eps_scaling, (int, float)) and 0.0 < self.eps_scaling < 1.0
        ):
            raise ValueError(f"eps_scaling must be 'auto', a factor in (0, 1) or None, got {self.eps_scaling!r}")
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
        if self.acceleration not in ("auto", "anderson", "none"):
            raise ValueError(f"acceleration must be 'auto', 'anderson' or 'none', got {self.acceleration!r}")
        if not (isinstance(self.mixing, (int, float)) and 0.0 < self.mixing < 2.0):
            raise ValueError(f"mixing must be in (0, 2), got {self.mixing!r}")
        if not isinstance(self.memory, int) or not 1 <= self.memory <= 50:
            raise ValueError(f"memory must be an int in [1, 50], got {self.memory!r}")

    @property
    def accelerates(self) -> bool:
        """Whether solves run Anderson acceleration."""
        return self.acceleration == "anderson" or (self.acceleration == "auto" and self.tol is not None)

    @torch.compiler.disable
    def __call__(
        self, problem: AssignmentProblem, init_g: torch.Tensor | None = None, *, check_init_g: bool = True,
        keep_scores: bool | None = None,
    ) -> SinkhornResult:
        """Solve ``problem``, warm-starting from ``init_g`` (K,) when given.

        ``check_init_g=False`` skips the NaN/+inf check of ``init_g`` (its one host read), for callers
        that pass the ``g`` of a previous result (the quantizer, every step). ``keep_scores`` overrides
        the solver's setting for this call (the functional :func:`sinkhorn` keeps them).
        """
        keep = self.keep_scores if keep_scores is None else keep_scores
        problem = self._with_precision(problem)
        with full_precision(problem.device):
            if init_g is not None:
                init_g = _checked_init_g(problem, init_g, check_init_g)
            factor = self._eps_factor(problem)
            if factor is None:
                return self._solve(problem, init_g, self.return_plan)._hold(problem, keep)
            n_iters, errors, stages = 0, [], []
            for eps in _eps_stages(problem, factor):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", SinkhornConvergenceWarning)
                    result = self._solve(replace(problem, eps=eps), init_g, return_plan=False)
                init_g, n_iters, errors = result.g, n_iters + result.n_iters, errors + result.errors
                stages.append(eps)
            result = self._solve(problem, init_g, self.return_plan)
            result.n_iters += n_iters
            result.errors = errors + result.errors
            result.stages = stages + [problem.eps]
            return result._hold(problem, keep)

    def _with_precision(self, problem: AssignmentProblem) -> AssignmentProblem:
        """``dtype="auto"``: float64 when ``2^-24 · max|S| / ε > tol / 10`` (tol 1e-3 in fixed mode)."""
        if not problem.auto_dtype:
            return problem
        magnitude = problem.score_magnitude
        if math.isnan(magnitude):
            return problem
        tol = 1e-3 if self.tol is None else self.tol
        if FLOAT32_UNIT * max(magnitude / problem.eps, 1.0) > tol / 10:
            return problem.with_dtype(torch.float64)
        return problem

    def _eps_factor(self, problem: AssignmentProblem) -> float | None:
        if self.eps_scaling != "auto":
            return self.eps_scaling
        if self.tol is None or math.isnan(problem.score_range):
            return None
        return AUTO_EPS_FACTOR if problem.score_range / problem.eps > self.max_iter else None

    def _solve(self, problem: AssignmentProblem, init_g: torch.Tensor | None, return_plan: bool) -> SinkhornResult:
        """One stage at ``problem.eps``; the caller attaches the problem to the result (:meth:`SinkhornResult._hold`)."""
        mode = self._pick_mode(problem)
        op = KernelOperator(problem, self.chunk_size, self._kernel_buffer(problem)) if mode == "kernel" \
            else LogOperator(problem, self.chunk_size)
        marginal = ColumnMarginal(problem.b, problem.eps, problem.b_penalty, problem.all_columns_positive,
                                  floor_of(problem.dtype))
        relaxed = problem.b_penalty is not None
        # "auto" on a small problem (an iteration costs a few torch calls, like Anderson's own step) starts
        # plain and mixes from iteration SMALL_PLAIN_ITERS on: easy problems pay nothing for it
        mix_from = SMALL_PLAIN_ITERS if self.acceleration == "auto" and problem.n_global * problem.n_cols < SMALL_PROBLEM else 0
        mixer = rejected = None  # made when mixing starts
        fixed = self.tol is None
        every = self.check_every or (10 if fixed or problem.device.type != "cpu" else 1)
        absorb_above = math.exp(self.log_scaling_bound)
        op.start(init_g)
        n_iters = 1 if init_g is None else 0
        errors: list[float] = []
        converged = False
        error = None
        while True:
            last = n_iters >= self.max_iter
            if not fixed and (last or n_iters % every == 0):
                error = marginal.error(op.g if relaxed else None, op.col)
                err, *scalings = host_values(torch.stack([error, *op.scaling_range()]))  # the one read of a check
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
            g = op.g if relaxed else None
            residual = marginal.residual(g, op.col)
            if not self.accelerates or n_iters < mix_from:
                op.propose(residual, False)
                op.commit(None)
            else:
                if mixer is None:
                    mixer = AndersonMixer(problem.n_cols, self.memory, marginal.positive, problem.all_columns_positive,
                                          mixing=self.mixing)
                    rejected = torch.zeros((), dtype=torch.int64, device=problem.device)
                    slack = op.dual_slack()  # steps within rounding of D count as increases
                step, plain = mixer.step(residual)
                realised, row_change = op.propose(step, True)
                rejection = (row_change + marginal.dual_change(g, realised) < -slack) & ~plain
                op.commit(~rejection)
                mixer.record(realised, rejection)
                rejected += rejection
            n_iters += 1
            error = None
        if not fixed and not converged:
            warnings.warn(
                f"Sinkhorn did not converge: error {errors[-1]:.3g} > tol {self.tol:g} after {n_iters} iterations "
                f"(eps={problem.eps:g}, {problem.dtype}); raise max_iter or eps, or warm-start",
                SinkhornConvergenceWarning,
                stacklevel=4,
            )
        if error is None:
            error = marginal.error(op.g if relaxed else None, op.col)
        f, g = op.potentials()
        plan = op.take_plan() if return_plan else None
        if plan is not None and plan is self._kernel_cache:
            self._kernel_cache = None  # the buffer now belongs to the result
        return SinkhornResult(
            f, g, n_iters, converged, errors, mode=mode, n_rebuilds=op.n_builds, final_error=error, kept_plan=plan,
            dtype=problem.dtype, stages=[problem.eps], acceleration="anderson" if self.accelerates else "none",
            rejected=rejected,
        )

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
    b_penalty: float | None = None,
    init_g: torch.Tensor | None = None,
    group: dist.ProcessGroup | Communicator | None = None,
    dtype: DtypeArg = "auto",
    solver: SinkhornSolver | None = None,
    tol: float | None = 1e-3,
    max_iter: int = 1000,
    check_every: int | None = None,
    mode: Mode = "auto",
    chunk_size: int | None = None,
    max_kernel_bytes: int = 2 * 1024**3,
    log_scaling_bound: float = 20.0,
    eps_scaling: EpsScaling = "auto",
    acceleration: Acceleration = "auto",
    memory: int = 5,
    mixing: float = 1.3,
    return_plan: bool = False,
    keep_scores: bool = True,
) -> SinkhornResult:
    """Solve ``max_P <P, S> + ε H(P)`` with row marginal ``a`` and column marginal ``b`` (hard, or
    penalised by ``ρ KL(P^T 1 ‖ b)`` with ``b_penalty = ρ``).

    Args:
        scores: (n_local, K) scores of this rank's rows, any float dtype and device; larger is a
            better match (log-probabilities, negative costs, logits). Cost = −scores.
        eps: ε > 0. The plan is ``P_ik = exp((S_ik + f_i + g_k) / ε)``.
        a: (n_local,) row masses, default uniform over all rows of all ranks.
        b: (K,) column masses, default uniform; both are normalised to sum to 1.
        b_penalty: ρ > 0 relaxes the columns (rows stay exact); ``None`` = hard ``P^T 1 = b``.
        init_g: (K,) warm start, e.g. the previous round's ``result.g``.
        group: process group the rows are sharded over; ``None`` (default) = this process alone. A
            function call is not a training component: it never joins a collective unless asked
            (the methods' ``group="auto"`` does, inside a distributed Trainer).
        dtype: compute dtype: "auto" (default), float32 or float64, whatever the input dtype.
        solver: a configured :class:`SinkhornSolver`; when given, the solver options below must be
            left at their defaults.
        tol, max_iter, check_every, mode, chunk_size, max_kernel_bytes, log_scaling_bound, eps_scaling,
            acceleration, memory, mixing, return_plan: every option of :class:`SinkhornSolver`, same
            names and defaults (``reuse_kernel`` only serves a solver kept between calls).
        keep_scores: the result holds the scores (default True here, so ``sinkhorn(S, eps).plan()``
            works on a temporary; a :class:`SinkhornSolver` defaults to False).

    Returns:
        A :class:`SinkhornResult`.
    """
    problem = AssignmentProblem.build(scores, eps, a=a, b=b, b_penalty=b_penalty, group=group, dtype=dtype)
    options = dict(
        tol=tol, max_iter=max_iter, check_every=check_every, mode=mode, chunk_size=chunk_size,
        max_kernel_bytes=max_kernel_bytes, log_scaling_bound=log_scaling_bound, eps_scaling=eps_scaling,
        acceleration=acceleration, memory=memory, mixing=mixing, return_plan=return_plan,
    )
    if solver is None:
        solver = SinkhornSolver(**options, keep_scores=keep_scores)
    else:
        changed = sorted(name for name, value in options.items() if value != _SOLVER_DEFAULTS[name])
        if changed:
            raise ValueError(f"sinkhorn(): pass solver options either in solver= or as arguments, not both (got {changed})")
    return solver(problem, init_g=init_g, keep_scores=keep_scores)


_SOLVER_DEFAULTS = {f.name: f.default for f in fields(SinkhornSolver) if f.init}


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
    """ε₀ = global range of the scores (from validation when measured, else one all-reduce and read),
    then ε₀·factor^t while still above the target ε."""
    eps = problem.score_range
    if math.isnan(eps):
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
