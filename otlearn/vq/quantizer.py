"""OTVectorQuantizer: codes assigned by optimal transport over normalised distances (OptVQ).

Zhang et al., "Preventing Local Pitfalls in Vector Quantization via Optimal Transport" (2024).
For tokens ``z`` (n, d) and codes ``c`` (K, d):

* distance ``A_ik = ||z_i − c_k||`` (Euclidean, not squared) or ``1 − cos(z_i, c_k)``, in float32
  outside autocast, without gradient;
* normalisation ``all``: ``A ← (A − mean A)/(std A + 1e-6); A ← A − min A`` over the whole matrix
  — over all ranks' tokens when distributed — so ε is independent of the distances' scale;
  ``dim``: the same per token row; ``none``;
* assignment ``ot``: entropic OT with scores ``−Â`` at ε (OptVQ's inverse temperature 10 → ε = 0.1),
  uniform token and code masses, otlearn's tolerance-based distributed solver, code = argmax of
  the plan row; ``optvq``: OptVQ's own assignment, numerical guards included (:func:`optvq_assignments`);
  ``nn``: nearest neighbour (the usual VQ baseline);
* straight-through estimator ``z + (z_q − z).detach()`` or the rotation trick; loss
  ``commitment·mean((z − sg z_q)²) + codebook·mean((z_q − sg z)²)`` (OptVQ: 1.0 and 0.25).

At inference a token must not depend on its batch: ``inference="nn"`` (default) assigns the
nearest code; ``inference="potential"`` keeps EMAs of the normalisation statistics and of the
solver's column potentials g during training and assigns ``argmax_k (−Â_ik + ḡ_k)`` per token.

On a GPU a training forward reads the device once (the NaN/Inf check of its input) plus the
solver's convergence checks (none with a fixed-iteration solver); statistics stay on the device.
The assignment runs outside autocast, in float32, and outside ``torch.compile`` tracing, so a
compiled model calls it eagerly; every collective goes through :mod:`otlearn.comm`.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from otlearn.comm import Communicator, host_values, resolve
from otlearn.ot import AssignmentProblem, SinkhornSolver, full_precision
from otlearn.ot.rounding import column_counts


RECOMMENDED_B_PENALTY = 3.0
RECOMMENDED_B_PENALTY_END = 0.01


def default_solver() -> SinkhornSolver:
    """The quantizer's solver: tol 1e-2, max_iter 200, its kernel buffer reused between steps."""
    return SinkhornSolver(tol=1e-2, max_iter=200, reuse_kernel=True)

#: OptVQ's published quantizer settings (hard equal code masses, gradient-trained N(0, 1) codebook).
OPTVQ_SETTINGS: dict = {"b_penalty": None, "codebook_update": "gradient", "codebook_init": "normal", "ema_decay": 0.99,
                        "dead_code_threshold": None}


@dataclass(frozen=True)
class TokenLayout:
    """How an input holds its tokens: ``(…, D)`` (tokens on the last dim; a single ``(D,)`` token too) or
    ``(B, D, H, W)`` (channels = D)."""

    shape: tuple[int, ...]
    spatial: bool

    @classmethod
    def of(cls, x: torch.Tensor, dim: int) -> "TokenLayout":
        spatial = x.dim() == 4
        if (x.shape[1] if spatial else x.shape[-1]) != dim:
            raise ValueError(f"expected tokens of dimension {dim}, got input of shape {tuple(x.shape)}")
        return cls(tuple(x.shape), spatial)

    def flatten(self, x: torch.Tensor) -> torch.Tensor:
        """(n, D) tokens, in the order :meth:`restore` undoes."""
        if self.spatial:
            return x.permute(0, 2, 3, 1).reshape(-1, self.shape[1])
        return x.reshape(-1, self.shape[-1])

    def restore(self, flat: torch.Tensor) -> torch.Tensor:
        """(n, D) back to the input's shape."""
        if self.spatial:
            b, c, h, w = self.shape
            return flat.reshape(b, h, w, c).permute(0, 3, 1, 2)
        return flat.reshape(self.shape)

    def indices(self, idx: torch.Tensor, heads: int) -> torch.Tensor:
        """Code indices (n·heads,) as ``shape[:-1] + (heads,)``, or ``(B, heads, H, W)`` for spatial input."""
        if self.spatial:
            b, _, h, w = self.shape
            return idx.reshape(b, h, w, heads).permute(0, 3, 1, 2)
        return idx.reshape(*self.shape[:-1], heads)


@dataclass
class QuantizerOutput:
    """Result of a forward pass.

    Attributes:
        quantized: same shape as the input; carries the estimator's gradient to the encoder.
        indices: code index per token, shape ``input.shape[:-1] + (heads,)`` for (…, D) input,
            ``(B, heads, H, W)`` for (B, C, H, W) input.
        loss: commitment + codebook loss (scalar).
        stats: batch statistics: 0-dim tensors on the input's device where the device computed them
            (perplexity, used fraction, solver error; reading one is a host sync, ``self.log`` takes them as
            they are) and host floats where the host knows them (solver iterations): building them costs no
            device synchronisation.
    """

    quantized: torch.Tensor
    indices: torch.Tensor
    loss: torch.Tensor
    stats: dict[str, torch.Tensor | float] = field(default_factory=dict)


