"""Conversion is right on the networks people write: in-place activations, aliased modules,
functional calls, every registry model, and checkpoints that rebuild exactly what was made."""
import copy
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import groupsnn as gs
from groupsnn.checkpoint import load_model, make_meta, save_checkpoint
from groupsnn.recipe import recipe
from groupsnn.neurons import RateMaxPool
from groupsnn.train import default_model_kwargs


class InPlaceStatements(nn.Module):
    """In-place activations used for their effect: the results are thrown away."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(6, 6), nn.Linear(6, 6), nn.Linear(6, 6)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        h = self.fc1(x)
        F.relu_(h)
        g = self.fc2(h)
        self.relu(g)
        k = self.fc3(g)
        k.relu_()
        F.relu(g, inplace=True)
        return k + g + h


class Aliased(nn.Module):
    """One ReLU stored under two names, called through the second."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(6, 6), nn.Linear(6, 3)
        self.relu = self.act = nn.ReLU()

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Functional(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 6)

    def forward(self, x):
        return F.relu(self.fc(x))

    def width(self):
        return self.fc.out_features


@pytest.mark.parametrize("make", [InPlaceStatements, Aliased, Functional])
def test_prepare_without_levels_or_threshold_is_exactly_relu(make):
    net = make()
    x = torch.randn(16, 6) * 3
    ann = gs.prepare(net, levels=None, threshold=math.inf)
    assert not any(isinstance(m, nn.ReLU) for m in ann.modules())
    assert torch.equal(ann(x), net(x))


def test_in_place_sites_keep_their_effect_in_the_snn():
    ann = gs.prepare(InPlaceStatements(), levels=4, threshold=2.0).eval()
    snn = gs.convert(ann, tau=4)
    x = torch.randn(16, 6) * 3
    with torch.no_grad():
        out = ann(x)
        gs.reset(snn)
        assert torch.equal(snn(x), out)  # one step of the SNN module itself
    assert (out >= 0).all()  # h, g and k were all activated in place


def test_every_alias_of_a_swapped_module_is_swapped():
    net = Aliased()
    ann = gs.prepare(net, levels=4, threshold=2.0)
    assert type(ann) is Aliased and ann.act is ann.relu and isinstance(ann.act, gs.QCFS)
    snn = gs.convert(ann, tau=4)
    assert snn.act is snn.relu and isinstance(snn.act, gs.GroupNeuron)
    x = torch.randn(8, 6) * 3
    with torch.no_grad():
        assert torch.equal(gs.simulate(snn, x, 1)[0], ann(x))
    same = gs.prepare(net, inplace=True)
    assert same is net and isinstance(net.act, gs.QCFS) and net.act is net.relu


def test_a_graph_rewrite_is_a_graph_module_and_inplace_refuses_it():
    net = Functional()
    ann = gs.prepare(net)
    assert isinstance(ann, torch.fx.GraphModule) and type(ann).__name__ == "GraphModule"
    assert not isinstance(ann, Functional)  # it has the forward, not the user's other methods
    with pytest.raises(ValueError, match=r"inplace=True cannot rewrite Functional.*relu"):
        gs.prepare(net, inplace=True)
    assert not any(isinstance(m, gs.QCFS) for m in net.modules())  # refused before any change
    with pytest.raises(ValueError, match=r"InPlaceStatements.*relu_"):
        gs.prepare(InPlaceStatements(), inplace=True)


def test_the_recipe_survives_a_copy_of_a_graph_module():
    ann = gs.prepare(Functional(), levels=4, maxpool="keep")
    assert recipe(copy.deepcopy(ann)) == recipe(ann) == {"levels": 4, "maxpool": "keep", "source": f"{__name__}:Functional"}


def test_multi_step_conversion_is_refused_and_backward_through_neurons_raises():
    ann = gs.prepare(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU()), levels=4)
    with pytest.raises(ValueError, match="step_mode='m' is not supported"):
        gs.convert(ann, step_mode="m")
    snn = gs.convert(ann, tau=4)
    x = torch.randn(2, 1, 5, 5, requires_grad=True)
    out = snn(x)
    with pytest.raises(RuntimeError, match="SNN training through time is not supported"):
        out.sum().backward()


CIFAR_SHAPE, INPUT_SHAPES = (3, 32, 32), {"digits_cnn": (1, 8, 8), "mnist1d_cnn": (1, 40)}


@pytest.mark.parametrize("name", gs.models.list_models())
def test_gn_with_tau_equal_levels_at_one_step_is_the_qcfs_network(name):
    shape = INPUT_SHAPES.get(name, CIFAR_SHAPE)
    net = gs.models.create(name, num_classes=10, **default_model_kwargs(name, shape))
    x = torch.randn(2, *shape)
    ann = gs.calibrate(net, [x], levels=4, maxpool="avg")  # prepare(levels=4) with thresholds that fit x
    snn = gs.convert(ann, tau=4)
    assert type(ann) is type(snn) is type(net)  # module swaps suffice: the class and its methods stay
    with torch.no_grad():
        logits = ann(x)
        assert logits.std() > 0
        gs.reset(snn)
        assert torch.equal(snn(x), logits)  # one step of the SNN itself
        assert torch.equal(gs.simulate(snn, x, 1)[0], gs.simulate(ann, x, 1)[0])  # both as simulate runs them


def _fit(model, steps=3):
    """A few SGD steps on random digits-shaped data (changes weights, thresholds, BN statistics)."""
    optimiser = torch.optim.SGD(model.parameters(), lr=0.01)
    model.train()
    for _ in range(steps):
        loss = F.cross_entropy(model(torch.randn(16, 1, 8, 8)), torch.randint(0, 10, (16,)))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return model.eval()


def _qcfs_trained(maxpool):
    return _fit(gs.prepare(gs.models.create("digits_cnn"), levels=8, threshold=2.0, maxpool=maxpool))


def _calibrated(fuse_bn=False):
    net = gs.models.create("digits_cnn").eval()
    return gs.calibrate(net, [torch.randn(32, 1, 8, 8) for _ in range(2)], levels=8, per_channel=True,
                        maxpool="keep", fuse_bn=fuse_bn)


@pytest.mark.parametrize("make", [
    lambda: _qcfs_trained("avg"), lambda: _qcfs_trained("keep"), _calibrated,
    lambda: _calibrated(fuse_bn=True), lambda: _fit(_calibrated()),
], ids=["qcfs", "qcfs-maxpool", "calibrated", "calibrated-fused", "calibrated-fine-tuned"])
def test_a_saved_network_reloads_exactly(make, tmp_path):
    model = make()
    save_checkpoint(tmp_path / "net.pt", model, make_meta("digits_cnn", 10, 8, "digits"))
    loaded, meta = load_model(tmp_path / "net.pt")
    assert [type(m) for m in loaded.modules()] == [type(m) for m in model.modules()]
    x = torch.randn(16, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    snn = gs.convert(loaded, tau=8)
    assert any(isinstance(m, RateMaxPool) for m in snn.modules()) == (meta["network"]["maxpool"] == "keep")
