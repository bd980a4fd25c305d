"""A model whose forward calls OTVectorQuantizer trains under torch.compile: the assignment (solver,
rounding, collectives) is excluded from tracing and runs eagerly, the rest is compiled."""
import pytest
import torch
from torch import nn

from otlearn.ot import SinkhornSolver
from otlearn.vq import OPTVQ_SETTINGS, OTVectorQuantizer


class TinyVQ(nn.Module):
    def __init__(self, **settings) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(12, 32), nn.GELU(), nn.Linear(32, 8))
        self.quantizer = OTVectorQuantizer(32, 8, rounding="balanced", solver=SinkhornSolver(tol=None, max_iter=10), **settings)
        self.decoder = nn.Sequential(nn.Linear(8, 32), nn.GELU(), nn.Linear(32, 12))

    def forward(self, x):
        out = self.quantizer(self.encoder(x))
        return nn.functional.mse_loss(self.decoder(out.quantized), x) + out.loss, out.indices


def _train(model, step_fn, data, steps):
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for i in range(steps):
        loss, _ = step_fn(data[i % len(data)])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


@pytest.mark.parametrize("settings", ["default", "optvq"])
def test_quantizer_model_trains_under_torch_compile(settings):
    """Defaults (k-means init, EMA codebook: the init runs eagerly at the first batch) and OptVQ's settings."""
    settings = {} if settings == "default" else OPTVQ_SETTINGS
    torch._dynamo.reset()
    g = torch.Generator().manual_seed(0)
    data = [torch.randn(256, 12, generator=g) for _ in range(4)]
    torch.manual_seed(0)
    eager = TinyVQ(**settings)
    torch.manual_seed(0)
    compiled_model = TinyVQ(**settings)
    compiled = torch.compile(compiled_model)
    with torch.no_grad():
        _, eager_idx = eager(data[0])
        _, compiled_idx = compiled(data[0])
    assert torch.equal(eager_idx, compiled_idx)  # same weights, same codes
    losses = _train(compiled_model, compiled, data, 60)
    assert all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-4:]) < 0.9 * sum(losses[:4])
    counts = torch.bincount(compiled(data[0])[1].flatten(), minlength=32)
    assert counts.min() == counts.max() == 8  # balanced codes: 256 tokens over 32 codes
