"""Autocast cannot reach the solver, the rounding or the quantizer's assignment.

Lightning's mixed precision runs training steps under ``torch.autocast``; on CUDA matrix products
would then run in 16 bits. A ``TorchFunctionMode`` sees whether autocast is active at each product
(CPU autocast to bfloat16 stands in for CUDA's here), and the results must equal float32's.
"""
import torch

from otlearn.ot import SinkhornSolver, balanced_assignments, sinkhorn
from otlearn.vq import OTVectorQuantizer
from tests._modes import AutocastSpy

from .conftest import random_problem


def test_solver_and_rounding_run_without_autocast_and_equal_float32():
    scores, _, _ = random_problem(0, 400, 30, kind="logprob", dtype=torch.float32)
    for mode in ("kernel", "log"):
        reference = sinkhorn(scores, 0.1, tol=1e-6, max_iter=5000, mode=mode, dtype=torch.float32)
        ref_balanced = reference.balanced_assignments()
        with torch.autocast("cpu", dtype=torch.bfloat16), AutocastSpy() as spy:
            assert torch.is_autocast_enabled("cpu")
            result = sinkhorn(scores, 0.1, tol=1e-6, max_iter=5000, mode=mode, dtype=torch.float32)
            plan = result.plan()
            balanced = balanced_assignments(result.problem, result.g)
        assert spy.calls, "the spy saw no matrix product"
        assert spy.under_autocast == [], spy.under_autocast
        assert result.converged and result.g.dtype == torch.float32 and plan.dtype == torch.float32
        torch.testing.assert_close(result.g, reference.g, rtol=0, atol=2e-6)
        assert torch.equal(balanced, ref_balanced)


def test_quantizer_assignment_runs_without_autocast_and_equals_float32():
    torch.manual_seed(0)
    x = torch.randn(512, 16)
    for rounding in ("argmax", "balanced"):
        torch.manual_seed(1)
        plain = OTVectorQuantizer(64, 16, rounding=rounding, solver=SinkhornSolver(tol=1e-4, max_iter=2000))
        torch.manual_seed(1)
        mixed = OTVectorQuantizer(64, 16, rounding=rounding, solver=SinkhornSolver(tol=1e-4, max_iter=2000))
        expected = plain(x).indices
        with torch.autocast("cpu", dtype=torch.bfloat16), AutocastSpy() as spy:
            out = mixed(x)
        assert any(name == "cdist" for name, _ in spy.calls)
        assert spy.under_autocast == [], spy.under_autocast
        assert torch.equal(out.indices, expected)
        assert float(out.stats["solver_error"]) <= 1e-4
