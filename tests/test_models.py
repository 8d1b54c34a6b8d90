"""Model zoo: every registered model builds and runs; sizes and key names match the standard nets."""
from collections import Counter

import pytest
import torch
import torch.nn as nn

from groupsnn import models
from groupsnn.ops import COMPENSATED_MODULES, NONLINEAR_MODULES

INPUT_SHAPES = {"digits_cnn": (1, 8, 8), "mnist1d_cnn": (1, 40)}  # others take CIFAR-sized images


def input_for(name: str, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, *INPUT_SHAPES.get(name, (3, 32, 32)))


def count_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize("name", models.list_models())
def test_every_model_builds_and_runs(name):
    net = models.create(name, num_classes=7).eval()
    with torch.no_grad():
        assert net(input_for(name)).shape == (2, 7)


@pytest.mark.parametrize("name, kwargs, expected", [
    ("resnet20", dict(num_classes=10), 272_474),  # He et al. 2016: 0.27 M
    ("resnet18", dict(num_classes=1000), 11_689_512),  # torchvision
    ("resnet34", dict(num_classes=1000), 21_797_672),  # torchvision
    ("vgg16", dict(num_classes=10), 33_646_666),  # CIFAR VGG-16-BN, 512-4096-4096-10 head (QCFS code)
])
def test_parameter_counts_match_the_standard_nets(name, kwargs, expected):
    n = count_parameters(models.create(name, **kwargs))
    print(f"{name}: {n:,} parameters")
    assert n == expected  # the exact architectures, so the exact counts


def test_unknown_model_names_the_known_ones():
    with pytest.raises(ValueError, match="unknown model 'resnet9'.*resnet18.*vgg16"):
        models.create("resnet9")


def torchvision_resnet_keys(depths) -> set:
    """The state_dict keys of torchvision's ResNet with BasicBlocks, written out from its layout."""
    bn = ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    keys = {"conv1.weight", "fc.weight", "fc.bias"} | {f"bn1.{k}" for k in bn}
    for stage, depth in enumerate(depths, start=1):
        for block in range(depth):
            prefix = f"layer{stage}.{block}"
            keys |= {f"{prefix}.conv1.weight", f"{prefix}.conv2.weight"}
            keys |= {f"{prefix}.{b}.{k}" for b in ("bn1", "bn2") for k in bn}
        if stage > 1:
            keys |= {f"layer{stage}.0.downsample.0.weight"} | {f"layer{stage}.0.downsample.1.{k}" for k in bn}
    return keys


@pytest.mark.parametrize("name, depths, num_keys", [("resnet18", [2, 2, 2, 2], 122), ("resnet34", [3, 4, 6, 3], 218)])
@pytest.mark.parametrize("stem", ["imagenet", "cifar"])
def test_resnet_state_dict_matches_torchvision(name, depths, num_keys, stem):
    state = models.create(name, num_classes=1000, stem=stem).state_dict()
    assert set(state) == torchvision_resnet_keys(depths)
    assert len(state) == num_keys
    assert state["conv1.weight"].shape == ((64, 3, 7, 7) if stem == "imagenet" else (64, 3, 3, 3))
    assert state["layer2.0.downsample.0.weight"].shape == (128, 64, 1, 1)
    assert state["layer4.1.bn2.running_mean"].shape == (512,)
    assert state["fc.weight"].shape == (1000, 512)


def test_resnet_rejects_an_unknown_stem():
    with pytest.raises(ValueError, match="unknown stem 'tiny'"):
        models.create("resnet18", stem="tiny")


@pytest.mark.parametrize("name", models.list_models())
def test_each_activation_module_is_called_once(name):
    """Each activation (or norm) call site has its own module, so the state of the neuron (or of the
    operation on rates) it becomes is never shared."""
    net = models.create(name, num_classes=10).eval()
    calls = Counter()
    relus = [m for m in net.modules() if isinstance(m, (*NONLINEAR_MODULES, *COMPENSATED_MODULES))]
    for relu in relus:
        relu.register_forward_hook(lambda module, args, out: calls.update([id(module)]))
    with torch.no_grad():
        net(input_for(name, batch=1))
    assert relus and all(calls[id(relu)] == 1 for relu in relus)