class OTVectorQuantizer(nn.Module):
    """Vector quantizer with optimal-transport (or nearest-neighbour) code assignment.

    The defaults are otlearn's recommended configuration: OT assignment at ε = 0.1 on normalised
    distances with a relaxed code marginal whose ρ anneals from 3 to 0.01 over the training run (its length
    from the trainer: :class:`~otlearn.vq.CodeMarginalSchedule`), argmax codes, a k-means codebook from the
    first batch, EMA codebook updates (decay 0.8) and restarts of codes no token would pick at inference, at the
    tokens the codebook quantises worst.
    Against vector-quantize-pytorch's k-means-init + dead-code-restart EMA quantizer (rotation trick on),
    session 17 (benchmarks/RESULTS.md, both libraries on one machine, digits 120 epochs, patches 60, three seeds):
    on digits a mean test MSE −16.2% / −22.5% / −22.0% at K = 256 / 1024 / 4096 (ten seeds: lower on every seed at 256,
    on 8 of 10 at 1024), ≥ 99.3% of the codes used at K ≤ 1024 (ten seeds at 1024: ≥ 98.5%; at 4096 the 8,640 test
    tokens leave a uniform code distribution about 88%; every code is used on the training tokens); on natural-image
    patches (stereo split) ≥ 99.1% of the codes used up to K = 4096, MSE −0.4% / −0.5% at K = 256 / 1024 (level: both use
    every code there) and −14.3% at 4096, where vector-quantize-pytorch leaves codes unused.
    OptVQ's published settings are ``OTVectorQuantizer(K, D, **OPTVQ_SETTINGS)``.

    Args:
        num_codes: K.
        dim: token dimension D (the input's last dim, or channel dim for (B, C, H, W) input).
        heads: split each token into ``heads`` sub-tokens of D/heads that share one codebook.
        distance: ``"euclidean"`` (plain, as OptVQ) or ``"cosine"``.
        normalize: ``"all"`` (OptVQ's default), ``"dim"`` (per token) or ``"none"``.
        assignment: ``"ot"`` (otlearn's solver, global over ``group``), ``"optvq"`` (the official OptVQ
            assignment: per-process normalisation, 5 float32 scaling iterations with its 1e-8 guards, sums
            all-reduced over ``group``; :func:`optvq_assignments`) or ``"nn"``.
        eps: ε of the transport on the normalised distances, ``P ∝ exp(−Â/ε)`` (OptVQ writes its inverse,
            10, so ε = 0.1).
        solver: the configured :class:`~otlearn.ot.SinkhornSolver` for ``"ot"`` (default :func:`default_solver`:
            tol 1e-2, max_iter 200, kernel reused between steps — looser than the solver's own 1e-3 because
            it runs every training step warm-started from the last step's g, and codes are each token's
            argmax; or fixed iterations, ``SinkhornSolver(tol=None, max_iter=10)``, which reads nothing
            from the device).
        rounding: hard codes from the plan: ``"argmax"`` of each token's row (OptVQ), or
            ``"balanced"``: exactly ``round(n/K)`` tokens per code over the (global) batch, so every
            code is used whenever the batch has at least K tokens.
        b_penalty: ρ > 0 relaxes the equal code masses into ``ρ KL(P^T 1 ‖ uniform)`` (semi-relaxed OT,
            :func:`otlearn.ot.sinkhorn`): codes serve more or fewer tokens where the data are denser or
            sparser, pulled towards equal use with strength ρ (ρ → ∞: balanced; ρ → 0: nearest code).
            ``None``: hard equal masses (OptVQ). ``"auto"`` (default): 3.0 with ``rounding="argmax"``,
            ``None`` with ``"balanced"`` (which needs equal masses).
        b_penalty_end, b_penalty_anneal_steps: anneal ρ log-linearly from ``b_penalty`` at the first training
            step to ``b_penalty_end`` at step T = ``b_penalty_anneal_steps`` (then constant):
            ``ρ_t = ρ · (ρ_end/ρ)^min(t/T, 1)``, counted in this quantizer's training steps (the ``train_steps``
            buffer, so a resumed run continues the schedule). Balanced codes while the encoder and the codebook
            form, nearly the nearest code at the end. ``b_penalty_end="auto"`` (default): 0.01 when ρ is relaxed
            above it, else no schedule (0.1 before session 17, which is better on digits at K = 1024 and worse
            on the patches and at K = 256: benchmarks/RESULTS.md); ``None``: constant ρ. ``b_penalty_anneal_steps="auto"`` (default): T is the
            training run's length, set by :meth:`set_anneal_steps` — :class:`~otlearn.vq.VQAutoencoder` and the
            :class:`~otlearn.vq.CodeMarginalSchedule` callback do it at fit start from the trainer; until T is
            known ρ stays at ``b_penalty`` (one warning). An int fixes T.
        estimator: ``"ste"`` or ``"rotation"`` (rotation trick, Fifty et al. 2024).
        commitment, codebook_weight: loss weights (OptVQ: 1.0 and 0.25).
        project_codebook: pass the codebook through a learned linear map (OptVQ; init std d^-0.5).
        codebook_update: ``"gradient"`` (OptVQ: the codebook loss trains the codes) or ``"ema"``: each
            code becomes an exponential moving average (``ema_decay``) of the tokens assigned to it, with
            counts and sums all-reduced over the process group (VQ-VAE-2 style; no codebook loss).
        ema_assignment: which tokens each code's EMA averages: ``"plan"`` (default: the tokens the
            assignment gave it, the codes the forward pass used) or ``"nearest"``: the tokens whose nearest
            code it is, a Lloyd step towards the cells that inference (``inference="nn"``) decodes, while the
            forward pass and the commitment loss keep the OT codes; codes nobody picks then move only by
            restarts (``dead_code_threshold``). Only with ``codebook_update="ema"``. It gives up the default's
            protection against a collapsing encoder: on digits at K = 256 (ρ = 3) one seed of ten ended with one
            code in use, as vector-quantize-pytorch's did on that seed, where the default used every code.
        codebook_init: ``"normal"`` N(0, 1), ``"uniform"`` ±1/K (taming's), ``"kmeans"`` (k-means, 10 Lloyd
            iterations, on the first training batch's tokens — rank 0's, shared with every rank) or a (K, d) tensor.
        dead_code_threshold: a code whose share of the *nearest-neighbour* assignments (an EMA over training
            steps, decay ``usage_decay``, relative to the uniform share 1/K) falls below this is restarted at a
            random token of the batch (rank 0's, shared). OT gives every code tokens in training, but inference
            assigns the nearest code: this moves codes that no token would pick at inference to where tokens are.
            ``None``: never (OptVQ).
        usage_decay: decay of that usage EMA per training step (0.9: about 10 steps of memory; with the default
            threshold 0.1 a code no token picks any more is restarted 22 steps later; the slower 0.95 / 0.05
            took 59 and left up to 1.1% of the codes unused at the end of training on patches at K = 4096).
        restart_sampling: where restarted codes go. ``"distance"`` (default): to distinct tokens of the batch drawn
            with probability ∝ the squared distance to their nearest code (k-means++ seeding's weights, without
            replacement), i.e. where the codebook quantises worst; ``"uniform"``: each to a uniformly drawn token
            (vector-quantize-pytorch's rule, and otlearn's before session 16), which mostly lands in dense, already
            covered regions, where the OT plan's EMA moves the code away from the tokens it would serve and it dies
            again. Session 16 (benchmarks/RESULTS.md): on stereo patches at K = 4096 the worst seed's test
            utilisation 0.983 → 0.995 and MSE −9.9% (three seeds); at K = 256 −2.3% and on digits K = 256 −3.9%
            (ten seeds each); equal within 1% at K = 1024.
        inference: ``"nn"`` (default) or ``"potential"`` (EMA of the OT potentials).
        ema_decay: decay of the inference EMAs.
        group: process group for ``"ot"`` and the EMA codebook; ``"auto"`` = the default group when
            initialised, ``None`` = this process alone.

    Everything after ``dim`` is keyword-only. The options stay flat keyword arguments, one per setting, on
    purpose: they map one to one onto YAML keys (``quantizer_kwargs: {ema_decay: 0.8}``) and command-line
    overrides, and :data:`OPTVQ_SETTINGS` is a plain dict of them, as vector-quantize-pytorch's are.
    """

    def __init__(
        self,
        num_codes: int,
        dim: int,
        *,
        heads: int = 1,
        distance: Literal["euclidean", "cosine"] = "euclidean",
        normalize: Literal["all", "dim", "none"] = "all",
        assignment: Literal["ot", "optvq", "nn"] = "ot",
        eps: float = 0.1,
        rounding: Literal["argmax", "balanced"] = "argmax",
        b_penalty: float | None | Literal["auto"] = "auto",
        estimator: Literal["ste", "rotation"] = "ste",
        commitment: float = 1.0,
        codebook_weight: float = 0.25,
        project_codebook: bool = False,
        codebook_update: Literal["gradient", "ema"] = "ema",
        codebook_init: str | torch.Tensor = "kmeans",
        dead_code_threshold: float | None = 0.1,
        usage_decay: float = 0.9,
        restart_sampling: Literal["uniform", "distance"] = "distance",
        inference: Literal["nn", "potential"] = "nn",
        ema_decay: float = 0.8,
        ema_assignment: Literal["plan", "nearest"] = "plan",
        b_penalty_end: float | None | Literal["auto"] = "auto",
        b_penalty_anneal_steps: int | Literal["auto"] = "auto",
        group: dist.ProcessGroup | str | None = "auto",
        solver: SinkhornSolver | None = None,
    ) -> None:
        super().__init__()
        checks = [
            (num_codes >= 1, f"num_codes must be >= 1, got {num_codes}"),
            (heads >= 1 and dim % heads == 0, f"dim ({dim}) must be divisible by heads ({heads})"),
            (distance in ("euclidean", "cosine"), f"distance must be 'euclidean' or 'cosine', got {distance!r}"),
            (normalize in ("all", "dim", "none"), f"normalize must be 'all', 'dim' or 'none', got {normalize!r}"),
            (assignment in ("ot", "optvq", "nn"), f"assignment must be 'ot', 'optvq' or 'nn', got {assignment!r}"),
            (not (assignment == "optvq" and normalize != "all"),
             f"assignment='optvq' is OptVQ's assignment with its normalisation 'all'; got normalize={normalize!r}"),
            (estimator in ("ste", "rotation"), f"estimator must be 'ste' or 'rotation', got {estimator!r}"),
            (inference in ("nn", "potential"), f"inference must be 'nn' or 'potential', got {inference!r}"),
            (rounding in ("argmax", "balanced"), f"rounding must be 'argmax' or 'balanced', got {rounding!r}"),
            (codebook_update in ("gradient", "ema"), f"codebook_update must be 'gradient' or 'ema', got {codebook_update!r}"),
            (not (codebook_update == "ema" and project_codebook), "codebook_update='ema' cannot be combined with project_codebook"),
            (ema_assignment in ("plan", "nearest"), f"ema_assignment must be 'plan' or 'nearest', got {ema_assignment!r}"),
            (not (ema_assignment == "nearest" and codebook_update != "ema"),
             "ema_assignment='nearest' chooses the tokens of the EMA codebook update: it needs codebook_update='ema'"),
            (_finite_positive(eps), f"eps must be a finite number > 0, got {eps!r}"),
            (dead_code_threshold is None or 0 < dead_code_threshold < 1,
             f"dead_code_threshold must be in (0, 1) (a share of the uniform code usage) or None, got {dead_code_threshold!r}"),
            (0 < usage_decay < 1, f"usage_decay must be in (0, 1), got {usage_decay!r}"),
            (restart_sampling in ("uniform", "distance"),
             f"restart_sampling must be 'uniform' or 'distance', got {restart_sampling!r}"),
            (not (dead_code_threshold is not None and project_codebook),
             "dead_code_threshold restarts codes at tokens, which project_codebook would map again: pass dead_code_threshold=None"),
            (b_penalty is None or b_penalty == "auto" or _finite_positive(b_penalty),
             f"b_penalty must be a finite number > 0, None or 'auto', got {b_penalty!r}"),
            (b_penalty_end is None or b_penalty_end == "auto" or _finite_positive(b_penalty_end),
             f"b_penalty_end must be a finite number > 0, None (constant ρ) or 'auto', got {b_penalty_end!r}"),
            (b_penalty_anneal_steps == "auto" or (isinstance(b_penalty_anneal_steps, int) and not isinstance(b_penalty_anneal_steps, bool)
                                                 and b_penalty_anneal_steps >= 1),
             f"b_penalty_anneal_steps must be an int >= 1 or 'auto' (the training run's length), got {b_penalty_anneal_steps!r}; "
             "for a constant ρ pass b_penalty_end=None"),
            (not (b_penalty_end not in (None, "auto") and (b_penalty is None or rounding == "balanced")),
             "b_penalty_end anneals a relaxed code marginal: it needs b_penalty (a number or 'auto') with rounding='argmax'"),
            (not (b_penalty not in (None, "auto") and rounding == "balanced"),
             "rounding='balanced' needs equal code masses; with b_penalty use rounding='argmax'"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        if isinstance(b_penalty, str):
            b_penalty = RECOMMENDED_B_PENALTY if rounding == "argmax" else None
        self.num_codes, self.dim, self.heads = num_codes, dim, heads
        self.code_dim = dim // heads
        self.distance, self.normalize, self.assignment = distance, normalize, assignment
        self.eps, self.estimator, self.inference = float(eps), estimator, inference
        self.rounding = rounding
        self.b_penalty = None if b_penalty is None else float(b_penalty)
        self.dead_code_threshold = None if dead_code_threshold is None else float(dead_code_threshold)
        self.usage_decay = float(usage_decay)
        self.restart_sampling = restart_sampling
        self.commitment, self.codebook_weight, self.ema_decay = commitment, codebook_weight, ema_decay
        self.group = group
        self.solver = solver if solver is not None else default_solver()
        self.codebook_update = codebook_update
        self.ema_assignment = ema_assignment
        if b_penalty_end == "auto":  # anneal towards 0.01 whenever the code marginal is relaxed above it
            relaxed_above = self.b_penalty is not None and self.b_penalty > RECOMMENDED_B_PENALTY_END
            b_penalty_end = RECOMMENDED_B_PENALTY_END if relaxed_above else None
        self.b_penalty_end = None if b_penalty_end is None else float(b_penalty_end)
        if self.b_penalty_end is None and isinstance(b_penalty_anneal_steps, int):
            raise ValueError(f"b_penalty_anneal_steps={b_penalty_anneal_steps} times a ρ schedule, but there is none "
                             "(b_penalty_end resolved to None: constant or hard code masses); pass a b_penalty_end or drop it")
        #: whether the schedule's length comes from the training run (:meth:`set_anneal_steps`, called by
        #: :class:`~otlearn.vq.CodeMarginalSchedule` and :class:`~otlearn.vq.VQAutoencoder` at fit start)
        self.anneal_steps_from_run = self.b_penalty_end is not None and b_penalty_anneal_steps == "auto"
        self.b_penalty_anneal_steps: int | None = b_penalty_anneal_steps if isinstance(b_penalty_anneal_steps, int) else None
        self._warned_no_horizon = False
        self.kmeans_init = isinstance(codebook_init, str) and codebook_init == "kmeans"
        self.codebook = nn.Parameter(self._init_codes("normal" if self.kmeans_init else codebook_init),
                                     requires_grad=codebook_update == "gradient")
        self.register_buffer("codebook_initialised", torch.tensor(not self.kmeans_init))
        self._codebook_ready: bool | None = None  # host copy of codebook_initialised
        if codebook_update == "ema":
            self.register_buffer("ema_count", torch.ones(num_codes))
            self.register_buffer("ema_sum", self.codebook.detach().clone())
        self.projection = None
        if project_codebook:
            self.projection = nn.Linear(self.code_dim, self.code_dim, bias=False)
            nn.init.normal_(self.projection.weight, std=self.code_dim**-0.5)
        # inference EMAs (normalisation statistics and OT column potentials) and usage counters
        self.register_buffer("ema_g", torch.zeros(num_codes))
        self.register_buffer("warm_g", torch.zeros(num_codes))  # the last step's g: the next solve's warm start
        self.register_buffer("ema_stats", torch.tensor([0.0, 1.0, 0.0]))  # mean, std, min of the normalisation
        self.register_buffer("ema_initialised", torch.tensor(False))
        self.register_buffer("usage", torch.zeros(num_codes, dtype=torch.long))
        self.register_buffer("nn_share", torch.ones(num_codes))  # EMA of K · (nearest-code count) / tokens
        self.register_buffer("restarts", torch.zeros((), dtype=torch.long))
        self.register_buffer("train_steps", torch.zeros((), dtype=torch.long))  # solves on the ρ schedule so far
        self._train_steps: int | None = None  # host copy of train_steps (counted only with a schedule)
        self.register_buffer("disagreements", torch.zeros(2, dtype=torch.long))  # (OT != NN, tokens)
        self._ema_ready: bool | None = None  # host copy of ema_initialised (read once, then kept)

    def _init_codes(self, init: str | torch.Tensor) -> torch.Tensor:
        if isinstance(init, torch.Tensor):
            if init.shape != (self.num_codes, self.code_dim):
                raise ValueError(f"codebook_init must have shape ({self.num_codes}, {self.code_dim}), got {tuple(init.shape)}")
            return init.clone().float()
        if init == "normal":
            return torch.randn(self.num_codes, self.code_dim)
        if init == "uniform":
            return (torch.rand(self.num_codes, self.code_dim) * 2 - 1) / self.num_codes
        raise ValueError(f"codebook_init must be 'normal', 'uniform', 'kmeans' or a tensor, got {init!r}")

    @torch.no_grad()
    @torch.compiler.disable
    def _init_from_tokens(self, tokens: torch.Tensor) -> None:
        """k-means codebook from this batch's tokens (rank 0's, all-reduced to every rank); once, in float32."""
        comm = self._comm()
        codes = torch.zeros(self.num_codes, self.code_dim, device=tokens.device)
        if comm.rank == 0:
            with full_precision(tokens.device):
                codes = kmeans(tokens.float(), self.num_codes, iters=10,
                               generator=torch.Generator(device=tokens.device).manual_seed(0))
        comm.all_reduce_(codes)
        self.codebook.data.copy_(codes)
        if self.codebook_update == "ema":
            self.ema_count.fill_(1.0)
            self.ema_sum.copy_(codes)
        self.codebook_initialised.fill_(True)
        self._codebook_ready = True

    # ------------------------------------------------------------------ helpers
    def codes(self) -> torch.Tensor:
        """(K, d) the effective codebook (after the optional projection)."""
        return self.projection(self.codebook) if self.projection is not None else self.codebook

    def _comm(self) -> Communicator:
        return resolve(self.group)

    def _codebook_is_ready(self) -> bool:
        """Whether the codebook is initialised (``codebook_init="kmeans"`` waits for the first batch)."""
        if self._codebook_ready is None:
            self._codebook_ready = bool(host_values(self.codebook_initialised.reshape(1))[0])
        return self._codebook_ready

    def _ema_is_ready(self) -> bool:
        """Whether the inference EMAs hold a value; the buffer is read once, then tracked on the host."""
        if self._ema_ready is None:
            self._ema_ready = bool(host_values(self.ema_initialised.reshape(1))[0])
        return self._ema_ready

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        if prefix + "warm_g" not in state_dict and prefix + "ema_g" in state_dict:
            # a checkpoint from before warm_g existed: warm-start from the EMA potentials it has
            state_dict[prefix + "warm_g"] = state_dict[prefix + "ema_g"].clone()
        # checkpoints from before k-means init and dead-code restarts: an initialised codebook, a fresh usage EMA
        defaults = {"codebook_initialised": torch.tensor(True), "nn_share": torch.ones(self.num_codes),
                    "restarts": torch.zeros((), dtype=torch.long), "train_steps": torch.zeros((), dtype=torch.long)}
        for name, value in defaults.items():
            state_dict.setdefault(prefix + name, value)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._ema_ready = None  # re-read the loaded buffers
        self._codebook_ready = None
        self._train_steps = None

    def distances(self, tokens: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """(n, K) float32 distances, no autocast, no gradient."""
        with torch.no_grad(), full_precision(tokens.device):
            z, c = tokens.float(), codes.float()
            if self.distance == "cosine":
                return 1 - F.normalize(z, dim=1) @ F.normalize(c, dim=1).T
            return torch.cdist(z, c)

    def _normalised_scores(self, dists: torch.Tensor, comm: Communicator) -> tuple[torch.Tensor, torch.Tensor]:
        """Scores ``−Â`` (n, K) from the normalised distances (in place: ``dists`` becomes them, except
        for ``normalize="dim"``), and the (mean, std, min) used.

        ``all``: ``Â = (A − mean)/(std + 1e-6) − min`` with mean, std (unbiased) and min over the whole
        matrix — over all ranks of ``comm`` (count, sum and sum of squares all-reduced; min by MAX of
        −min); ``dim``: the same per row; ``none``: ``Â = A``.
        """
        identity = torch.tensor([0.0, 1.0, 0.0], device=dists.device)
        if self.normalize == "none":
            return dists.neg_(), identity
        if self.normalize == "dim":
            std, mean = torch.std_mean(dists, dim=1, keepdim=True)
            z = (dists - mean) / (std + 1e-6)
            return z.sub_(z.min(1, keepdim=True).values).neg_(), identity
        flat = dists.reshape(-1)
        moments = torch.stack([
            torch.tensor(float(flat.numel()), dtype=torch.float64, device=dists.device),
            flat.sum().double(),
            torch.dot(flat, flat).double() if flat.numel() else torch.zeros((), dtype=torch.float64, device=dists.device),
        ])
        neg_low = (-flat.min()).double().reshape(1) if flat.numel() else torch.full((1,), -math.inf, dtype=torch.float64, device=dists.device)
        comm.all_reduce_(moments)
        comm.all_reduce_(neg_low, op="max")
        n, total, total_sq = moments
        mean = total / n.clamp(min=1)
        var = ((total_sq - n * mean * mean) / (n - 1).clamp(min=1)).clamp(min=0)  # unbiased, as torch.std
        std = var.sqrt()
        zmin = (-neg_low[0] - mean) / (std + 1e-6)
        stats = torch.stack([mean, std, zmin]).float()
        inv = 1.0 / (stats[1] + 1e-6)
        # −Â = −A/(std + 1e-6) + mean/(std + 1e-6) + zmin
        return dists.mul_(-inv).add_(stats[0] * inv + stats[2]), stats

    @torch.compiler.disable
    def _assign_train(self, tokens: torch.Tensor, codes: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, torch.Tensor | float]]:
        """``(codes, nearest codes, distance to the nearest code, stats)`` of a training batch: distances, then the
        assignment, then the inference EMAs (:meth:`_track_inference`)."""
        with full_precision(tokens.device):
            dists = self.distances(tokens, codes)
            nn_dist, nn_idx = dists.min(1)  # min(1) is ~3x faster than argmin(1) on the CPU
            if self.assignment == "nn":
                return nn_idx, nn_idx, nn_dist, {}
            if self.assignment == "optvq":
                idx, g, stats = optvq_assignments(dists, 1.0 / self.eps, comm=self._comm())
                diagnostics: dict[str, torch.Tensor | float] = {"solver_iterations": float(OPTVQ_ITERATIONS)}
            else:
                idx, g, stats, diagnostics = self._solve(dists)
            self._track_inference(g, stats, idx, nn_idx)
            return idx, nn_idx, nn_dist, diagnostics

    def _solve(self, dists: torch.Tensor):
        """otlearn's assignment: normalised scores over the group, the configured solver warm-started from the
        last step's g, argmax or balanced codes. The scores are built here from finite inputs, so the problem
        skips re-validation (:meth:`AssignmentProblem.trusted`)."""
        comm = self._comm()
        scores, stats = self._normalised_scores(dists, comm)
        if self.b_penalty_end is not None and self.b_penalty_anneal_steps is None and not self._warned_no_horizon:
            self._warned_no_horizon = True
            warnings.warn(
                f"OTVectorQuantizer: b_penalty_anneal_steps='auto' but no run length was set, so ρ stays at "
                f"b_penalty={self.b_penalty:g} instead of annealing to {self.b_penalty_end:g}. Under Lightning add the "
                "otlearn.vq.CodeMarginalSchedule() callback (VQAutoencoder does it itself); in a plain loop call "
                "quantizer.set_anneal_steps(total_training_steps) or pass b_penalty_anneal_steps=N; b_penalty_end=None "
                "keeps ρ constant without this warning.", stacklevel=2)
        problem = AssignmentProblem.trusted(scores, self.eps, group=comm, b_penalty=self.current_b_penalty())
        if self.b_penalty_end is not None:
            self._train_steps = self._host_train_steps() + 1
            self.train_steps += 1
        # warm_g is the g of this quantizer's previous solve: no need to re-check it on the host
        result = self.solver(problem, init_g=self.warm_g if self._ema_is_ready() else None, check_init_g=False)
        idx = result.balanced_assignments() if self.rounding == "balanced" else result.assignments()
        diagnostics = {"solver_iterations": float(result.n_iters), "solver_error": result.final_error.float()}
        return idx, result.g, stats, diagnostics

    def _host_train_steps(self) -> int:
        """``train_steps`` on the host: read from the buffer once (after construction or loading), then counted here."""
        if self._train_steps is None:
            self._train_steps = int(host_values(self.train_steps.reshape(1))[0])
        return self._train_steps

    def set_anneal_steps(self, steps: int) -> None:
        """Set T, the training steps (forward passes in training mode) over which ρ anneals to ``b_penalty_end``.

        :class:`~otlearn.vq.CodeMarginalSchedule` calls it at fit start with the trainer's step count when
        ``b_penalty_anneal_steps="auto"``. A resumed run keeps its step count (the ``train_steps`` buffer) and
        gets T again from its trainer, so it continues the same schedule."""
        if self.b_penalty_end is None:
            raise ValueError("set_anneal_steps: this quantizer has no ρ schedule (b_penalty_end is None)")
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"set_anneal_steps: steps must be an int >= 1 (training steps), got {steps!r}")
        self.b_penalty_anneal_steps = steps

    def current_b_penalty(self) -> float | None:
        """ρ of the next training step: ``b_penalty``, or its log-linear schedule towards ``b_penalty_end``
        (``b_penalty`` while the schedule's length is unknown)."""
        if self.b_penalty_end is None or self.b_penalty_anneal_steps is None:
            return self.b_penalty  # (the constructor made sure a schedule has a ρ to start from)
        frac = min(self._host_train_steps() / self.b_penalty_anneal_steps, 1.0)
        return self.b_penalty * (self.b_penalty_end / self.b_penalty) ** frac

    @torch.no_grad()
    def _track_inference(self, g: torch.Tensor, stats: torch.Tensor, idx: torch.Tensor, nn_idx: torch.Tensor) -> None:
        """The next warm start, the EMAs of the potentials and normalisation statistics, the OT-vs-NN counter."""
        g = g - g.max()
        self.warm_g.copy_(g)
        if self._ema_is_ready():
            self.ema_g.mul_(self.ema_decay).add_((1 - self.ema_decay) * g)
            self.ema_stats.mul_(self.ema_decay).add_((1 - self.ema_decay) * stats)
        else:
            self.ema_g.copy_(g)
            self.ema_stats.copy_(stats)
            self.ema_initialised.fill_(True)
            self._ema_ready = True
        self.disagreements[0] += (idx != nn_idx).sum()
        self.disagreements[1] += idx.numel()

    @torch.compiler.disable
    def _assign_eval(self, tokens: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        with full_precision(tokens.device):
            dists = self.distances(tokens, codes)
            if self.inference == "nn" or self.assignment == "nn" or not self._ema_is_ready():
                return dists.min(1).indices
            if self.normalize in ("dim", "none"):
                scores, _ = self._normalised_scores(dists, Communicator())  # per token already
            else:
                mean, std, zmin = self.ema_stats
                scores = -((dists - mean) / (std + 1e-6) - zmin)
            return (scores + self.ema_g).max(1).indices  # per token: independent of the batch

    # ------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor) -> QuantizerOutput:
        """Quantise ``x`` of shape (…, D) or (B, D, H, W) (channels = D)."""
        layout = TokenLayout.of(x, self.dim)
        flat = layout.flatten(x)
        if not host_values(torch.isfinite(flat).all().reshape(1))[0]:  # the forward's one host read
            raise ValueError("the quantizer input contains NaN/Inf; check the encoder (learning rate, precision)")
        tokens = flat.reshape(-1, self.code_dim)
        if self.training and self.kmeans_init and not self._codebook_is_ready():
            self._init_from_tokens(tokens.detach())
        codes = self.codes()
        if self.training:
            idx, nn_idx, nn_dist, stats = self._assign_train(tokens.detach(), codes.detach())
        else:
            idx, stats = self._assign_eval(tokens.detach(), codes.detach()), {}
        counts = column_counts(idx, self.num_codes)
        if self.training:
            with torch.no_grad():
                self.usage += counts
                nn_counts = counts if nn_idx is idx else column_counts(nn_idx, self.num_codes)
                if self.codebook_update == "ema":
                    nearest = self.ema_assignment == "nearest"
                    self._ema_update(tokens.detach(), nn_idx if nearest else idx, nn_counts if nearest else counts)
                if self.dead_code_threshold is not None:
                    self._restart_dead_codes(tokens.detach(), nn_counts, nn_dist)
            if self.codebook_update == "ema" or self.dead_code_threshold is not None:
                codes = self.codes()  # the updated codes; outside no_grad, so a projection still gets gradients
        z_q = codes[idx].to(tokens.dtype)
        loss = self.commitment * F.mse_loss(tokens, z_q.detach())
        if self.codebook_update == "gradient":
            loss = loss + self.codebook_weight * F.mse_loss(z_q, tokens.detach())
        out = self._estimate(tokens, z_q)
        probs = counts.float() / counts.sum().clamp(min=1)
        entropy = -torch.where(probs > 0, probs * probs.clamp(min=1e-30).log(), torch.zeros_like(probs)).sum()
        stats.update(perplexity=entropy.exp().detach(), used_fraction=(counts > 0).float().mean())
        return QuantizerOutput(layout.restore(out.reshape(flat.shape)), layout.indices(idx, self.heads), loss, stats)

    @torch.compiler.disable
    def _ema_update(self, tokens: torch.Tensor, idx: torch.Tensor, counts: torch.Tensor) -> None:
        """``N_k ← γN_k + (1−γ)n_k``, ``m_k ← γm_k + (1−γ)Σ_{i→k} z_i``, code_k = m_k / N_k (Laplace-smoothed)."""
        counts = counts.to(tokens.dtype)
        sums = torch.zeros_like(self.ema_sum).index_add_(0, idx, tokens.to(self.ema_sum.dtype))
        comm = self._comm()
        comm.all_reduce_(counts)
        comm.all_reduce_(sums)
        decay = self.ema_decay
        self.ema_count.mul_(decay).add_((1 - decay) * counts)
        self.ema_sum.mul_(decay).add_((1 - decay) * sums)
        total = self.ema_count.sum()
        smoothed = (self.ema_count + 1e-5) / (total + self.num_codes * 1e-5) * total
        self.codebook.data.copy_(self.ema_sum / smoothed[:, None])

    @torch.compiler.disable
    def _restart_dead_codes(self, tokens: torch.Tensor, nn_counts: torch.Tensor, nn_dist: torch.Tensor) -> None:
        """Move codes whose EMA nearest-neighbour share is below ``dead_code_threshold`` to tokens of the batch.

        ``nn_counts`` (K,): this rank's nearest-code counts of the batch; ``nn_dist`` (n,): each token's distance to
        its nearest code. ``restart_sampling="uniform"``: code k, if dead, moves to a token drawn uniformly for it (with
        replacement). ``"distance"``: rank 0's tokens in a random order drawn without replacement with probability
        ∝ ``nn_dist²`` (k-means++ seeding's weights, by Gumbel top-k: keys ``log d_i² + G_i``, G_i ~ Gumbel(0, 1), sorted
        descending); the j-th dead code (in index order) moves to the j-th token of that order, so dead codes go to
        distinct, badly quantised tokens (cycling through the order only when more codes than tokens are dead).
        Device-side (no host read): the counts and rank 0's candidate tokens travel in one all-reduce, so every rank
        replaces the same codes with the same tokens.
        """
        comm = self._comm()
        k, d = self.num_codes, self.code_dim
        n_local = tokens.shape[0]
        payload = torch.zeros(2 + k + k * d, device=tokens.device, dtype=torch.float32)  # n, flag, counts, tokens
        payload[0] = n_local
        payload[2 : 2 + k] = nn_counts.float()
        if comm.rank == 0 and n_local > 0:
            payload[2 + k :] = tokens[self._restart_picks(nn_dist)].float().reshape(-1)
            payload[1] = 1.0  # rank 0 had candidate tokens
        comm.all_reduce_(payload)
        n, has_candidates = payload[0], payload[1] > 0
        counts, candidates = payload[2 : 2 + k], payload[2 + k :].reshape(k, d)
        share = counts * k / n.clamp(min=1)
        self.nn_share.mul_(self.usage_decay).add_((1 - self.usage_decay) * share)
        dead = (self.nn_share < self.dead_code_threshold) & has_candidates
        if self.restart_sampling == "distance":
            candidates = candidates[(dead.long().cumsum(0) - 1).clamp(min=0)]  # the j-th dead code: the j-th candidate
        self.restarts += dead.sum()
        self.nn_share.copy_(torch.where(dead, torch.ones_like(self.nn_share), self.nn_share))
        candidates = candidates.to(self.codebook.dtype)
        self.codebook.data.copy_(torch.where(dead[:, None], candidates, self.codebook.data))
        if self.codebook_update == "ema":
            mean_count = self.ema_count.mean()
            self.ema_count.copy_(torch.where(dead, mean_count.expand_as(self.ema_count), self.ema_count))
            self.ema_sum.copy_(torch.where(dead[:, None], candidates * mean_count, self.ema_sum))

    def _restart_picks(self, nn_dist: torch.Tensor) -> torch.Tensor:
        """(K,) indices of the batch tokens offered to the K codes (slot j: code j for ``"uniform"``, the j-th dead code
        for ``"distance"``; see :meth:`_restart_dead_codes`). ``nn_dist`` (n,), n ≥ 1."""
        n, k, device = nn_dist.shape[0], self.num_codes, nn_dist.device
        if self.restart_sampling == "uniform":
            return torch.randint(n, (k,), device=device)
        weights = nn_dist.float().square().clamp(min=1e-30)
        gumbel = -torch.log(-torch.log(torch.rand(n, device=device).clamp(1e-20, 1.0 - 1e-7)))
        order = (weights.log() + gumbel).argsort(descending=True)  # weighted order without replacement (Gumbel top-k)
        return order[torch.arange(k, device=device) % n]

    def _estimate(self, z: torch.Tensor, z_q: torch.Tensor) -> torch.Tensor:
        if self.estimator == "ste":
            return z + (z_q - z).detach()
        # rotation trick: z_q ≈ s R z with R the rotation taking z/|z| to z_q/|z_q| (treated as constant)
        with torch.no_grad():
            e = F.normalize(z, dim=1)
            q = F.normalize(z_q, dim=1)
            r = F.normalize(e + q, dim=1)
            scale = z_q.norm(dim=1, keepdim=True) / z.norm(dim=1, keepdim=True).clamp(min=1e-12)
        rz = z - 2 * r * (r * z).sum(1, keepdim=True) + 2 * q * (e * z).sum(1, keepdim=True)
        return scale * rz

    def reset_counters(self) -> None:
        self.usage.zero_()
        self.disagreements.zero_()


def _finite_positive(value: object) -> bool:
    """Whether ``value`` is a finite int or float > 0 (a valid ε or ρ)."""
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


@torch.no_grad()
def kmeans(points: torch.Tensor, k: int, iters: int = 10, generator: torch.Generator | None = None) -> torch.Tensor:
    """(k, d) k-means centres of ``points`` (n, d): greedy k-means++ seeding, then ``iters`` Lloyd steps.

    With fewer points than centres, the points are repeated with a little noise (std 1e-3 of theirs).
    An emptied centre keeps its position.
    """
    n = points.shape[0]
    if n == 0:
        raise ValueError("k-means needs at least one point")
    if n < k:
        reps = points.repeat((k + n - 1) // n, 1)[:k]
        noise = torch.randn(reps.shape, generator=generator, device=points.device) * (1e-3 * points.std().clamp(min=1e-6))
        return reps + noise
    trials = 2 + int(math.log(k))  # greedy k-means++ (Arthur & Vassilvitskii): best of a few candidates
    first = torch.randint(n, (1,), generator=generator, device=points.device)
    best = (points - points[first]).square().sum(1)
    chosen = torch.empty(k, dtype=torch.long, device=points.device)
    chosen[0] = first
    for j in range(1, k):  # the next centre drawn with probability ∝ squared distance, keeping the best draw
        picks = torch.multinomial(best + 1e-12, trials, replacement=True, generator=generator)
        candidate = torch.minimum(best[None], torch.cdist(points[picks], points).square())  # (trials, n)
        winner = candidate.sum(1).argmin()  # stays on the device
        chosen[j] = picks[winner]
        best = candidate[winner]
    centres = points[chosen].clone()
    for _ in range(iters):
        assign = torch.cdist(points, centres).min(1).indices
        sums = torch.zeros_like(centres).index_add_(0, assign, points)
        counts = torch.bincount(assign, minlength=k).to(points.dtype)
        filled = counts > 0
        centres = torch.where(filled[:, None], sums / counts.clamp(min=1)[:, None], centres)
    return centres


OPTVQ_ITERATIONS = 5


@torch.no_grad()
def optvq_assignments(
    dists: torch.Tensor, inverse_temperature: float = 10.0, iters: int = OPTVQ_ITERATIONS,
    comm: Communicator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The official OptVQ assignment of tokens to codes, its numerical guards included.

    ``dists`` (n, K) Euclidean distances. In float32, as the official code: this process's
    normalisation ``A = (A − mean A)/(std A + 1e-6); A ← A − min A``; ``Q = exp(−A·T)ᵀ`` (K, n) with the
    inverse temperature T (= 1/ε); ``Q /= ΣQ + 1e-8``; ``iters`` times: each code row
    ``Q /= (Σ_row + 1e-8)·K``, each token column ``Q /= (Σ_col + 1e-8)·B``; code = argmax over codes.
    The total and the code-row sums are all-reduced over ``comm`` (B = tokens of all ranks), as the official
    code does when distributed. The guards matter where a code's row sum underflows them (a code far from
    every token, early in training): the codes then differ from a guard-free Sinkhorn's for a few percent
    of the tokens.

    Returns:
        ``(codes (n,) int64, g (K,) the code potentials ε log(row scaling), (mean, std, min) of the normalisation)``.
    """
    comm = comm or Communicator()
    with full_precision(dists.device):
        a = dists.float()
        mean, std = a.mean(), a.std()
        a = (a - mean) / (std + 1e-6)
        low = a.min()
        a = a - low
        q = torch.exp(-a * inverse_temperature).T  # (K, n)
        k, n_local = q.shape
        n = sum(comm.gather_sizes(n_local, device=dists.device))
        total = comm.all_reduce_(q.sum().reshape(1))
        q /= total + 1e-8
        log_rows = torch.zeros(k, 1, device=q.device)
        for _ in range(iters):
            rows = comm.all_reduce_(q.sum(1, keepdim=True))
            q /= rows + 1e-8
            q /= k
            log_rows -= torch.log((rows + 1e-8) * k)
            q /= q.sum(0, keepdim=True) + 1e-8
            q /= n
        codes = q.T.max(1).indices  # the first maximum, as argmax
        g = log_rows[:, 0] / inverse_temperature
        return codes, g, torch.stack([mean, std, low])
