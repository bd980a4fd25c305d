"""Backbones by name: any timm model (never pretrained: nothing is downloaded), or ``small_cnn``.

``build_backbone(name, in_chans) -> (module, feature_dim)``; the module maps images
(B, C, H, W) to features (B, feature_dim).
"""
from __future__ import annotations

import torch
from torch import nn


class SmallCNN(nn.Module):
    """A small conv net for tiny images (8x8 digits, 32x32 CIFAR): three conv-BN-ReLU stages.

    (B, C, H, W) -> (B, width * 4) after global average pooling.
    """

    def __init__(self, in_chans: int = 1, width: int = 32) -> None:
        super().__init__()

        def stage(cin: int, cout: int, pool: bool) -> list[nn.Module]:
            layers: list[nn.Module] = [
                nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
                nn.Conv2d(cout, cout, 3, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
            ]
            return layers + ([nn.MaxPool2d(2)] if pool else [])

        self.features = nn.Sequential(
            *stage(in_chans, width, True), *stage(width, 2 * width, True), *stage(2 * width, 4 * width, False)
        )
        self.num_features = 4 * width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).mean(dim=(2, 3))


def build_backbone(name: str, in_chans: int = 3, **kwargs) -> tuple[nn.Module, int]:
    """``small_cnn`` or a timm model name (``resnet18``, ``resnet50``, ``vit_small_patch16_224``…)."""
    if name == "small_cnn":
        net = SmallCNN(in_chans=in_chans, **kwargs)
        return net, net.num_features
    import timm

    if not timm.is_model(name):
        raise ValueError(f"unknown backbone {name!r}: use 'small_cnn' or a timm model name (timm.list_models())")
    net = timm.create_model(name, pretrained=False, num_classes=0, in_chans=in_chans, **kwargs)
    return net, int(net.num_features)
