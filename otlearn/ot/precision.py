"""Numerical code of otlearn runs outside autocast, in its own compute dtype.

Lightning's ``precision="16-mixed"``/``"bf16-mixed"`` runs ``training_step`` under
``torch.autocast``; on a GPU every ``mm``/``mv``/``@`` would then run in 16 bits, which puts an error
floor near 4e-3 on Sinkhorn's column sums (bfloat16) and re-casts the cached kernel every
iteration. :func:`full_precision` switches autocast off for the device the tensors live on.
"""
from __future__ import annotations

import contextlib

import torch


def full_precision(device: torch.device | str) -> contextlib.AbstractContextManager:
    """A context in which autocast is disabled for ``device``'s type (CPU, CUDA, ...)."""
    device_type = torch.device(device).type
    try:
        return torch.autocast(device_type=device_type, enabled=False)
    except RuntimeError:  # a device type autocast does not know: nothing to disable
        return contextlib.nullcontext()
