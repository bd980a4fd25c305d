"""OTVectorQuantizer: the assignment against the core solver and OptVQ's formula, DDP equality,
estimators, batch-independent inference, statistics and errors."""
import warnings

import numpy as np

import pytest
import torch

from otlearn.ot import SinkhornSolver, sinkhorn
from otlearn.vq import OPTVQ_SETTINGS, OTVectorQuantizer, usage_stats
from tests._cases import quantizer_case
from tests._dist import run_workers
from tests._harness import assert_sharded_equals_single

from ._workers import kmeans_init_shard


def _data(seed, n=300, d=8):
    g = torch.Generator().manual_seed(seed)
    return 2 * torch.randn(n, d, generator=g) + 1


def _normalised(x, codes):
    a = torch.cdist(x, codes)
    a = (a - a.mean()) / (a.std() + 1e-6)
    return a - a.min()


@pytest.mark.parametrize("seed", range(3))
def test_ot_assignment_is_the_core_solver_on_normalised_distances(seed):
    torch.manual_seed(seed)
    q = OTVectorQuantizer(32, 8, solver=SinkhornSolver(tol=1e-6, max_iter=5000), **OPTVQ_SETTINGS)
    x = _data(seed)
    out = q(x)
    ref = sinkhorn(-_normalised(x, q.codes().detach()), 0.1, tol=1e-6, max_iter=5000).assignments()
    assert torch.equal(out.indices[:, 0], ref)
    counts = torch.bincount(out.indices.flatten(), minlength=32)
    assert counts.min() >= 4  # every code used, near-equal shares (300 / 32 ≈ 9.4)


def optvq_reference(x, codes, inverse_temperature=10.0, iters=5, guard=1e-8):
    """The published OptVQ assignment, written from its description: float32 cdist; A = (A − mean)/(std + 1e-6),
    A −= min; Q = exp(−A·10)ᵀ; Q /= ΣQ + guard; 5 x (each code row: Q /= (Σ + guard), Q /= K; each token column:
    Q /= (Σ + guard), Q /= B); Q *= B; code = argmax. ``guard=0`` is the guard-free textbook loop."""
    a = torch.cdist(x.float(), codes.float())
    a = (a - a.mean()) / (a.std() + 1e-6)
    a = a - a.min()
    q = torch.exp(-a * inverse_temperature).t()
    k, b = q.shape
    q /= q.sum() + guard
    for _ in range(iters):
        q /= q.sum(dim=1, keepdim=True) + guard
        q /= k
        q /= q.sum(dim=0, keepdim=True) + guard
        q /= b
    q *= b
    return q.t().argmax(-1)


@pytest.mark.parametrize("seed", range(3))
def test_optvq_mode_reproduces_optvq(seed):
    torch.manual_seed(seed)
    q = OTVectorQuantizer(64, 8, assignment="optvq", **OPTVQ_SETTINGS)
    x = _data(seed, n=500)
    assert torch.equal(q(x).indices[:, 0], optvq_reference(x, q.codes().detach()))


