"""The two operators the solver loop runs on: log-domain potentials or scalings of a cached kernel.

Both hold an accepted iterate ``g`` (K,) with its exact row update and the global column sums
``c = P^T 1`` of that plan, and both speak the same protocol to the loop in
:mod:`otlearn.ot.sinkhorn`:

* ``start(init_g)``: the first iterate (``None``: a cold start, the column update from ``f = ε log a``);
* ``propose(step, track_dual)``: the row update at ``g + step``, kept aside; returns the step as
  realised (clamps; the step itself when not tracked) and, when tracked, the row part of the dual change ``Σ_i a_i (f⁺_i − f_i)``
  (all-reduced together with the column sums: one all-reduce of K + 1 floats);
* ``commit(accepted)``: make the proposal the iterate (``None``: unconditionally; a 0-dim bool tensor:
  where it is True, on the device);
* ``col`` and ``g``, the iterate's column sums and potentials; ``absorbs``/``absorb``/``scaling_range``
  (the kernel's stabilisation); ``potentials()`` and ``take_plan()`` for the result.

``"log"`` streams row chunks: one exp() pass over the scores per iteration, extra memory
O(chunk x K). ``"kernel"`` caches ``Kmat = exp((S + F + G)/ε)`` (each row's largest entry 1) and iterates
``u = a / (Kmat v)``, ``ktu = Kmat^T u``: two matrix-vector products per iteration, no exp(); the scalings
are absorbed into the potentials (``G += ε log v``, kernel rebuilt) when ``|log v|`` exceeds τ.
"""
from __future__ import annotations

import math

import torch

from otlearn.ot.problem import AssignmentProblem


def floor_of(dtype: torch.dtype) -> float:
    """Column sums below this are imprecise (underflowed terms); steps use the floor instead."""
    return 1e-30 if dtype == torch.float32 else 1e-290


def clamp_of(dtype: torch.dtype) -> float:
    """L: the kernel's scalings stay in ``[e^-L, e^L]`` (40 in float32, 300 in float64)."""
    return 40.0 if dtype == torch.float32 else 300.0


