"""Warm starts, fixed-iteration mode, zero masses, chunking and the convergence warning."""
import numpy as np
import pytest
import torch

from otlearn.ot import SinkhornConvergenceWarning, SinkhornSolver, AssignmentProblem, sinkhorn

from .conftest import random_problem


@pytest.mark.parametrize("mode", ["log", "kernel"])
def test_warm_start_cuts_iterations(mode):
    scores, _, _ = random_problem(0, 2000, 100, kind="logprob", dtype=torch.float32)
    eps = 0.1
    first = sinkhorn(scores, eps, tol=1e-3, mode=mode)
    perturbed = scores + 1e-3 * torch.randn(scores.shape, generator=torch.Generator().manual_seed(1))
    cold = sinkhorn(perturbed, eps, tol=1e-3, mode=mode)
    warm = sinkhorn(perturbed, eps, tol=1e-3, init_g=first.g, mode=mode)
    assert cold.converged and warm.converged
    assert warm.n_iters * 3 <= cold.n_iters, (warm.n_iters, cold.n_iters)
    # both meet tol; at tol 1e-3 single entries of a plan may still move by a few percent
    assert torch.allclose(warm.plan(), cold.plan(), rtol=0.1, atol=1e-8)
    assert (warm.assignments() == cold.assignments()).float().mean() > 0.99


def test_modes_and_chunk_sizes_agree():
    scores, a, b = random_problem(4, 333, 17)
    results = [
        sinkhorn(scores, 0.1, a=a, b=b, tol=1e-8, max_iter=10_000, dtype=torch.float64, mode=m, chunk_size=c)
        for m, c in [("log", None), ("log", 7), ("kernel", None), ("kernel", 50)]
    ]
    for r in results[1:]:
        assert torch.allclose(r.plan(), results[0].plan(), rtol=1e-6, atol=1e-15)
        assert torch.equal(r.assignments(), results[0].assignments())


def test_fixed_iterations_run_exactly_max_iter():
    scores, _, _ = random_problem(1, 100, 10)
    result = sinkhorn(scores, 0.05, tol=None, max_iter=7)
    assert result.n_iters == 7 and result.errors == [] and not result.converged
    assert torch.allclose(result.plan().sum(1), torch.full((100,), 0.01), rtol=1e-5)


def test_not_converged_warns_with_error_reached():
    scores, _, _ = random_problem(2, 300, 30)
    with pytest.warns(SinkhornConvergenceWarning, match=r"error [0-9.e-]+ > tol 1e-06 after 3 iterations"):
        result = sinkhorn(scores, 0.01, tol=1e-6, max_iter=3, eps_scaling=None)
    assert not result.converged and result.n_iters == 3 and result.error > 1e-6


def test_zero_row_and_column_masses():
    scores, a, b = random_problem(5, 60, 8)
    a[::3] = 0
    b[2] = 0
    for mode in ("log", "kernel"):
        r = sinkhorn(scores, 0.1, a=a, b=b, tol=1e-9, max_iter=10_000, dtype=torch.float64, mode=mode)
        plan = r.plan()
        assert r.converged and not torch.isnan(plan).any()
        assert plan[::3].abs().max() == 0 and plan[:, 2].abs().max() == 0
        assert torch.allclose(plan.sum(0), b / b.sum(), rtol=1e-8, atol=1e-15)
        assert (r.assignments() != 2).all()
        counts = torch.bincount(r.balanced_assignments(), minlength=8)
        assert counts[2] == 0 and counts.sum() == 60


def test_solver_is_reusable_and_rejects_bad_config():
    solver = SinkhornSolver(tol=1e-4, max_iter=500)
    for seed in range(3):
        scores, _, _ = random_problem(seed, 50, 5)
        assert solver(AssignmentProblem.build(scores, 0.2)).converged
    for kwargs, match in [
        (dict(tol=0), "tol"), (dict(max_iter=0), "max_iter"), (dict(mode="fast"), "mode"),
        (dict(eps_scaling=1.5), "eps_scaling"), (dict(check_every=0), "check_every"),
    ]:
        with pytest.raises(ValueError, match=match):
            SinkhornSolver(**kwargs)


