"""VGG-16 with batch norm for 32x32 inputs, laid out as in the QCFS reference code (Bu et al., ICLR 2022)."""
import torch
import torch.nn as nn

from ._registry import register_model

VGG16_PLAN = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


class VGG(nn.Module):
    """conv3x3(+bias)+BN+ReLU per int in ``plan``, max-pool(2) per "M", then a 4096-4096 classifier.

    For 32x32 inputs the five pools leave a 512x1x1 map, so the classifier starts at 512 features.
    """

    def __init__(self, plan: list, num_classes: int = 10, in_channels: int = 3, dropout: float = 0.5):
        super().__init__()
        layers, c = [], in_channels
        for item in plan:
            if item == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [nn.Conv2d(c, item, 3, padding=1), nn.BatchNorm2d(item), nn.ReLU(inplace=True)]
                c = item
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c, 4096), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(4096, 4096), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(4096, num_classes),
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


@register_model
def vgg16(num_classes: int = 10, in_channels: int = 3, dropout: float = 0.5) -> nn.Module:
    """CIFAR VGG-16 with BN and the 512-4096-4096-classes head (33.6 M parameters for 10 classes)."""
    return VGG(VGG16_PLAN, num_classes, in_channels, dropout)
