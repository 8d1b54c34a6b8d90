"""Training-free correction of a converted SNN: gs.correct."""
import importlib

import pytest
import torch
import torch.nn as nn

import groupsnn as gs
from groupsnn.neurons import GroupNeuron, RateMaxPool, SpikingNeuron
from groupsnn.stats import layer_stats

correct_module = importlib.import_module("groupsnn.correct")  # gs.correct is the function


def small_cnn():
    """Conv → ReLU → Conv → ReLU → MaxPool → Linear → ReLU → Linear, random weights."""
    return nn.Sequential(nn.Conv2d(2, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8 * 4 * 4, 16), nn.ReLU(), nn.Linear(16, 4))


def batches(n=4, size=32, shape=(2, 8, 8)):
    return [(torch.randn(size, *shape), torch.zeros(size, dtype=torch.long)) for _ in range(n)]


def mean_gaps(stats):
    """Per layer, |SNN mean output − ANN mean activation| (what correct() drives to zero)."""
    return [abs(r["mean_output"] - r["ann_mean_output"]) for r in stats["layers"]]


@pytest.mark.parametrize("neuron, tau", [("if", 1), ("gn", 2)])
def test_correct_lowers_the_error_of_a_calibrated_network_at_two_steps(neuron, tau):
    data = batches()
    ann = gs.calibrate(small_cnn(), data, percentile=99.9)
    snn = gs.convert(ann, neuron, tau)
    assert any(isinstance(m, RateMaxPool) for m in snn.modules())  # max-pooling kept
    before = layer_stats(snn, data, 2, ann)
    assert gs.correct(snn, ann, data, timesteps=2) is snn
    after = layer_stats(snn, data, 2, ann)
    for gap_before, gap_after in zip(mean_gaps(before), mean_gaps(after)):
        assert gap_after < 0.2 * gap_before, (mean_gaps(before), mean_gaps(after))
    # matching the mean moves the first layer off round-to-nearest (its MSE may rise a little);
    # the layers after it get inputs closer to the ANN's
    for layer_before, layer_after in zip(before["layers"][1:], after["layers"][1:]):
        assert layer_after["conversion_mse"] < layer_before["conversion_mse"]
    assert all(m.v_init is not None for m in snn.modules() if isinstance(m, SpikingNeuron))


def test_correct_changes_nothing_where_the_snn_is_exact():
    data = batches()
    ann = gs.calibrate(small_cnn(), data, levels=4, per_channel=True)
    snn = gs.convert(ann, "gn", tau=4)  # τ = L at T = 1: the SNN is the ANN
    x = data[0][0]
    expected = gs.simulate(snn, x, 1)
    gs.correct(snn, ann, data, timesteps=1)
    assert all(m.v_init is None for m in snn.modules() if isinstance(m, SpikingNeuron))
    assert torch.equal(gs.simulate(snn, x, 1), expected)


def test_correct_works_on_a_residual_graph_module():
    torch.manual_seed(1)
    data = batches(n=2, size=8, shape=(3, 32, 32))
    ann = gs.calibrate(gs.models.create("resnet20", num_classes=10).eval(), data, percentile=99.9)
    snn = gs.convert(ann, "gn", tau=2)
    before = layer_stats(snn, data, 1, ann)
    gs.correct(snn, ann, data, timesteps=1, batches=2)
    after = layer_stats(snn, data, 1, ann)
    assert sum(mean_gaps(after)) < 0.5 * sum(mean_gaps(before))


class Residual(nn.Module):
    """Conv → ReLU → Conv → BN, ``+=`` the shortcut in place → F.relu → MaxPool → Linear → ReLU → Linear."""

    def __init__(self):
        super().__init__()
        self.conv1, self.act = nn.Conv2d(2, 8, 3, padding=1), nn.ReLU()
        self.conv2, self.bn = nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.pool, self.fc1, self.fc2 = nn.MaxPool2d(2), nn.Linear(8 * 4 * 4, 16), nn.Linear(16, 4)

    def forward(self, x):
        h = self.act(self.conv1(x))
        y = self.bn(self.conv2(h))
        y += h
        y = torch.nn.functional.relu(y)
        return self.fc2(torch.relu(self.fc1(self.pool(y).flatten(1))))


def corrections(snn, ann, data, timesteps, by_reruns=False, monkeypatch=None):
    """The ``v_init`` of every neuron after ``gs.correct``, layer by layer or (``by_reruns``) by
    running the network cut after each layer again from the input."""
    if by_reruns:
        monkeypatch.setattr(correct_module._LayerByLayer, "build", classmethod(lambda cls, *args: None))
    gs.correct(snn, ann, data, timesteps=timesteps, batches=len(data), progress=False)
    monkeypatch.undo() if by_reruns else None
    return [m.v_init for m in snn.modules() if isinstance(m, SpikingNeuron)]


@pytest.mark.parametrize("net, neuron, tau, signed", [
    (small_cnn, "if", 1, False), (small_cnn, "gn", 2, True), (Residual, "gn", 4, False), (Residual, "if", 1, True)])