@pytest.mark.parametrize("seed", range(3))
def test_optvq_mode_keeps_the_official_guards_where_they_change_codes(seed):
    """Early in training (a codebook far from the tokens, many codes with underflowing row sums) the 1e-8
    guards change some codes against a guard-free loop; assignment="optvq" follows the guarded official code."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(512, 8, generator=g)
    codes = torch.cat([torch.randn(200, 8, generator=g) * 0.5, torch.randn(824, 8, generator=g) * 3 + 4])
    q = OTVectorQuantizer(1024, 8, assignment="optvq", **{**OPTVQ_SETTINGS, "codebook_init": codes})
    ours = q(x).indices[:, 0]
    official = optvq_reference(x, codes)
    guard_free = optvq_reference(x, codes, guard=0.0)
    assert (official != guard_free).float().mean() > 0.005, "this case must exercise the guards"
    assert torch.equal(ours, official)


@pytest.mark.parametrize("sizes,normalize,rounding,assignment", [
    ([130, 57], "all", "argmax", "ot"), ([0, 101], "all", "argmax", "ot"), ([40, 33, 70], "dim", "argmax", "ot"),
    ([130, 57], "all", "balanced", "ot"), ([0, 61, 90], "all", "balanced", "ot"),
])
def test_distributed_assignment_equals_single_process(sizes, normalize, rounding, assignment):
    """W processes holding uneven shards (one empty) give the codes of one process on all tokens (the shared
    harness); the potentials and normalisation statistics agree to float32 reduction order. (``optvq`` is not
    among the cases: the official code normalises each process's distances by its own statistics, so its codes
    depend on the sharding by design.)"""
    x = _data(7, n=sum(sizes))
    single = assert_sharded_equals_single(quantizer_case, (x,), sizes,
                                          dict(k=24, normalize=normalize, rounding=rounding, assignment=assignment),
                                          row_outputs=("codes",), dtype=torch.float32, tolerance=(1e-5, 1e-6))
    if rounding == "balanced":
        counts = np.bincount(single["codes"].reshape(-1), minlength=24)
        assert counts.max() - counts.min() <= 1  # exactly balanced over the global batch


@pytest.mark.parametrize("estimator", ["ste", "rotation"])
@pytest.mark.parametrize("project", [False, True])
def test_gradients_reach_encoder_and_codebook(estimator, project):
    torch.manual_seed(0)
    q = OTVectorQuantizer(16, 8, estimator=estimator, project_codebook=project, **OPTVQ_SETTINGS)
    x = _data(1, n=64).requires_grad_(True)
    out = q(x)
    (out.quantized.square().sum() + out.loss).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert q.codebook.grad is not None and q.codebook.grad.abs().sum() > 0
    if project:
        assert q.projection.weight.grad.abs().sum() > 0
    # forward values are the codes either way
    assert torch.allclose(out.quantized, q.codes()[out.indices[:, 0]], atol=1e-5)


def test_spatial_and_multihead_shapes():
    q = OTVectorQuantizer(32, 16, heads=4)
    x = torch.randn(3, 16, 5, 6)
    out = q(x)
    assert out.quantized.shape == x.shape and out.indices.shape == (3, 4, 5, 6)
    tokens = x.permute(0, 2, 3, 1).reshape(-1, 4)
    codes = q.codes().detach()
    assert torch.allclose(out.quantized.permute(0, 2, 3, 1).reshape(-1, 4), codes[out.indices.permute(0, 2, 3, 1).reshape(-1)])
    assert tokens.shape[0] == 3 * 5 * 6 * 4


@pytest.mark.parametrize("inference", ["nn", "potential"])
def test_inference_tokens_do_not_depend_on_the_batch(inference):
    torch.manual_seed(0)
    q = OTVectorQuantizer(32, 8, inference=inference)
    for seed in range(5):  # train a little so the EMAs exist
        q(_data(seed))
    q.eval()
    x = _data(99, n=50)
    together = q(x).indices
    alone = torch.cat([q(x[i : i + 1]).indices for i in range(50)])
    assert torch.equal(together, alone)
    if inference == "nn":
        assert torch.equal(together[:, 0], torch.cdist(x, q.codes().detach()).argmin(1))


def test_usage_statistics_against_hand_counts():
    counts = torch.tensor([4, 0, 4, 0])
    stats = usage_stats(counts)
    assert stats["utilization"] == 0.5 and stats["dead_codes"] == 2
    assert stats["perplexity"] == pytest.approx(2.0)
    q = OTVectorQuantizer(8, 2, assignment="nn", **OPTVQ_SETTINGS)
    with torch.no_grad():
        q.codebook.copy_(torch.arange(16, dtype=torch.float32).reshape(8, 2))
    out = q(torch.tensor([[0.0, 1.0], [0.1, 1.0], [2.0, 3.0], [14.0, 15.0]]))
    assert out.indices[:, 0].tolist() == [0, 0, 1, 7]
    assert out.stats["used_fraction"] == 3 / 8
    p = torch.tensor([0.5, 0.25, 0.25])
    assert out.stats["perplexity"] == pytest.approx(float(torch.exp(-(p * p.log()).sum())), rel=1e-5)
    assert q.usage.tolist() == [2, 1, 0, 0, 0, 0, 0, 1]


def test_bad_input_is_clear():
    q = OTVectorQuantizer(8, 4)
    with pytest.raises(ValueError, match="dimension 4"):
        q(torch.randn(5, 3))
    with pytest.raises(ValueError, match="NaN"):
        q(torch.full((5, 4), float("nan")))
    for kwargs, match in [(dict(num_codes=8, dim=6, heads=4), "divisible"), (dict(num_codes=8, dim=4, assignment="greedy"), "assignment"),
                          (dict(num_codes=8, dim=4, codebook_init=torch.zeros(3, 4)), "codebook_init")]:
        with pytest.raises(ValueError, match=match):
            OTVectorQuantizer(**kwargs)


def test_balanced_rounding_uses_every_code_equally():
    torch.manual_seed(0)
    q = OTVectorQuantizer(32, 8, rounding="balanced")
    x = _data(3, n=320)
    counts = torch.bincount(q(x).indices.flatten(), minlength=32)
    assert counts.tolist() == [10] * 32
    with pytest.raises(ValueError, match="rounding"):
        OTVectorQuantizer(8, 4, rounding="nearest")


def test_ema_codebook_tracks_assigned_tokens():
    torch.manual_seed(0)
    q = OTVectorQuantizer(16, 4, codebook_update="ema", ema_decay=0.5, rounding="balanced")
    assert not q.codebook.requires_grad
    x = torch.randn(160, 4) + 5
    for _ in range(30):
        out = q(x)
    # every code sits at the mean of the tokens assigned to it (the assignment has settled)
    idx = out.indices[:, 0]
    for k in range(16):
        assert torch.allclose(q.codebook[k], x[idx == k].mean(0), atol=1e-2)
    with pytest.raises(ValueError, match="codebook_update"):
        OTVectorQuantizer(8, 4, codebook_update="kmeans")


def test_checkpoint_without_warm_start_buffer_still_loads():
    """Quantizer state saved before ``warm_g`` existed loads strictly; the warm start is the EMA of g."""
    torch.manual_seed(0)
    q = OTVectorQuantizer(16, 4)
    q(torch.randn(200, 4))
    state = q.state_dict()
    for name in ("warm_g", "codebook_initialised", "nn_share", "restarts"):  # buffers added after the first release
        del state[name]
    fresh = OTVectorQuantizer(16, 4)
    fresh.load_state_dict(state)  # strict
    assert torch.equal(fresh.warm_g, q.ema_g) and bool(fresh.ema_initialised)
    assert bool(fresh.codebook_initialised) and torch.equal(fresh.codebook, q.codebook)  # no re-initialisation
    assert torch.equal(fresh.nn_share, torch.ones(16)) and int(fresh.restarts) == 0
    fresh.train()(torch.randn(200, 4))
    assert torch.equal(fresh.codebook_initialised, torch.tensor(True))


@pytest.mark.parametrize("seed", range(3))
def test_kmeans_reaches_sklearn_inertia(seed):
    """otlearn's k-means (k-means++ + 10 Lloyd steps) against scikit-learn's on seeded Gaussian blobs."""
    from sklearn.cluster import KMeans

    from otlearn.vq.quantizer import kmeans

    g = torch.Generator().manual_seed(seed)
    centres = 4 * torch.randn(24, 6, generator=g)
    x = centres[torch.randint(24, (2000,), generator=g)] + torch.randn(2000, 6, generator=g)
    runs = [kmeans(x, 24, iters=10, generator=torch.Generator().manual_seed(r)) for r in range(5)]
    inertia = float(np.median([float(torch.cdist(x, c).min(1).values.square().sum()) for c in runs]))
    refs = [KMeans(24, n_init=1, max_iter=10, random_state=r).fit(x.numpy()).inertia_ for r in range(5)]
    assert inertia <= 1.10 * float(np.median(refs))
    random_init = x[torch.randperm(2000, generator=g)[:24]]  # what a careless init reaches: this test can fail
    for _ in range(10):
        a = torch.cdist(x, random_init).argmin(1)
        random_init = torch.stack([x[a == j].mean(0) if (a == j).any() else random_init[j] for j in range(24)])
    assert inertia < float(torch.cdist(x, random_init).min(1).values.square().sum())
    few = kmeans(x[:5], 12, generator=torch.Generator().manual_seed(0))  # fewer points than centres
    assert few.shape == (12, 6) and torch.cdist(few, x[:5]).min(1).values.max() < 0.1


def test_kmeans_codebook_init_uses_the_first_training_batch():
    from otlearn.vq.quantizer import kmeans

    torch.manual_seed(0)
    q = OTVectorQuantizer(16, 4, codebook_init="kmeans", codebook_update="gradient")
    x = torch.randn(400, 4) * 3 + 7  # far from the N(0, 1) placeholder codes
    assert not bool(q.codebook_initialised)
    q(x)
    expected = kmeans(x, 16, iters=10, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(q.codebook.detach(), expected) and bool(q.codebook_initialised)
    q(x + 100)  # initialised once: a later batch does not re-initialise
    assert torch.allclose(q.codebook.detach(), expected)
    state = q.state_dict()
    fresh = OTVectorQuantizer(16, 4, codebook_init="kmeans", codebook_update="gradient")
    fresh.load_state_dict(state)
    assert bool(fresh.codebook_initialised) and torch.equal(fresh.codebook, q.codebook)


@pytest.mark.parametrize("rho", [0.3, 3.0])
def test_relaxed_code_marginal_is_the_core_relaxed_solver(rho):
    torch.manual_seed(1)
    q = OTVectorQuantizer(32, 8, b_penalty=rho, b_penalty_end=None, solver=SinkhornSolver(tol=1e-6, max_iter=5000),
                          codebook_update="gradient")
    x = _data(5, n=400)
    got = q(x).indices[:, 0]
    ref = sinkhorn(-_normalised(x, q.codes().detach()), 0.1, b_penalty=rho, tol=1e-6, max_iter=5000).assignments()
    assert torch.equal(got, ref)
    hard = sinkhorn(-_normalised(x, q.codes().detach()), 0.1, tol=1e-6, max_iter=5000).assignments()
    nearest = torch.cdist(x, q.codes().detach()).argmin(1)
    # relaxing moves the codes towards the nearest-neighbour ones
    assert (got == nearest).float().mean() > (hard == nearest).float().mean()
    with pytest.raises(ValueError, match="b_penalty"):
        OTVectorQuantizer(8, 4, b_penalty=0.0)
    with pytest.raises(ValueError, match="balanced"):
        OTVectorQuantizer(8, 4, b_penalty=1.0, rounding="balanced")


def test_kmeans_init_is_rank_zeros_on_every_rank():
    """Distributed k-means init: every rank holds the k-means codebook of rank 0's first batch."""
    from otlearn.vq.quantizer import kmeans

    x = _data(11, n=260)
    sizes = [120, 140]
    codebooks = run_workers(kmeans_init_shard, 2, x, sizes, 16)
    expected = kmeans(x[:120], 16, iters=10, generator=torch.Generator().manual_seed(0)).numpy()
    for book in codebooks:
        np.testing.assert_allclose(book, expected, rtol=1e-5, atol=1e-6)


