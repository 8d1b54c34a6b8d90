"""Training-free correction of a converted SNN: gs.correct."""
import importlib

import pytest
import torch
import torch.nn as nn

import groupsnn as gs
from groupsnn.neurons import RateMaxPool, SpikingNeuron
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


def test_cutting_the_network_after_each_layer_changes_no_correction(monkeypatch):
    torch.manual_seed(2)
    data = batches(n=2, size=8, shape=(3, 32, 32))
    ann = gs.calibrate(gs.models.create("resnet20", num_classes=10).eval(), data, percentile=99.9)
    cut, whole = gs.convert(ann, "gn", tau=2), gs.convert(ann, "gn", tau=2)
    gs.correct(cut, ann, data, timesteps=2, batches=2)
    monkeypatch.setattr(correct_module, "_up_to", lambda model, name: model)
    gs.correct(whole, ann, data, timesteps=2, batches=2)
    shifts = [(a.v_init, b.v_init) for a, b in zip(cut.modules(), whole.modules()) if isinstance(a, SpikingNeuron)]
    assert len(shifts) == 19 and all(a is not None and torch.equal(a, b) for a, b in shifts)


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
