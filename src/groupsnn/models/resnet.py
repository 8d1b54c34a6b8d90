"""ResNets of He et al. (2016): torchvision's ResNet-18/34 (same state_dict keys) and CIFAR ResNet-20.

Every ReLU call site owns its ``nn.ReLU`` module, so swapping each one for a QCFS activation or a
spiking neuron gives every site its own threshold and membrane state. ReLUs hold no parameters,
so their names do not touch the state_dict: torchvision checkpoints load unchanged.
"""
from typing import Optional, Sequence

import torch
import torch.nn as nn

from ._registry import register_model


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """Two conv3x3+BN with a ReLU between and one after the residual sum."""

    def __init__(self, in_channels: int, channels: int, stride: int = 1, downsample: Optional[nn.Module] = None):
        super().__init__()
        self.conv1 = conv3x3(in_channels, channels, stride)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(channels, channels)
        self.bn2 = nn.BatchNorm2d(channels)
        self.downsample = downsample
        self.relu2 = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + identity)


class ResNet(nn.Module):
    """Stem, one stage of ``BasicBlock`` per entry of ``depths`` (``layer1``...), global pool, ``fc``.

    stem="imagenet": conv7x7/2 + max-pool/2 (torchvision); stem="cifar": conv3x3/1 and no pool
    (``maxpool`` stays as an ``nn.Identity`` so module names match). Shortcuts that change shape
    are 1x1 conv + BN projections (option B of He et al.), as in torchvision.
    """

    def __init__(self, depths: Sequence[int], widths: Sequence[int], num_classes: int = 1000,
                 in_channels: int = 3, stem: str = "imagenet"):
        super().__init__()
        if stem == "imagenet":
            self.conv1 = nn.Conv2d(in_channels, widths[0], 7, stride=2, padding=3, bias=False)
            self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        elif stem == "cifar":
            self.conv1 = conv3x3(in_channels, widths[0])
            self.maxpool = nn.Identity()
        else:
            raise ValueError(f"unknown stem {stem!r}; use 'imagenet' or 'cifar'")
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)

        c = widths[0]
        for i, (depth, width) in enumerate(zip(depths, widths)):
            stride = 1 if i == 0 else 2
            downsample = None
            if stride != 1 or c != width:
                downsample = nn.Sequential(nn.Conv2d(c, width, 1, stride=stride, bias=False), nn.BatchNorm2d(width))
            blocks = [BasicBlock(c, width, stride, downsample)] + [BasicBlock(width, width) for _ in range(depth - 1)]
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
            c = width
        self.num_stages = len(depths)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, num_classes)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for i in range(1, self.num_stages + 1):
            x = getattr(self, f"layer{i}")(x)
        return self.fc(torch.flatten(self.avgpool(x), 1))


@register_model
def resnet18(num_classes: int = 1000, in_channels: int = 3, stem: str = "imagenet") -> nn.Module:
    """ResNet-18 (11.7 M parameters with the ImageNet stem and 1000 classes)."""
    return ResNet([2, 2, 2, 2], [64, 128, 256, 512], num_classes, in_channels, stem)


@register_model
def resnet34(num_classes: int = 1000, in_channels: int = 3, stem: str = "imagenet") -> nn.Module:
    """ResNet-34 (21.8 M parameters with the ImageNet stem and 1000 classes)."""
    return ResNet([3, 4, 6, 3], [64, 128, 256, 512], num_classes, in_channels, stem)


@register_model
def resnet20(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """CIFAR ResNet-20 (He et al. 2016, Sec. 4.2): 3 stages of 3 blocks, 16/32/64 channels, 0.27 M params.

    Uses 1x1 projection shortcuts (option B) where the shape changes, not the paper's zero-padding
    (option A): 2.8 k more parameters, and no parameter-free padding op for the SNN converter to handle.
    """
    return ResNet([3, 3, 3], [16, 32, 64], num_classes, in_channels, stem="cifar")
