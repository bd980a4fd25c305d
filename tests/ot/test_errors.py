"""Bad input gets a ValueError that names the problem."""
import pytest
import torch

from otlearn.ot import sinkhorn


@pytest.mark.parametrize(
    "scores,eps,kwargs,match",
    [
        (torch.tensor([[0.0, float("nan")], [1.0, 2.0]]), 0.1, {}, "1 NaN/Inf"),
        (torch.tensor([[0.0, float("inf")]]), 0.1, {}, "NaN/Inf"),
        (torch.zeros(3, 2), 0.0, {}, "eps must be a finite number > 0"),
        (torch.zeros(3, 2), -1.0, {}, "eps must be"),
        (torch.zeros(3, 2), float("nan"), {}, "eps must be"),
        (torch.zeros(3), 0.1, {}, r"shape \(n_local, K\)"),
        (torch.zeros(3, 2, 2), 0.1, {}, r"shape \(n_local, K\)"),
        (torch.zeros(3, 0), 0.1, {}, "K = 0"),
        (torch.zeros(3, 2, dtype=torch.long), 0.1, {}, "floating-point"),
        ([[0.0, 1.0]], 0.1, {}, "torch.Tensor"),
        (torch.zeros(3, 2), 0.1, {"a": torch.ones(4)}, r"a must have shape \(n_local,\) = \(3,\)"),
        (torch.zeros(3, 2), 0.1, {"b": torch.ones(3)}, r"b must have shape \(K,\) = \(2,\)"),
        (torch.zeros(3, 2), 0.1, {"a": torch.tensor([1.0, -1.0, 1.0])}, "negative"),
        (torch.zeros(3, 2), 0.1, {"b": torch.tensor([1.0, float("nan")])}, "NaN/Inf"),
        (torch.zeros(3, 2), 0.1, {"a": torch.zeros(3)}, "sum to 0"),
        (torch.zeros(3, 2), 0.1, {"b": torch.zeros(2)}, "all zeros"),
        (torch.zeros(0, 2), 0.1, {}, "0 rows"),
        (torch.zeros(3, 2), 0.1, {"dtype": torch.float16}, "torch.float32, torch.float64 or 'auto'"),
        (torch.zeros(3, 2), 0.1, {"init_g": torch.zeros(3)}, r"init_g must have shape \(K,\)"),
        (torch.zeros(3, 2), 0.1, {"init_g": torch.tensor([0.0, float("nan")])}, "init_g contains NaN"),
    ],
)
def test_bad_input_raises_value_error(scores, eps, kwargs, match):
    with pytest.raises(ValueError, match=match):
        sinkhorn(scores, eps, **kwargs)


def test_group_without_init_is_clear():
    import torch.distributed as dist

    if dist.is_initialized():  # pragma: no cover - pytest never initialises it
        pytest.fail("a default process group leaked into this test process")
    with pytest.raises(ValueError, match="torch.distributed is not initialized"):
        sinkhorn(torch.zeros(3, 2), 0.1, group=object())