def test_result_is_invariant_to_score_shift_per_row():
    """Adding a constant to a row changes f, not the plan (a cost shift is no information)."""
    scores, _, _ = random_problem(6, 80, 9)
    shifted = scores + 1000 * torch.randn(80, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    r1 = sinkhorn(scores, 0.1, tol=1e-9, max_iter=10_000, dtype=torch.float64)
    r2 = sinkhorn(shifted, 0.1, tol=1e-9, max_iter=10_000, dtype=torch.float64)
    np.testing.assert_allclose(r1.plan().numpy(), r2.plan().numpy(), rtol=1e-6, atol=1e-14)


def test_solver_result_does_not_pin_the_scores_unless_asked():
    import gc
    import weakref

    scores, a, b = random_problem(11, 300, 12, dtype=torch.float32)
    result = SinkhornSolver()(AssignmentProblem.build(scores, 0.2, a=a, b=b))
    labels_while_alive = result.assignments()  # works while the caller holds the scores
    expected = sinkhorn(scores, 0.2, a=a, b=b).assignments()
    assert torch.equal(labels_while_alive, expected)
    alive = weakref.ref(scores)
    del scores
    gc.collect()
    assert alive() is None, "a solver's result kept the (n, K) scores alive"
    with pytest.raises(RuntimeError, match="released"):
        result.plan()
    assert result.g.shape == (12,) and result.f.shape == (300,)  # the potentials stay usable

    kept_scores, _, _ = random_problem(12, 300, 12, dtype=torch.float32)
    kept = SinkhornSolver(keep_scores=True)(AssignmentProblem.build(kept_scores, 0.2))
    alive = weakref.ref(kept_scores)
    del kept_scores
    gc.collect()
    assert alive() is not None
    assert kept.plan().sum().item() == pytest.approx(1.0, abs=1e-5)


def test_functional_sinkhorn_keeps_a_temporary_and_exposes_every_solver_option():
    import dataclasses
    import inspect

    scores, _, _ = random_problem(13, 50, 5, dtype=torch.float32)
    plan = sinkhorn(torch.log_softmax(scores, 1), 0.1).plan()  # a temporary argument
    assert plan.shape == (50, 5)
    params = inspect.signature(sinkhorn).parameters
    for f in dataclasses.fields(SinkhornSolver):
        if not f.init or f.name in ("reuse_kernel", "keep_scores"):
            continue
        assert f.name in params, f"sinkhorn() lacks the solver option {f.name}"
        assert params[f.name].default == f.default, (f.name, params[f.name].default, f.default)


def test_functional_sinkhorn_takes_a_configured_solver():
    scores, a, b = random_problem(14, 200, 9)
    solver = SinkhornSolver(tol=1e-9, max_iter=5000, mode="log", chunk_size=33)
    via_solver = sinkhorn(scores, 0.1, a=a, b=b, dtype=torch.float64, solver=solver)
    via_options = sinkhorn(scores, 0.1, a=a, b=b, dtype=torch.float64, tol=1e-9, max_iter=5000, mode="log", chunk_size=33)
    assert via_solver.mode == "log" and via_solver.converged
    assert torch.equal(via_solver.g, via_options.g)
    with pytest.raises(ValueError, match="not both"):
        sinkhorn(scores, 0.1, solver=solver, tol=1e-4)


@pytest.mark.parametrize("chunk_size", [None, 1, 37, 128])
def test_kernel_cpu_row_blocks_match_pot(chunk_size):
    """The kernel's fused CPU loop over row blocks (several blocks: ``chunk_size`` rows, or the cache-sized
    default on a wide problem) gives POT's float64 plan."""
    import ot

    from otlearn.ot.operators import KernelOperator

    from .conftest import plan_from_potentials

    n, k = (300, 1500) if chunk_size is None else (300, 20)  # the default block holds ~262 rows of 1500 float64
    scores, a, b = random_problem(21, n, k, kind="logprob")
    problem = AssignmentProblem.build(scores, 0.5, a=a, b=b, dtype=torch.float64)
    op = KernelOperator(problem, chunk_size, torch.empty(n, k, dtype=torch.float64))
    expected_blocks = -(-n // (chunk_size or (3 << 20) // (k * 8)))
    assert op.cpu_blocks is not None and len(op.cpu_blocks) == expected_blocks > 1
    result = sinkhorn(scores, 0.5, a=a, b=b, tol=1e-10, max_iter=20_000, dtype=torch.float64, mode="kernel",
                      chunk_size=chunk_size)
    assert result.mode == "kernel" and result.converged
    reference = ot.sinkhorn(a.numpy(), b.numpy(), -scores.numpy(), 0.5, method="sinkhorn_log", stopThr=1e-12,
                            numItermax=50_000)
    plan = plan_from_potentials(result, scores, 0.5).numpy()
    assert np.abs(plan - reference).max() / reference.max() < 1e-6
