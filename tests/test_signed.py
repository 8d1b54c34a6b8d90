"""Signed neurons (convert(..., signed=True)): negative spikes that take back early over-firing."""
import importlib
import json

import pytest
import torch
import torch.nn as nn

import groupsnn as gs
from groupsnn.cli import main
from groupsnn.neurons import GroupNeuron, gn_step
from groupsnn.qcfs import qcfs
from groupsnn.stats import layer_stats


def run(x_steps, tau, signed, threshold=1.0):
    """Spike counts of each step and the final state of a GN fed ``x_steps`` (float64)."""
    state, counts = None, []
    for x in x_steps:
        _, spikes, state = gn_step(x, state, torch.tensor(threshold, dtype=torch.float64), tau, signed=signed)
        counts.append(spikes)
    return torch.stack(counts), state


@pytest.mark.parametrize("tau, timesteps", [(1, 8), (2, 4), (4, 2), (3, 3)])
def test_the_net_count_is_the_qcfs_of_the_mean_input_whatever_the_order(tau, timesteps):
    levels, threshold = tau * timesteps, 1.0
    mean = torch.rand(20000, dtype=torch.float64) * 1.4 - 0.2
    # time-varying input with that mean: large early and small late, or the other way round
    amplitude = torch.rand(20000, dtype=torch.float64) * 1.2 - 0.6
    swing = torch.linspace(1, -1, timesteps, dtype=torch.float64)[:, None] * amplitude
    x_steps = mean + swing - swing.mean(0)
    counts, state = run(x_steps, tau, signed=True, threshold=threshold)
    assert counts.min() >= -tau and counts.max() <= tau and (counts.cumsum(0) >= 0).all()  # never below zero
    # spikes still owed after the last step: a step's bound (τ) held them back; no neuron that fires
    # at most τ a step could be exact there
    owed = (state.v >= 1) & (state.count < levels) | (state.v < 0) & (state.count > 0)
    assert owed.float().mean() < 0.15
    expected = qcfs(x_steps.mean(0), torch.tensor(threshold, dtype=torch.float64), levels)
    # equal up to the float rounding of summing T inputs (random float64 inputs are never within
    # rounding of a level boundary)
    torch.testing.assert_close((counts.sum(0) * threshold / levels)[~owed], expected[~owed], rtol=0, atol=1e-9)
    unsigned, _ = run(x_steps, tau, signed=False, threshold=threshold)
    wrong = (unsigned.sum(0) * threshold / levels - expected).abs() > 1e-9
    assert wrong[~owed].float().mean() > 0.05  # the plain neuron misses many of them: the unevenness error


@pytest.mark.parametrize("tau", [1, 4])
def test_constant_input_fires_no_negative_spike_and_equals_the_plain_neuron(tau):
    x = (torch.rand(5000, dtype=torch.float64) * 1.4 - 0.2).expand(6, -1)
    signed, _ = run(x, tau, signed=True)
    plain, _ = run(x, tau, signed=False)
    assert torch.equal(signed, plain)


def test_the_module_in_place_matches_the_pure_step():
    x_steps = torch.randn(5, 3, 4, 4)
    neuron = GroupNeuron(torch.tensor([0.5, 1.0, 2.0]).view(3, 1, 1), 2, signed=True)
    state = None
    for x in x_steps:
        expected, _, state = gn_step(x, state, neuron.threshold.detach(), 2, signed=True)
        with torch.no_grad():
            out = neuron(x.clone(), inplace=True)
        assert torch.equal(out, expected) and torch.equal(neuron.state.count, state.count)
    assert "signed=True" in repr(neuron)


def qcfs_mlp(levels=8):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(),
                        nn.Linear(64, 5))
    data = [torch.randn(256, 16) for _ in range(2)]
    return gs.calibrate(net, data, levels=levels), data


