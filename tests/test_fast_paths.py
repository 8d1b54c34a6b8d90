"""The fast paths compute what the reference step functions compute: neuron modules (membrane and,
when allowed, output in place), in-place neurons inside simulate, and the compiled step."""
import shutil

import pytest
import torch
import torch.nn as nn

import groupsnn as gs
from groupsnn.neurons import GroupNeuron, IFNeuron, compiled_gn_step, gn_step, if_step


@pytest.mark.parametrize("inplace", [False, True])
@pytest.mark.parametrize("make,step", [
    (lambda th: GroupNeuron(th, 3), lambda x, s, th: gn_step(x, s, th, 3)),
    (lambda th: GroupNeuron(th, 4), lambda x, s, th: gn_step(x, s, th, 4)),  # τ = 2^k: output in one pass
    (lambda th: IFNeuron(th), if_step),
])
def test_neuron_modules_equal_their_step_function_bit_for_bit(make, step, inplace):
    threshold = torch.tensor([0.7, 1.3]).view(2, 1, 1)  # per channel
    neuron, state = make(threshold), None
    for _ in range(6):
        x = torch.randn(4, 2, 5, 5)
        expected, _, state = step(x, state, threshold)
        given = x.clone()
        with torch.no_grad():
            out = neuron(given, inplace=inplace)
        assert torch.equal(out, expected) and torch.equal(neuron.state.v, state.v)
        assert (out.data_ptr() == given.data_ptr()) == inplace  # in place: written into the input


def test_inplace_is_ignored_while_autograd_records():
    x = torch.randn(3, 4)
    out = GroupNeuron(1.0, 2)(x, inplace=True)  # the threshold is a parameter: out needs a graph
    assert out.data_ptr() != x.data_ptr() and out.requires_grad


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.conv2, self.bn2 = nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 6 * 6, 3)

    def forward(self, x):
        a = torch.relu(self.bn1(self.conv1(x)))
        b = torch.relu(self.bn2(self.conv2(a)) + a)  # a is used twice: its neuron must not overwrite it
        return self.fc(torch.relu(b).flatten(1))


@pytest.mark.parametrize("signed", [False, True])
def test_simulate_with_neurons_in_place_equals_stepping_the_whole_model(signed):
    snn = gs.convert(gs.prepare(Residual(), levels=4, threshold=1.0).eval(), "gn", tau=2, signed=signed)
    x = torch.randn(5, 1, 6, 6)
    gs.reset(snn)
    with torch.no_grad():
        expected = torch.stack([snn(x) for _ in range(5)])  # plain forward: nothing in place
        assert torch.equal(gs.simulate(snn, x, 5), expected)


@pytest.mark.skipif(not any(shutil.which(c) for c in ("g++", "clang++", "c++")), reason="needs a C++ compiler")
@pytest.mark.parametrize("signed", [False, True])
def test_compiled_step_equals_gn_step_up_to_rounding(signed):
    threshold, state, compiled_state = torch.tensor(1.3), None, None
    for t in range(3):
        x = torch.randn(257) * 2
        out, spikes, state = gn_step(x, state, threshold, 4, signed=signed)
        c_out, c_spikes, compiled_state = compiled_gn_step(x, compiled_state, threshold, 4, signed=signed)
        assert torch.equal(c_spikes, spikes)
        torch.testing.assert_close(c_out, out)
        torch.testing.assert_close(compiled_state, state)
    assert (spikes < 0).any() == signed
    neuron = GroupNeuron(threshold, 4, compiled=True, signed=signed)
    assert torch.equal(neuron(x), gn_step(x, None, threshold, 4)[0])
