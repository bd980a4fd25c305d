"""The GPU path on a CUDA device (``make gpu-check``); skipped with the reason printed elsewhere.

* NCCL with world size 1 through every distributed path (solver with a group, balanced rounding,
  a SeLa label round, VQ EMA and monitor, PQ sync, feature gathering): no CPU tensor reaches NCCL;
* CUDA results equal CPU results;
* fixed-iteration solves run under ``torch.cuda.set_sync_debug_mode("error")``;
* CUDA autocast never reaches the solver's matrix products.
"""
import pytest
import torch

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device here: the GPU checks run on a GPU machine (make gpu-check)"
)


def test_every_distributed_path_on_nccl():
    from tests._dist import run_workers
    from tests._paths import assert_every_path, every_path

    (out,) = run_workers(every_path, 1, "cuda", timeout=300, backend="nccl")
    assert out["backend"] == "nccl"
    assert_every_path(out)


@pytest.mark.parametrize("mode", ["kernel", "log"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cuda_equals_cpu(mode, dtype):
    from otlearn.ot import sinkhorn

    g = torch.Generator().manual_seed(0)
    scores = torch.log_softmax(4 * torch.randn(3000, 64, generator=g), dim=1)
    b = torch.rand(64, generator=g) + 0.2
    cpu = sinkhorn(scores, 0.05, b=b, tol=1e-6, max_iter=20_000, mode=mode, dtype=dtype)
    gpu = sinkhorn(scores.cuda(), 0.05, b=b.cuda(), tol=1e-6, max_iter=20_000, mode=mode, dtype=dtype)
    assert gpu.converged and cpu.converged
    atol = 1e-4 if dtype == torch.float32 else 1e-9
    torch.testing.assert_close(gpu.g.cpu(), cpu.g, rtol=0, atol=atol)
    assert (gpu.assignments().cpu() == cpu.assignments()).float().mean() > 0.999
    counts = torch.bincount(gpu.balanced_assignments().cpu(), minlength=64)
    assert torch.equal(counts, torch.bincount(cpu.balanced_assignments(), minlength=64))


@pytest.mark.parametrize("mode", ["kernel", "log"])
def test_fixed_iteration_solves_never_synchronise(mode):
    from otlearn.ot import AssignmentProblem, SinkhornSolver

    scores = torch.nn.functional.normalize(torch.randn(4096, 128, device="cuda"), dim=1) @ \
        torch.nn.functional.normalize(torch.randn(3000, 128, device="cuda"), dim=1).T
    problem = AssignmentProblem.trusted(scores, 0.05)
    solver = SinkhornSolver(tol=None, max_iter=25, mode=mode)  # absorbs at 10 and 20 (kernel)
    solver(problem)  # warm-up outside the check
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        result = solver(problem)
        labels = result.assignments()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert result.n_iters == 25 and torch.isfinite(result.g).all() and labels.shape == (4096,)


def test_cuda_autocast_never_reaches_the_solver():
    from otlearn.ot import SinkhornSolver, sinkhorn
    from otlearn.vq import OTVectorQuantizer
    from tests._modes import AutocastSpy

    scores = torch.log_softmax(3 * torch.randn(2000, 50, device="cuda"), dim=1)
    reference = sinkhorn(scores, 0.1, tol=1e-5, max_iter=5000)
    quantizer = OTVectorQuantizer(64, 16, solver=SinkhornSolver(tol=1e-4, max_iter=2000)).cuda()
    x = torch.randn(1024, 16, device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16), AutocastSpy() as spy:
        result = sinkhorn(scores, 0.1, tol=1e-5, max_iter=5000)
        out = quantizer(x)
    assert spy.calls and spy.under_autocast == [], spy.under_autocast
    torch.testing.assert_close(result.g, reference.g, rtol=0, atol=1e-5)
    assert float(out.stats["solver_error"]) <= 1e-4
