"""Small VGG-style CNNs for the embedded demo data sets."""
import torch.nn as nn

from ._registry import register_model

_LAYERS = {  # dims -> (conv, batch norm, max-pool, adaptive average pool)
    1: (nn.Conv1d, nn.BatchNorm1d, nn.MaxPool1d, nn.AdaptiveAvgPool1d),
    2: (nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d, nn.AdaptiveAvgPool2d),
}


def vgg_classifier(plan: list, in_channels: int, num_classes: int, dims: int = 2) -> nn.Sequential:
    """conv3+BN+ReLU for each int in ``plan``, max-pool(2) for each "P", then global pool + linear."""
    conv, norm, pool, global_pool = _LAYERS[dims]
    layers, c = [], in_channels
    for item in plan:
        if item == "P":
            layers.append(pool(2))
        else:
            layers += [conv(c, item, 3, padding=1, bias=False), norm(item), nn.ReLU()]
            c = item
    return nn.Sequential(*layers, global_pool(1), nn.Flatten(), nn.Linear(c, num_classes))


@register_model
def digits_cnn(num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    """VGG-style CNN for 8x8 scikit-learn digits: 7 conv+BN+ReLU layers and 2 max-pools.

    Deep on purpose: the quantisation error of each layer compounds, so a classic IF conversion
    collapses at T=1 on this net while the Group Neuron does not (the paper's point).
    """
    return vgg_classifier([32, 32, "P", 64, 64, "P", 128, 128, 128], in_channels, num_classes)


@register_model
def mnist1d_cnn(num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    """1-D VGG-style CNN for MNIST-1D (1x40 signals): 6 conv+BN+ReLU layers and 2 max-pools."""
    return vgg_classifier([32, 32, "P", 64, 64, "P", 128, 128], in_channels, num_classes, dims=1)
