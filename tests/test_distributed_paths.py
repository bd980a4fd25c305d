"""Every distributed path on a real gloo group of one process equals the same work without a group
(the CPU twin of tests/gpu's NCCL check)."""
from tests._dist import run_workers
from tests._paths import assert_every_path, every_path


def test_every_distributed_path_on_a_one_process_gloo_group():
    (out,) = run_workers(every_path, 1, "cpu", timeout=240)
    assert out["backend"] == "gloo"
    assert_every_path(out)