def test_dead_codes_restart_at_tokens_and_healthy_codes_stay():
    """Codes no token picks as nearest are restarted at batch tokens once their EMA share drops below the
    threshold (0.1 of uniform, decay 0.9: after 22 steps), and then used; used codes are not restarted."""
    torch.manual_seed(0)
    x = _data(2, n=512, d=4)
    init = torch.cat([x[:8], x[:8].mean(0) + 50 + torch.arange(24, dtype=torch.float32)[:, None]])  # 24 far codes
    q = OTVectorQuantizer(32, 4, codebook_init=init, assignment="nn", codebook_update="gradient")
    for step in range(21):
        q(x)
    assert int(q.restarts) == 0  # 0.9^21 = 0.109 > 0.1: not yet
    q(x)  # 0.9^22 = 0.098
    assert int(q.restarts) == 24
    nearest_token = (q.codebook.detach()[:, None] - x[None]).abs().sum(-1).min(1).values  # exact, unlike cdist
    assert nearest_token[8:].max() == 0  # restarted exactly at tokens
    assert torch.equal(q.codebook.detach()[:8], init[:8])  # used codes untouched (no optimiser step here)
    q.eval()
    used = torch.bincount(q(x).indices.flatten(), minlength=32)
    assert (used > 0).float().mean() > 0.9
    off = OTVectorQuantizer(32, 4, codebook_init=init, assignment="nn", dead_code_threshold=None)
    for _ in range(80):
        off(x)
    assert int(off.restarts) == 0
    with pytest.raises(ValueError, match="dead_code_threshold"):
        OTVectorQuantizer(8, 4, dead_code_threshold=1.5)


