"""Linear probe on frozen features: standardise, then multinomial logistic regression in torch
with early stopping on the loss of a validation split held out from the training features."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class LinearProbeResult:
    accuracy: float  # on the query (test) features
    val_accuracy: float  # validation accuracy of the kept (lowest validation loss) model
    epochs: int  # epochs trained before early stopping


@torch.enable_grad()  # callers are often inside no_grad (evaluation code usually is)
def linear_probe(
    train_features: torch.Tensor,
    train_targets: torch.Tensor,
    test_features: torch.Tensor,
    test_targets: torch.Tensor,
    val_fraction: float = 0.1,
    lr: float = 1e-2,
    weight_decay: float = 1e-4,
    max_epochs: int = 300,
    patience: int = 20,
    batch_size: int = 256,
    seed: int = 0,
) -> LinearProbeResult:
    """Train ``W x + c`` on standardised ``train_features`` (N, D); stop when the validation loss
    has not improved for ``patience`` epochs; report test accuracy of the best validation model."""
    if train_features.shape[1] != test_features.shape[1]:
        raise ValueError(f"feature dims differ: train {train_features.shape[1]}, test {test_features.shape[1]}")
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    gen = torch.Generator().manual_seed(seed)
    x = train_features.float()
    y = train_targets.long()
    perm = torch.randperm(x.shape[0], generator=gen)
    n_val = max(1, int(round(val_fraction * x.shape[0])))
    val_idx, fit_idx = perm[:n_val], perm[n_val:]
    mean, std = x[fit_idx].mean(0), x[fit_idx].std(0) + 1e-6
    xs = (x - mean) / std
    xt = (test_features.float() - mean) / std
    num_classes = int(max(y.max(), test_targets.max())) + 1
    model = torch.nn.Linear(x.shape[1], num_classes)
    torch.nn.init.zeros_(model.weight)  # the problem is convex: a fixed start makes the probe deterministic
    torch.nn.init.zeros_(model.bias)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    best = (float("inf"), None, 0, 0.0)
    stale = 0
    epoch = 0
    for epoch in range(1, max_epochs + 1):
        order = fit_idx[torch.randperm(fit_idx.numel(), generator=gen)]
        for start in range(0, order.numel(), batch_size):
            rows = order[start : start + batch_size]
            loss = F.cross_entropy(model(xs[rows]), y[rows])
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            val_logits = model(xs[val_idx])
            val_loss = float(F.cross_entropy(val_logits, y[val_idx]))
            val_acc = float((val_logits.argmax(1) == y[val_idx]).float().mean())
        if val_loss < best[0]:
            best = (val_loss, {k: v.clone() for k, v in model.state_dict().items()}, epoch, val_acc)
            stale = 0
        else:
            stale += 1
            if stale >= patience:
                break
    model.load_state_dict(best[1])
    with torch.no_grad():
        acc = float((model(xt).argmax(1) == test_targets.long()).float().mean())
    return LinearProbeResult(accuracy=acc, val_accuracy=best[3], epochs=epoch)
