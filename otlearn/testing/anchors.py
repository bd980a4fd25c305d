"""Re-implementations of the solvers otlearn replaces, written from their published formulas.

They exist to show that otlearn in fixed-iteration mode reproduces them (tests) and to time
them (benchmarks). They are deliberately literal: kernel-mode, no stabilisation.

* :func:`swav_sinkhorn`: SwAV's online codes (Caron et al., 2020), ``ε = 0.05``, 3 iterations,
  each normalising prototypes then samples, ending on the per-sample normalisation.
* :func:`sela_sinkhorn_knopp`: SeLa's "fast SK" (Asano et al., ICLR 2020) on ``P^λ`` with dual
  vectors ``r`` (K,) and ``c`` (N,), stopping when ``Σ_i |c_i / c_new_i − 1| < tol`` (checked
  every 10 iterations), labels ``argmax_k (λ log p_ik + log r_k)``.
"""
from __future__ import annotations

import numpy as np
import torch


def swav_sinkhorn(
    scores: torch.Tensor, eps: float = 0.05, n_iters: int = 3, dtype: torch.dtype = torch.float64
) -> torch.Tensor:
    """SwAV's codes: (B, K) soft assignments whose rows sum to 1, computed in ``dtype``.

    ``Q = exp(S/ε)ᵀ`` (K x B); ``Q /= ΣQ``; ``n_iters`` times: ``Q /= row sums; Q /= K``
    (prototypes), ``Q /= column sums; Q /= B`` (samples); finally ``Q *= B``. In float32 this is
    the loop as SwAV and lightly write it (the benchmarks' "plain" arm).
    """
    q = torch.exp(scores.to(dtype) / eps).T
    q /= q.sum()
    n_protos, batch = q.shape
    for _ in range(n_iters):
        q /= q.sum(dim=1, keepdim=True)
        q /= n_protos
        q /= q.sum(dim=0, keepdim=True)
        q /= batch
    q *= batch
    return q.T


def sela_sinkhorn_knopp(
    log_probs: np.ndarray, lam: float, tol: float = 0.1, check_every: int = 10, max_iter: int = 100_000
) -> tuple[np.ndarray, np.ndarray, int]:
    """SeLa's label step in float64: returns ``(labels (N,), log r (K,), iterations)``.

    ``P^λ`` (K x N) is fixed; ``r = (1/K) / (P^λ c)``, ``c_new = (1/N) / ((P^λ)ᵀ r)``; the error
    ``Σ_i |c_i / c_new_i − 1|`` is measured every ``check_every`` iterations.
    """
    p_lam = np.exp(lam * np.asarray(log_probs, dtype=np.float64)).T  # K x N
    n_clusters, n = p_lam.shape
    r = np.ones(n_clusters)
    c = np.ones(n)
    err, it = np.inf, 0
    while err > tol and it < max_iter:
        r = (1.0 / n_clusters) / (p_lam @ c)
        c_new = (1.0 / n) / (r @ p_lam)
        if it % check_every == 0:
            err = float(np.nansum(np.abs(c / c_new - 1)))
        c = c_new
        it += 1
    log_r = np.log(r)
    labels = np.argmax(lam * np.asarray(log_probs, dtype=np.float64) + log_r[None, :], axis=1)
    return labels, log_r, it