def normalised(g: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
    """``g`` shifted so that its largest entry over columns of positive mass is 0 (``-inf`` elsewhere).

    Potentials are defined up to ``(f + c, g − c)``; keeping max g = 0 keeps |f| near |S|, so
    ``(S + f + g)/ε`` keeps its float precision.
    """
    g = torch.where(positive, g, torch.full_like(g, -math.inf))
    return g - g.amax()


DENORMAL_CUT = 1e-30
CPU_BLOCK_BYTES = 3 << 20  # kernel rows per fused CPU block: about a core's share of the last-level cache


def exp_blocks(p: AssignmentProblem, g: torch.Tensor | None, chunk_size: int | None, kernel: torch.Tensor | None = None):
    """Per row block: ``(rows, E, M, rowsum)`` with ``E = exp((S + g)/ε − M_i)`` (``g = None``: 0), ``M_i`` the
    row's max of ``(S + g)/ε`` and ``rowsum_i = Σ_k E_ik``; ``E`` is written into ``kernel[rows]`` when given.

    One exp() pass over the scores, in the compute dtype whatever their dtype. In float32, entries below
    ``DENORMAL_CUT`` (1e-30, i.e. 69 nats under the row's largest) are set to 0: below float32's normal
    range (1.2e-38) they would be denormals, which CPU arithmetic handles up to 100x slower (measured: a
    confident network's log-probabilities at ε = 0.1 ran the kernel iteration 5x slower than POT's
    float64 one), and with scalings clamped to e^±40 their weight is at most 2e-13 of the row, far
    below float32's resolution.
    """
    blocks = p.row_blocks(chunk_size)
    single = len(blocks) == 1
    g_scaled = None if g is None else g / p.eps
    flush = p.dtype == torch.float32
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
        if flush:
            torch.threshold_(z, DENORMAL_CUT, 0.0)
        yield (slice(None) if single else rows), z, row_max.squeeze(1), z.sum(1)


def chosen(accepted: torch.Tensor | None, proposal: tuple, current: tuple) -> tuple:
    """The proposal's tensors where ``accepted`` (0-dim bool, on the device) holds, else the current ones
    (``accepted=None``: the proposal)."""
    if accepted is None:
        return proposal
    return tuple(torch.where(accepted, new, old) for new, old in zip(proposal, current))


def row_weighted_sum(p: AssignmentProblem, values: torch.Tensor) -> torch.Tensor:
    """0-dim local ``Σ_i a_i values_i`` over rows of positive mass (rows of zero mass hold NaN/±inf)."""
    if not p.all_rows_positive:
        values = torch.where(p.a > 0, values, torch.zeros_like(values))
    return torch.dot(p.a, values)


def exact_column_update(p: AssignmentProblem, f: torch.Tensor, chunk_size: int | None) -> torch.Tensor:
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
    return normalised(g, p.b > 0)


class LogOperator:
    """Log-domain iterates: potentials ``f`` (n_local,) and ``g`` (K,), streamed in row chunks."""

    absorbs = False
    n_builds = 0

    def __init__(self, problem: AssignmentProblem, chunk_size: int | None) -> None:
        self.p = problem
        self.chunk_size = chunk_size
        self.positive = problem.b > 0
        self.g = torch.zeros(problem.n_cols, dtype=problem.dtype, device=problem.device)
        self.f = torch.zeros(problem.n_local, dtype=problem.dtype, device=problem.device)
        self.col = torch.zeros_like(self.g)
        self._next: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def dual_slack(self) -> torch.Tensor | float:
        """Rounding bound of the row part of a dual change: each ``f_i`` carries an absolute error of about
        ``u (max|S| + ε)`` (u the unit roundoff), and ``Σ a = 1``; returns ``4 u (max|S| + ε)``."""
        p = self.p
        unit = torch.finfo(p.dtype).eps / 2
        magnitude = p.score_magnitude
        if math.isnan(magnitude):  # not measured by validation: a device value, no read
            local = p.scores.abs().amax().to(p.dtype) if p.n_local else torch.zeros((), dtype=p.dtype, device=p.device)
            return 4 * unit * (p.comm.all_reduce_(local.reshape(1), op="max")[0] + p.eps)
        return 4 * unit * (magnitude + p.eps)

    def _row_pass(self, g: torch.Tensor, f_old: torch.Tensor | None):
        """Exact row update from ``g``: ``f_i = ε (log a_i − M_i − log rowsum_i)``; returns ``(f, global column sums,
        global Σ a (f − f_old) or None)`` with one all-reduce."""
        p = self.p
        f = torch.empty(p.n_local, dtype=p.dtype, device=p.device)
        buf = torch.zeros(p.n_cols + (f_old is not None), dtype=p.dtype, device=p.device)
        col = buf[: p.n_cols]
        for rows, e, row_max, row_sum in exp_blocks(p, g, self.chunk_size):
            a_rows = p.a[rows]
            f[rows] = p.eps * (torch.log(a_rows) - row_max - torch.log(row_sum))
            col.addmv_(e.T, a_rows / row_sum)
        if f_old is not None and p.n_local:
            buf[p.n_cols] = row_weighted_sum(p, f - f_old)
        p.comm.all_reduce_(buf)
        return f, col, (buf[p.n_cols] if f_old is not None else None)

    def start(self, init_g: torch.Tensor | None) -> None:
        """``init_g`` (normalised) or, cold, the column update from ``f = ε log a`` (SwAV's and SeLa's start)."""
        p = self.p
        g = exact_column_update(p, p.eps * torch.log(p.a), self.chunk_size) if init_g is None else normalised(init_g, self.positive)
        self.g = g
        self.f, self.col, _ = self._row_pass(g, None)

    def propose(self, step: torch.Tensor, track_dual: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        g = self.g + step
        f, col, dual = self._row_pass(g, self.f if track_dual else None)
        self._next = (g, f, col)
        return step, dual

    def commit(self, accepted: torch.Tensor | None) -> None:
        self.g, self.f, self.col = chosen(accepted, self._next, (self.g, self.f, self.col))
        self._next = None

    def absorb(self) -> None:  # pragma: no cover - never called (absorbs is False)
        raise RuntimeError("the log operator has nothing to absorb")

    def scaling_range(self) -> list[torch.Tensor]:
        return []

    def potentials(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(f, g)`` shifted so that max g = 0."""
        g = self.g if self.p.all_columns_positive else torch.where(self.positive, self.g, torch.full_like(self.g, -math.inf))
        shift = g.amax()
        return self.f + shift, g - shift

    def take_plan(self) -> torch.Tensor:
        p = self.p
        return p.a[:, None] * torch.softmax((p.scores.to(p.dtype) + self.g[None, :]) / p.eps, dim=1)


class KernelOperator:
    """Scaling iterates ``P = diag(u) Kmat diag(v)`` on the cached ``Kmat = exp((S + F + G)/ε)``.

    ``f = F + ε log u`` and ``g = G + ε log v``. Each row of ``Kmat`` has its largest entry, 1, on a
    column of positive mass, and ``e^-L <= v <= e^L`` there, so ``Kmat v >= e^-L``: the row update never
    divides by 0. A step ``δ`` of the potentials is ``v⁺ = v exp(δ/ε)`` (clamped), then the row update
    ``u⁺ = a / (Kmat v⁺)``, ``ktu⁺ = Kmat^T u⁺`` (all-reduced); the column sums are ``v ⊙ ktu``.
    """

    absorbs = True

    def __init__(self, problem: AssignmentProblem, chunk_size: int | None, kernel: torch.Tensor) -> None:
        p = problem
        self.p = p
        self.chunk_size = chunk_size
        self.positive = p.b > 0
        self.kernel = kernel  # (n_local, K) buffer in the compute dtype
        self.kernel_t = kernel.T
        self.G = torch.zeros(p.n_cols, dtype=p.dtype, device=p.device)
        self.F = torch.zeros(p.n_local, dtype=p.dtype, device=p.device)
        self.u = p.a.clone()
        self.v = self.positive.to(p.dtype)
        self.ktu = torch.zeros(p.n_cols, dtype=p.dtype, device=p.device)
        self.clamp = clamp_of(p.dtype)
        self.floor = floor_of(p.dtype)
        self.n_builds = 0
        self._next: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        self.cpu_blocks = None
        if p.device.type == "cpu" and p.n_local:
            # the two products fused over row blocks that stay in cache (``chunk_size`` rows, default
            # about CPU_BLOCK_BYTES of kernel): Kmat is read from memory once per iteration
            item = torch.finfo(p.dtype).bits // 8
            blocks = p.row_blocks(chunk_size or max(16, CPU_BLOCK_BYTES // max(1, p.n_cols * item)))
            if len(blocks) > 1:
                self.cpu_blocks = [(kernel[rows], kernel[rows].T, rows) for rows in blocks]

    @property
    def col(self) -> torch.Tensor:
        return self.v * self.ktu

    def dual_slack(self) -> float:
        """Rounding bound of the row part of a dual change ``ε Σ a log(u⁺/u)`` (each log carries an
        error of a few u, and ``Σ a = 1``): ``4 u ε``."""
        return 4 * (torch.finfo(self.p.dtype).eps / 2) * self.p.eps

    @property
    def g(self) -> torch.Tensor:
        return self.G + self.p.eps * torch.log(self.v)

    def _build(self, g: torch.Tensor | None) -> None:
        """Absorbed state: ``G = g`` (``None``: 0), the kernel rebuilt from the scores, ``v = 1``, and the
        row update ``u = a / rowsum`` done (``ktu = Kmat^T u``)."""
        p = self.p
        if g is None and p.all_columns_positive:
            self.G = torch.zeros_like(self.v)
            g_scores = None
        else:
            self.G = normalised(torch.zeros_like(self.v) if g is None else g, self.positive)
            g_scores = self.G
        row_sums = torch.empty(p.n_local, dtype=p.dtype, device=p.device)
        for rows, _, row_max, row_sum in exp_blocks(p, g_scores, self.chunk_size, self.kernel):
            self.F[rows] = row_max.mul_(-p.eps)
            row_sums[rows] = row_sum
        self.v = self.positive.to(p.dtype)
        self.u = torch.div(p.a, row_sums)
        ktu = torch.mv(self.kernel_t, self.u) if p.n_local else torch.zeros_like(self.v)
        self.ktu = p.comm.all_reduce_(ktu)
        self.n_builds += 1

    def _row_update(self, v: torch.Tensor, track_dual: bool):
        """``u = a / (Kmat v)`` and ``ktu = Kmat^T u``, with ``Σ a ε log(u / u_old)`` when tracked (one all-reduce)."""
        p = self.p
        buf = torch.empty(p.n_cols + track_dual, dtype=p.dtype, device=p.device)
        ktu = buf[: p.n_cols]
        u = torch.empty_like(self.u)
        if self.cpu_blocks is not None:
            for i, (block, block_t, rows) in enumerate(self.cpu_blocks):
                u_rows = torch.div(p.a[rows], torch.mv(block, v), out=u[rows])
                if i == 0:
                    torch.mv(block_t, u_rows, out=ktu)
                else:
                    ktu.addmv_(block_t, u_rows)
        elif p.n_local:
            torch.div(p.a, torch.mv(self.kernel, v), out=u)
            torch.mv(self.kernel_t, u, out=ktu)
        else:
            ktu.zero_()
        if track_dual:
            buf[p.n_cols] = p.eps * row_weighted_sum(p, torch.log(u / self.u)) if p.n_local else 0.0
        p.comm.all_reduce_(buf)
        return u, ktu, (buf[p.n_cols] if track_dual else None)

    def start(self, init_g: torch.Tensor | None) -> None:
        """Warm: the kernel built at ``G = init_g``. Cold: the first column update from ``f = ε log a`` with
        one exp() pass.

        The kernel is built at G = 0 (``Kmat_ik = exp(S_ik/ε − M_i)``, M_i the row's max); then
        ``Σ_i a_i exp(S_ik/ε) = Σ_i w_i Kmat_ik`` with ``log w_i = log a_i + M_i``, shifted by the
        global max of log w, and the column update is ``v ∝ b / (Kmat^T w)``, scaled to max 1 (the
        global shift cancels). One matrix-vector product and two all-reduces of K floats; a column
        sum below the floor takes the floored step.
        """
        p, eps = self.p, self.p.eps
        if init_g is not None:
            self._build(init_g)
            return
        self._build(None)
        if p.n_local:
            log_w = torch.log(p.a) - self.F / eps
            top = p.comm.all_reduce_(log_w.amax().reshape(1), op="max")
            col = torch.mv(self.kernel_t, torch.exp(log_w - top))
        else:
            p.comm.all_reduce_(torch.full((1,), -math.inf, dtype=p.dtype, device=p.device), op="max")
            col = torch.zeros_like(self.v)
        ratio = p.b / p.comm.all_reduce_(col).clamp_(min=self.floor)
        ratio.div_(ratio.amax()).clamp_(min=math.exp(-self.clamp))
        v = ratio if p.all_columns_positive else torch.where(self.positive, ratio, torch.zeros_like(ratio))
        self.u, self.ktu, _ = self._row_update(v, False)
        self.v = v

    def propose(self, step: torch.Tensor, track_dual: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        eps = self.p.eps
        raw = self.v * torch.exp(step / eps)
        v = raw.clamp(math.exp(-self.clamp), math.exp(self.clamp))
        if not self.p.all_columns_positive:
            v = torch.where(self.positive, v, torch.zeros_like(v))
        # the step as clamped, for the dual change (only tracked steps need it; on columns of zero mass
        # v stays 0 = raw, so the step, 0 there, is kept)
        realised = torch.where(raw == v, step, eps * torch.log(v / self.v)) if track_dual else step
        u, ktu, dual = self._row_update(v, track_dual)
        self._next = (u, v, ktu)
        return realised, dual

    def commit(self, accepted: torch.Tensor | None) -> None:
        self.u, self.v, self.ktu = chosen(accepted, self._next, (self.u, self.v, self.ktu))
        self._next = None

    def scaling_range(self) -> list[torch.Tensor]:
        """``[max v, min v]`` over columns of positive mass (the host decides on absorbing from them)."""
        v = self.v if self.p.all_columns_positive else torch.where(self.positive, self.v, torch.ones_like(self.v))
        low, high = torch.aminmax(v)
        return [high, low]

    def absorb(self) -> None:
        """``G += ε log v``, rebuild the kernel: the same plan, with ``v = 1`` and the row update redone."""
        self._build(self.g)

    def potentials(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(F + ε log u, G + ε log v)``, shifted so that max g = 0."""
        eps = self.p.eps
        g = self.g
        shift = (g if self.p.all_columns_positive else torch.where(self.positive, g, torch.full_like(g, -math.inf))).amax()
        return self.F + eps * torch.log(self.u) + shift, g - shift

    def take_plan(self) -> torch.Tensor:
        """The plan ``diag(u) Kmat diag(v)``, made in place in the kernel's memory."""
        plan, self.kernel, self.kernel_t, self.cpu_blocks = self.kernel, None, None, None
        return plan.mul_(self.u[:, None]).mul_(self.v[None, :])
