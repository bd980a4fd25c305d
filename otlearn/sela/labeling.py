"""The label step of one round, given each rank's logit bank: distributed Sinkhorn per head.

Separate from the callback so that it can be tested (and used) without a Trainer.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F

import torch.distributed as dist

from otlearn.comm import Communicator, resolve
from otlearn.ot import AssignmentProblem, SinkhornSolver, column_counts
from otlearn.sela.bank import gather_labels, owned_rows


def assign_labels(
    indices: torch.Tensor,
    banks: list[torch.Tensor | None],
    previous: torch.Tensor,
    potentials: Sequence[torch.Tensor | None],
    lam: float,
    solver: SinkhornSolver,
    comm: Communicator | dist.ProcessGroup | None,
    rounding: str = "balanced",
    dtype: torch.dtype | str = "auto",
    b_penalty: float | None = None,
    priors: Sequence[torch.Tensor | None] | None = None,
    on_head: Callable[[int], None] | None = None,
) -> tuple[torch.Tensor, list[dict[str, Any]], list[torch.Tensor]]:
    """SeLa's label step over all N samples, rows sharded over the ranks of ``comm``.

    Args:
        indices: (n,) dataset indices of this rank's bank rows (duplicates, e.g. sampler padding,
            allowed: each index is kept on one rank only).
        banks: per head t, (n, K_t) logits of those rows (entries are released as they are used).
        previous: (T, N) current label bank; indices no rank holds keep these labels.
        potentials: per head, the previous round's ``g`` (K_t,) or None (cold start).
        lam: λ; the solver runs on ``log_softmax(logits)`` with ε = 1/λ, uniform marginals.
        solver: the configured :class:`SinkhornSolver`.
        comm: the :class:`~otlearn.comm.Communicator` of the ranks (a process group, or ``None`` = one process).
        rounding: ``"balanced"`` (default, as :class:`SelfLabelCallback`: exact counts; hard marginals
            only) or ``"argmax"`` (``argmax_k log p_ik + g_k``, SeLa's code; the one with ``b_penalty``).
        dtype: the solver's compute dtype ("auto", float32 or float64).
        b_penalty: ρ of the relaxed cluster marginal ``ρ KL(P^T 1 ‖ b)`` (``None``: equal-sized clusters,
            or ``b`` exactly when a prior is given).
        priors: per head, the cluster masses ``b`` (K_t,) (``None``: uniform).
        on_head: called with the head's index after each head's solve (progress reporting).

    Returns:
        ``(labels (T, N), per-head diagnostics, new potentials)``. Only K-vectors (solver) and
        integers (labels, indices) cross process boundaries.
    """
    comm = resolve(comm)
    if rounding not in ("balanced", "argmax"):
        raise ValueError(f"rounding must be 'balanced' or 'argmax', got {rounding!r}")
    if rounding == "balanced" and b_penalty is not None:
        raise ValueError("balanced rounding needs hard cluster marginals; with b_penalty use rounding='argmax'")
    priors = list(priors) if priors is not None else [None] * len(banks)
    keep = owned_rows(indices.cpu(), comm)
    kept_indices = indices.cpu()[keep]
    new_labels, heads, new_potentials = [], [], []
    for h in range(len(banks)):
        logits = banks[h]
        banks[h] = None  # release this head's bank before solving
        scores = F.log_softmax(logits[keep.to(logits.device)].float(), dim=1)
        del logits
        problem = AssignmentProblem.build(scores, 1.0 / lam, b=priors[h], b_penalty=b_penalty, group=comm, dtype=dtype)
        result = solver(problem, init_g=potentials[h])
        new_potentials.append(result.g.detach().cpu())
        local = result.balanced_assignments() if rounding == "balanced" else result.assignments()
        new_labels.append(local.cpu())
        heads.append({"iterations": result.n_iters, "error": result.error, "converged": result.converged,
                      "rows": problem.n_local})
        if on_head is not None:
            on_head(h)
    bank = gather_labels(kept_indices, torch.stack(new_labels), previous.shape[1], comm)
    missing = bank[0] < 0
    bank[:, missing] = previous[:, missing]
    for h, head in enumerate(heads):
        k = int(new_potentials[h].numel())
        sizes = column_counts(bank[h], k)
        head.update(
            smallest=int(sizes.min()), largest=int(sizes.max()), empty=int((sizes == 0).sum()),
            changed=float((bank[h] != previous[h]).float().mean()), sizes=sizes.tolist(),
            labelled=int((~missing).sum()),
        )
    return bank, heads, new_potentials
