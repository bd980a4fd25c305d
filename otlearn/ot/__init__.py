"""otlearn.ot: the entropic Sinkhorn-Knopp solver every method stands on.

``P_ik = exp((S_ik + f_i + g_k) / ε)`` with row masses ``a`` and column masses ``b``; rows may be
sharded over a ``torch.distributed`` group, and only K-vectors are all-reduced (through
:mod:`otlearn.comm`, which puts them on the group's communication device). The solver runs outside
autocast and outside ``torch.compile`` tracing, and reads the device only at convergence checks.

ε conventions of the methods built on it: SeLa's λ is ``1/ε`` on log-probabilities (λ = 10 or 25);
SwAV uses ε = 0.05 on cosine scores; OptVQ's "10" is an inverse temperature on standardised
distances, i.e. ε = 0.1 with scores = −normalised distance.
"""
from otlearn.ot.precision import full_precision
from otlearn.ot.problem import AssignmentProblem
from otlearn.ot.rounding import argmax_assignments, balanced_assignments, column_counts, integer_targets
from otlearn.ot.sinkhorn import SinkhornConvergenceWarning, SinkhornResult, SinkhornSolver, sinkhorn

__all__ = [
    "AssignmentProblem",
    "SinkhornConvergenceWarning",
    "SinkhornResult",
    "SinkhornSolver",
    "argmax_assignments",
    "balanced_assignments",
    "column_counts",
    "full_precision",
    "integer_targets",
    "sinkhorn",
]
