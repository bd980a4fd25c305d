"""The column side of the problem: a hard marginal ``P^T 1 = b`` or a KL penalty ``ρ KL(P^T 1 ‖ b)``.

Every iterate of the solver has exact rows, ``f = f(g)`` (the row update of ``g``), so the plan
``P_ik = a_i softmax_k((S_ik + g_k)/ε)`` depends on ``g`` only up to a constant, and so does everything here.
With column sums ``c = P^T 1`` (they sum to 1):

* hard (``ρ = None``): the column update is ``g ← g + ε (log b − log c)``; the error is
  ``max_k |c_k / b_k − 1|``; the semi-dual objective ``D(g) = Σ_i a_i f_i + Σ_k b_k g_k`` is concave and
  every column update increases it.
* relaxed (``ρ > 0``), the problem ``max_P <P, S> + ε H(P) − ρ KL(P^T 1 ‖ b)`` s.t. ``P 1 = a``: optimality is
  ``g_k = −ρ log(c_k / b_k) + const``, so the column targets of ``g`` are ``t_k ∝ b_k exp(−g_k/ρ)`` (normalised to
  sum 1). The column update is the exact maximiser over ``g`` with ``f`` fixed,
  ``g ← θ (g + ε (log b − log c))`` with ``θ = ρ / (ρ + ε)``; the error is ``max_k |c_k / t_k − 1|``; the
  semi-dual, maximised over the constant, is ``D(g) = Σ_i a_i f_i − ρ log Σ_k b_k exp(−g_k/ρ)``.
  As ρ → ∞, θ → 1, ``t → b`` and ``D`` tends to the hard one.

The step is returned as a residual ``r = T(g) − g`` (the fixed-point map ``T`` of one column update),
which the plain iteration adds to ``g`` and Anderson acceleration mixes. On a column whose sum fell
below ``floor`` the step uses the floor (a shorter step in the same direction: see :mod:`otlearn.ot.sinkhorn`).
"""
from __future__ import annotations

import math

import torch


class ColumnMarginal:
    """The column marginal of one problem: ``b`` (K,) with ``positive = b > 0``, ε, and ρ (``None`` = hard)."""

    def __init__(self, b: torch.Tensor, eps: float, rho: float | None, all_positive: bool, floor: float) -> None:
        self.b = b
        self.log_b = torch.log(b)
        self.eps = eps
        self.rho = rho
        self.theta = 1.0 if rho is None else rho / (rho + eps)
        self.all_positive = all_positive
        self.positive = b > 0
        self.floor = floor

    def residual(self, g: torch.Tensor | None, col: torch.Tensor) -> torch.Tensor:
        """(K,) ``T(g) − g``: ``ε (log b − log c)`` (hard; ``g`` unused) or ``θ ε (log b − log c) − (1 − θ) g``
        (relaxed); 0 on columns of zero mass."""
        step = (self.log_b - torch.log(col.clamp(min=self.floor))).mul_(self.eps)
        if self.rho is not None:
            step.mul_(self.theta).sub_(torch.where(self.positive, g, torch.zeros_like(g)), alpha=1.0 - self.theta)
        return step if self.all_positive else torch.where(self.positive, step, torch.zeros_like(step))

    def targets(self, g: torch.Tensor | None) -> torch.Tensor:
        """(K,) column targets of ``g``: ``b`` (hard), ``b exp(−g/ρ)`` normalised (relaxed)."""
        if self.rho is None:
            return self.b
        log_t = torch.where(self.positive, self.log_b - g / self.rho, torch.full_like(g, -math.inf))
        return torch.softmax(log_t, dim=0)

    def error(self, g: torch.Tensor | None, col: torch.Tensor) -> torch.Tensor:
        """0-dim ``max_k |c_k / t_k − 1|`` over columns of positive mass (no host read)."""
        rel = (col / self.targets(g) - 1.0).abs()
        return rel.amax() if self.all_positive else torch.where(self.positive, rel, torch.zeros_like(rel)).amax()

    def dual_change(self, g_old: torch.Tensor | None, delta: torch.Tensor) -> torch.Tensor:
        """0-dim column part of ``D(g_old + δ) − D(g_old)``: ``Σ b δ`` (hard) or
        ``−ρ log Σ_k w_k exp(−δ_k/ρ)`` with ``w = targets(g_old)`` (relaxed, via expm1/log1p so that large ρ
        keeps its precision). ``δ`` is 0 on columns of zero mass."""
        if self.rho is None:
            return torch.dot(self.b, delta)
        w = self.targets(g_old)
        return -self.rho * torch.log1p(torch.dot(w, torch.expm1(-delta / self.rho)))