@pytest.mark.parametrize("sampling", ["uniform", "distance"])
def test_dead_code_restarts_agree_across_ranks(sampling):
    from ._workers import restart_shard

    x = _data(4, n=300, d=4)
    results = run_workers(restart_shard, 2, x, [170, 130], 16, 70, sampling)
    (book0, restarts0, share0), (book1, restarts1, share1) = results
    assert restarts0 == restarts1 == 12
    np.testing.assert_array_equal(book0, book1)
    np.testing.assert_allclose(share0, share1)


@pytest.mark.parametrize("seed", range(3))
def test_distance_restarts_go_to_distinct_badly_quantised_tokens(seed):
    """``restart_sampling="distance"``: dead codes move to distinct tokens drawn ∝ squared distance to their nearest
    code. 190 tokens sit exactly on 8 live codes (distance 0) and 10 outliers lie far from every code, so the 6 dead
    codes must land on 6 distinct outliers; uniform sampling, from the same state, lands on few of them."""
    g = torch.Generator().manual_seed(seed)
    live = 3 * torch.randn(8, 4, generator=g)
    covered = live[torch.randint(8, (190,), generator=g)]
    outliers = live[:5].repeat(2, 1) + 6 + torch.randn(10, 4, generator=g)  # nearest code: a live one, far away
    x = torch.cat([covered, outliers])[torch.randperm(200, generator=g)]
    init = torch.cat([live, live.mean(0) + 100 + torch.arange(6, dtype=torch.float32)[:, None]])  # 6 far, dead codes
    landed = {}
    for sampling in ("uniform", "distance"):
        torch.manual_seed(seed)
        q = OTVectorQuantizer(14, 4, codebook_init=init, assignment="nn", codebook_update="gradient",
                              restart_sampling=sampling)
        for _ in range(22):  # 0.9^22 < 0.1: the dead codes restart at the 22nd step
            q(x)
        assert int(q.restarts) == 6
        new = q.codebook.detach()[8:]
        assert torch.equal(q.codebook.detach()[:8], live)  # live codes untouched
        on_outlier = torch.cdist(new, outliers).min(1).values < 1e-5
        landed[sampling] = int(on_outlier.sum())
        if sampling == "distance":
            assert on_outlier.all(), "every dead code restarts at an outlier token"
            assert torch.unique(new, dim=0).shape[0] == 6, "at distinct tokens"
    assert landed["uniform"] < 6  # 10 of 200 tokens: uniform draws find few of them
    with pytest.raises(ValueError, match="restart_sampling must be 'uniform' or 'distance'"):
        OTVectorQuantizer(8, 4, restart_sampling="farthest")


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("ema_assignment", ["plan", "nearest"])
def test_ema_update_averages_the_chosen_assignment(seed, ema_assignment):
    """One EMA step: ``N ← γN + (1−γ)n``, ``m ← γm + (1−γ)Σz``, code = m/N (smoothed), with ``n``, ``Σz`` counted
    over the plan's codes or over each token's nearest code (``torch.cdist`` argmin here, independently)."""
    x = _data(seed, n=200, d=4)
    init = x[torch.randperm(200, generator=torch.Generator().manual_seed(seed))[:12]] + 0.3
    q = OTVectorQuantizer(12, 4, codebook_init=init, ema_decay=0.5, dead_code_threshold=None, ema_assignment=ema_assignment)
    out = q(x)
    chosen = out.indices[:, 0] if ema_assignment == "plan" else torch.cdist(x, init).argmin(1)
    counts = torch.bincount(chosen, minlength=12).float()
    sums = torch.zeros(12, 4).index_add_(0, chosen, x)
    n_ema = 0.5 * torch.ones(12) + 0.5 * counts
    m_ema = 0.5 * init + 0.5 * sums
    smoothed = (n_ema + 1e-5) / (n_ema.sum() + 12e-5) * n_ema.sum()
    torch.testing.assert_close(q.codebook.detach(), m_ema / smoothed[:, None], rtol=1e-5, atol=1e-5)
    # the forward pass quantises to the plan's codes (of the updated codebook) either way
    torch.testing.assert_close(out.quantized, q.codebook.detach()[out.indices[:, 0]])
    if ema_assignment == "nearest":
        assert not torch.equal(out.indices[:, 0], chosen)
    with pytest.raises(ValueError, match="ema_assignment"):
        OTVectorQuantizer(8, 4, ema_assignment="soft")
    with pytest.raises(ValueError, match="codebook_update='ema'"):
        OTVectorQuantizer(8, 4, codebook_update="gradient", ema_assignment="nearest")


