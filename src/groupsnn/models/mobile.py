"""A small MobileNetV3/EfficientNet-style CNN: inverted residual blocks with SiLU, depthwise
convolutions and squeeze-excitation gates (a sigmoid times the features)."""
import torch
import torch.nn as nn

from ._registry import register_model


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, squeezed: int):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.reduce, self.act = nn.Conv2d(channels, squeezed, 1), nn.SiLU()
        self.expand = nn.Conv2d(squeezed, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.expand(self.act(self.reduce(self.pool(x)))))


def _conv_bn(c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, groups=groups, bias=False), nn.BatchNorm2d(c_out)]


class InvertedResidual(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, expand: int = 4):
        super().__init__()
        hidden = c_in * expand
        self.body = nn.Sequential(*_conv_bn(c_in, hidden, 1), nn.SiLU(),
                                  *_conv_bn(hidden, hidden, 3, stride, groups=hidden), nn.SiLU(),
                                  SqueezeExcite(hidden, max(8, c_in // 4)), *_conv_bn(hidden, c_out, 1))
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        return x + out if self.residual else out


@register_model
def silu_se_cnn(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """Stem, four inverted residual blocks with SiLU and squeeze-excitation, global pool, linear."""
    return nn.Sequential(*_conv_bn(in_channels, 16, 3), nn.SiLU(),
                         InvertedResidual(16, 16, 1), InvertedResidual(16, 24, 2),
                         InvertedResidual(24, 24, 1), InvertedResidual(24, 40, 2),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(40, num_classes))