def test_layer_by_layer_gives_the_corrections_of_rerunning_the_cut_network(net, neuron, tau, signed, monkeypatch):
    """One run layer by layer computes each value the reruns compute, with the same operations on
    the same tensors, so the corrections are equal bit for bit (not only within rounding)."""
    torch.manual_seed(3)
    data = batches(n=3, size=8)
    ann = gs.calibrate(net().eval(), data, percentile=99.9, progress=False)
    fast, slow = gs.convert(ann, neuron, tau, signed=signed), gs.convert(ann, neuron, tau, signed=signed)
    inputs = [x for x, _ in data]
    order = [n for n, m in fast.named_modules() if isinstance(m, SpikingNeuron)]
    assert correct_module._LayerByLayer.build(fast, inputs, 3, order) is not None  # the fast path is taken
    fast_shifts = corrections(fast, ann, data, 3)
    slow_shifts = corrections(slow, ann, data, 3, by_reruns=True, monkeypatch=monkeypatch)
    assert len(fast_shifts) == len(order) and all(a is not None for a in fast_shifts)
    assert all(torch.equal(a, b) for a, b in zip(fast_shifts, slow_shifts))


def test_graphs_whose_order_could_differ_are_rerun():
    data = batches(n=1, size=4)
    inputs = [data[0][0]]
    ann = gs.calibrate(small_cnn().eval(), data, progress=False)
    snn = gs.convert(ann, "gn", tau=2)
    order = [n for n, m in snn.named_modules() if isinstance(m, SpikingNeuron)]
    assert correct_module._LayerByLayer.build(snn, inputs, 2, order) is not None
    assert correct_module._LayerByLayer.build(snn, inputs, 2, order[::-1]) is None  # neurons in another order

    class Shared(nn.Module):  # one neuron called at two places: its state would see another order
        def __init__(self):
            super().__init__()
            self.conv, self.act = nn.Conv2d(2, 2, 3, padding=1), GroupNeuron(1.0, tau=2)

        def forward(self, x):
            return self.act(self.conv(self.act(x)))

    assert correct_module._LayerByLayer.build(Shared(), inputs, 2, ["act"]) is None

    class Noisy(nn.Module):  # random draws would come in another order
        def __init__(self):
            super().__init__()
            self.conv, self.act = nn.Conv2d(2, 2, 3, padding=1), nn.ReLU()

        def forward(self, x):
            return self.act(self.conv(x) + 0.01 * torch.randn_like(x))

    noisy = gs.convert(gs.calibrate(Noisy().eval(), data, progress=False), "gn", tau=2)
    assert correct_module._LayerByLayer.build(noisy, inputs, 2, ["act"]) is None
    gs.correct(noisy, gs.calibrate(Noisy().eval(), data, progress=False), data, timesteps=2, progress=False)


def test_cutting_the_network_after_each_layer_changes_no_correction(monkeypatch):
    """ResNet-20: reruns of the cut network, of the whole network, and one run layer by layer agree."""
    torch.manual_seed(2)
    data = batches(n=2, size=8, shape=(3, 32, 32))
    ann = gs.calibrate(gs.models.create("resnet20", num_classes=10).eval(), data, percentile=99.9, progress=False)
    cut = corrections(gs.convert(ann, "gn", tau=2), ann, data, 2, by_reruns=True, monkeypatch=monkeypatch)
    monkeypatch.setattr(correct_module, "_up_to", lambda model, name: model)
    whole = corrections(gs.convert(ann, "gn", tau=2), ann, data, 2, by_reruns=True, monkeypatch=monkeypatch)
    monkeypatch.undo()
    layer_by_layer = corrections(gs.convert(ann, "gn", tau=2), ann, data, 2)
    assert len(cut) == 19 and all(a is not None for a in cut)
    assert all(torch.equal(a, b) and torch.equal(a, c) for a, b, c in zip(cut, whole, layer_by_layer))


def test_correct_on_a_qcfs_trained_network(digits_ann):
    ann, test = digits_ann
    snn = gs.convert(ann, "if")
    data = list(test)
    before = layer_stats(snn, data, 4, ann)
    gs.correct(snn, ann, data, timesteps=4, batches=3)
    after = layer_stats(snn, data, 4, ann)
    assert sum(mean_gaps(after)) < 0.5 * sum(mean_gaps(before))
    deeper_mse = [sum(r["conversion_mse"] for r in s["layers"][1:]) for s in (before, after)]
    assert deeper_mse[1] < deeper_mse[0], deeper_mse


def test_bad_input_is_one_clear_error():
    data = batches(n=1)
    ann = gs.calibrate(small_cnn(), data)
    snn = gs.convert(ann, "gn", tau=2)
    for timesteps in (0, [1, 2], 1.5, True):
        with pytest.raises(ValueError, match="timesteps .* must be a positive integer"):
            gs.correct(snn, ann, data, timesteps=timesteps)
    with pytest.raises(ValueError, match="batches must be a positive integer"):
        gs.correct(snn, ann, data, timesteps=1, batches=0)
    with pytest.raises(ValueError, match="yielded no batches"):
        gs.correct(snn, ann, [], timesteps=1)
    other = gs.calibrate(nn.Sequential(nn.Flatten(), nn.Linear(128, 4), nn.ReLU()), data)
    with pytest.raises(ValueError, match="do not match .* pass the ANN the SNN was converted from"):
        gs.correct(snn, other, data, timesteps=1)
    with pytest.raises(ValueError, match="has no spiking neurons"):
        gs.correct(ann, ann, data, timesteps=1)
    assert all(m.v_init is None for m in snn.modules() if isinstance(m, SpikingNeuron))