@pytest.mark.parametrize("seed", range(2))
def test_annealed_code_marginal_follows_its_schedule_and_resumes(seed):
    """ρ_t = ρ (ρ_end/ρ)^min(t/T, 1): each training step solves the core relaxed problem at that ρ; a state dict
    carries the step count, so a resumed quantizer continues the schedule where the first stopped."""
    rho, rho_end, steps = 3.0, 0.1, 4
    solver = SinkhornSolver(tol=1e-6, max_iter=5000)
    kwargs = dict(b_penalty=rho, b_penalty_end=rho_end, b_penalty_anneal_steps=steps, solver=solver,
                  codebook_update="gradient", codebook_init="normal", dead_code_threshold=None)
    torch.manual_seed(seed)
    q = OTVectorQuantizer(32, 8, **kwargs)
    expected = [rho * (rho_end / rho) ** min(t / steps, 1.0) for t in range(6)]
    for t in range(6):
        if t == 3:  # resume from a state dict half-way
            fresh = OTVectorQuantizer(32, 8, **kwargs)
            fresh.load_state_dict(q.state_dict())
            q = fresh
        assert q.current_b_penalty() == pytest.approx(expected[t], rel=1e-12)
        x = _data(100 * seed + t, n=400)
        codes = q.codes().detach().clone()
        got = q(x).indices[:, 0]
        ref = sinkhorn(-_normalised(x, codes), 0.1, b_penalty=expected[t], tol=1e-6, max_iter=5000).assignments()
        assert torch.equal(got, ref)
    assert int(q.train_steps) == 6
    q.eval()
    q(_data(7))  # inference neither counts nor moves the schedule
    assert int(q.train_steps) == 6
    constant = OTVectorQuantizer(8, 4, b_penalty=rho, b_penalty_end=None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a constant ρ asks for no run length
        constant(torch.randn(64, 4))
    assert constant.current_b_penalty() == rho and int(constant.train_steps) == 0
    for bad, match in [(dict(b_penalty_end=0.0, b_penalty_anneal_steps=4), "b_penalty_end"),
                       (dict(b_penalty_end=None, b_penalty_anneal_steps=4), "there is none"),
                       (dict(rounding="balanced", b_penalty_anneal_steps=4), "there is none"),
                       (dict(b_penalty_anneal_steps=None), "int >= 1 or 'auto'"),
                       (dict(b_penalty_anneal_steps=0), "int >= 1"), (dict(b_penalty_anneal_steps=2.5), "int >= 1"),
                       (dict(b_penalty=None, b_penalty_end=0.1), "needs b_penalty")]:
        with pytest.raises(ValueError, match=match):
            OTVectorQuantizer(8, 4, **bad)


def test_default_anneals_to_a_hundredth_once_told_the_run_length_and_warns_once_until_then():
    """The default schedule is ρ = 3 → 0.01 over T = the run's length. Without T (a plain loop that never calls
    set_anneal_steps) it keeps ρ = 3, counts its steps and says so once; told T later, it continues from the
    steps already taken. Hard code masses (balanced rounding, OptVQ's settings) have no schedule."""
    solver = SinkhornSolver(tol=1e-6, max_iter=5000)
    torch.manual_seed(0)
    q = OTVectorQuantizer(32, 8, solver=solver, codebook_update="gradient", codebook_init="normal", dead_code_threshold=None)
    assert (q.b_penalty, q.b_penalty_end, q.b_penalty_anneal_steps, q.anneal_steps_from_run) == (3.0, 0.01, None, True)
    with pytest.warns(UserWarning, match="no run length was set") as record:
        for t in range(2):
            x = _data(50 + t, n=400)
            codes = q.codes().detach().clone()
            ref = sinkhorn(-_normalised(x, codes), 0.1, b_penalty=3.0, tol=1e-6, max_iter=5000).assignments()
            assert torch.equal(q(x).indices[:, 0], ref)
    assert len([w for w in record if "no run length" in str(w.message)]) == 1
    q.set_anneal_steps(4)  # 2 of 4 steps already taken: half-way on the log scale
    assert q.current_b_penalty() == pytest.approx(3.0 * (0.01 / 3.0) ** 0.5, rel=1e-12)
    for bad in (0, -3, 2.0, True):
        with pytest.raises(ValueError, match="int >= 1"):
            q.set_anneal_steps(bad)
    for kwargs in (dict(rounding="balanced"), OPTVQ_SETTINGS, dict(b_penalty=0.01), dict(b_penalty_end=None)):
        fixed = OTVectorQuantizer(8, 4, **kwargs)
        assert fixed.b_penalty_end is None and not fixed.anneal_steps_from_run
        with pytest.raises(ValueError, match="no ρ schedule"):
            fixed.set_anneal_steps(10)