def test_signed_group_neurons_remove_the_unevenness_error_of_a_deep_network():
    ann, data = qcfs_mlp()
    plain = layer_stats(gs.convert(ann, "gn", tau=4), data, 2, ann)
    signed = layer_stats(gs.convert(ann, "gn", tau=4, signed=True), data, 2, ann)
    plain_mse = [r["conversion_mse"] for r in plain["layers"]]
    signed_mse = [r["conversion_mse"] for r in signed["layers"]]
    assert plain_mse[0] == signed_mse[0] == pytest.approx(0, abs=1e-12)  # constant input: exact either way
    assert all(s < 0.1 * p for s, p in zip(signed_mse[1:], plain_mse[1:])), (plain_mse, signed_mse)
    assert plain["layers"][1]["negative_rate"] == 0 < signed["layers"][1]["negative_rate"]
    thresholds = [m.threshold.item() for m in ann.modules() if isinstance(m, gs.QCFS)]
    for r, theta, fan_out in zip(signed["layers"], thresholds, [64, 64, 5]):
        # the rate counts every spike, the output nets them: rate − 2·negatives = net spikes
        assert r["firing_rate"] - 2 * r["negative_rate"] == pytest.approx(r["mean_output"] * 4 / theta)
        # and every spike, negative or not, drives the next layer's synapses
        assert r["sops"] == pytest.approx(r["firing_rate"] * r["neurons"] * 2 * fan_out)


def test_at_tau_equal_levels_and_one_step_signed_is_the_qcfs_network():
    ann, data = qcfs_mlp()
    x = data[0]
    assert torch.equal(gs.simulate(gs.convert(ann, "gn", tau=8, signed=True), x, 1)[0], ann(x))


def test_simulate_and_evaluate_at_tau_times_t_equal_levels_follow_the_ann():
    # the fast path (neurons firing in place, layers before the first neuron run once)
    ann, data = qcfs_mlp()
    x = data[0]
    with torch.no_grad():
        target = ann(x)
        plain = (gs.simulate(gs.convert(ann, "gn", tau=4), x, 2).mean(0) - target).abs().mean()
        signed = (gs.simulate(gs.convert(ann, "gn", tau=4, signed=True), x, 2).mean(0) - target).abs().mean()
    assert signed < 0.2 * plain, (signed, plain)
    labelled = [(inputs, ann(inputs).argmax(1)) for inputs in data]  # the ANN's own predictions as labels
    assert gs.evaluate(gs.convert(ann, "gn", tau=4, signed=True), labelled, [2])[2] > \
        gs.evaluate(gs.convert(ann, "gn", tau=4), labelled, [2])[2]


def test_cli_signed_flag_converts_to_signed_neurons_and_says_so(digits_checkpoint, tmp_path, monkeypatch):
    converted = []

    def convert(*args, **kwargs):
        converted.append(kwargs.get("signed"))
        return gs.convert(*args, **kwargs)

    # what evaluate imports when it runs, and what sweep imported (gs.convert hides the module's name)
    monkeypatch.setattr(importlib.import_module("groupsnn.convert"), "convert", convert)
    monkeypatch.setattr(importlib.import_module("groupsnn.sweep"), "convert", convert)
    common = [str(digits_checkpoint), "--timesteps", "1,2", "--per-class", "3", "--out", str(tmp_path)]
    assert main(["evaluate", *common, "--signed"]) == 0
    results = json.loads((tmp_path / "evaluate_gn_tau4_signed_T1,2.json").read_text())
    assert results["signed"] is True and all(r["signed"] for r in results["snn"])
    assert main(["sweep", *common, "--taus", "2", "--signed", "--energy-batches", "1"]) == 0
    assert (tmp_path / "sweep.csv").read_text().splitlines()[0] == \
        "neuron,tau,timesteps,accuracy,signed,sops,snn_energy_uj,pareto"
    assert converted == [True, True, True] and json.loads((tmp_path / "sweep.json").read_text())["signed"]
    assert main(["evaluate", *common]) == 0 and converted[-1] is False
    assert "signed" not in json.loads((tmp_path / "evaluate_gn_tau4_T1,2.json").read_text())
