"""Cases for tests/_harness.py: the solver, the quantizer and a SeLa label step on a block of rows."""
from __future__ import annotations

import warnings

import torch


def solver_case(rows, group, *, eps, mode, dtype, tol, b=None, b_penalty=None) -> dict:
    """sinkhorn() on rows ``(scores, a)``: potentials, plan, both roundings, iteration count."""
    from otlearn.ot import SinkhornConvergenceWarning, sinkhorn

    scores, a = rows
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SinkhornConvergenceWarning)
        result = sinkhorn(scores, eps, a=a, b=b, b_penalty=b_penalty, tol=tol, max_iter=20_000 if tol else 60,
                          dtype=dtype, mode=mode, group=group)
    out = {"f": result.f.numpy(), "g": result.g.numpy(), "plan": result.plan().numpy(),
           "argmax": result.assignments().numpy(), "n_iters": result.n_iters}
    if b_penalty is None:
        out["balanced"] = result.balanced_assignments().numpy()
    return out


def quantizer_case(rows, group, *, k, normalize, rounding, assignment="ot") -> dict:
    """One training forward of an OTVectorQuantizer (OptVQ's settings) on rows ``(tokens,)``."""
    from otlearn.ot import SinkhornSolver
    from otlearn.vq import OPTVQ_SETTINGS, OTVectorQuantizer

    (x,) = rows
    torch.manual_seed(0)
    q = OTVectorQuantizer(k, x.shape[1], normalize=normalize, rounding=rounding, assignment=assignment,
                          solver=SinkhornSolver(tol=1e-6, max_iter=5000), group=group, **OPTVQ_SETTINGS)
    out = q(x)
    return {"codes": out.indices.numpy(), "g": q.ema_g.numpy(), "stats": q.ema_stats.numpy()}
