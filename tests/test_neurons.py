import pytest
import torch

from groupsnn.neurons import GroupNeuron, IFNeuron, gn_step, if_step
from groupsnn.qcfs import qcfs


class TauMemberGroupNeuron:
    """The Group Neuron as the paper describes it: τ IF members with thresholds iθ/τ, each with its
    own membrane starting at θ/(2τ), the same input, all reset by the emitted sum of spikes·θ/τ."""

    def __init__(self, threshold, tau):
        self.threshold, self.tau, self.v = threshold, tau, None

    def step(self, x):
        if self.v is None:
            self.v = [torch.full_like(x, self.threshold / (2 * self.tau)) for _ in range(self.tau)]
        self.v = [v + x for v in self.v]
        spikes = [(v >= i * self.threshold / self.tau).to(x.dtype) for i, v in enumerate(self.v, start=1)]
        out = sum(spikes) * (self.threshold / self.tau)
        self.v = [v - out for v in self.v]
        return out, sum(spikes)


@pytest.mark.parametrize("tau", [1, 2, 3, 4, 8])
def test_group_neuron_equals_tau_member_oracle_step_by_step(tau):
    threshold = 1.7
    oracle = TauMemberGroupNeuron(threshold, tau)
    state = None
    for _ in range(20):
        x = torch.randn(2000, dtype=torch.float64) * 1.5
        expected_out, expected_spikes = oracle.step(x)
        out, spikes, state = gn_step(x, state, torch.tensor(threshold, dtype=torch.float64), tau)
        assert torch.equal(spikes, expected_spikes)  # member spike counts: exactly equal
        torch.testing.assert_close(out, expected_out, rtol=0, atol=1e-12)
        # state.v is the membrane in units of θ/τ; the oracle's members all hold the same potential
        torch.testing.assert_close(state.v * threshold / tau, oracle.v[0], rtol=0, atol=1e-12)
        assert all(torch.allclose(v, oracle.v[0]) for v in oracle.v)


def test_if_neuron_equals_group_neuron_with_one_member_and_the_classic_if():
    th = torch.tensor(0.8, dtype=torch.float64)
    s_if = s_gn = None
    v_classic = torch.full((5000,), 0.4, dtype=torch.float64)  # classic IF: starts at θ/2
    for _ in range(30):
        x = torch.randn(5000, dtype=torch.float64) * 0.7
        out_if, spikes_if, s_if = if_step(x, s_if, th)
        out_gn, spikes_gn, s_gn = gn_step(x, s_gn, th, 1)
        assert torch.equal(out_if, out_gn) and torch.equal(spikes_if, spikes_gn) and torch.equal(s_if.v, s_gn.v)
        v_classic = v_classic + x
        fired = (v_classic >= th).double()  # spike when the membrane reaches θ, reset by subtraction
        v_classic = v_classic - fired * th
        assert torch.equal(spikes_if, fired)
        torch.testing.assert_close(s_if.v * th, v_classic, rtol=0, atol=1e-12)


def test_if_neuron_is_the_classic_one():
    neuron = IFNeuron(threshold=1.0)
    # membrane starts at θ/2 = 0.5: +0.5 -> 1.0 fires (reset to 0), +0.3 -> 0.3, +0.8 -> 1.1 fires -> 0.1
    outs = [neuron(torch.tensor([x])).item() for x in (0.5, 0.3, 0.8)]
    assert outs == [1.0, 0.0, 1.0]
    assert neuron.state.v.item() == pytest.approx(0.1)


@pytest.mark.parametrize("levels,tau,timesteps", [(8, 8, 1), (8, 4, 2), (8, 2, 4), (8, 1, 8), (6, 3, 2), (6, 2, 3)])
def test_one_layer_constant_input_tau_times_T_equal_L_gives_qcfs(levels, tau, timesteps):
    threshold = 2.5
    x = (torch.rand(20000, dtype=torch.float64) * 1.4 - 0.2) * threshold  # below 0, inside, above θ
    neuron = GroupNeuron(threshold, tau)
    neuron.threshold.data = neuron.threshold.data.double()
    mean_out = sum(neuron(x) for _ in range(timesteps)) / timesteps
    expected = qcfs(x, torch.tensor(threshold, dtype=torch.float64), levels)
    # equal up to float rounding of the T-step accumulation (random float64 inputs are never
    # within rounding of a level boundary)
    torch.testing.assert_close(mean_out, expected, rtol=0, atol=1e-9)


@pytest.mark.parametrize("make", [lambda m: IFNeuron(1.0, step_mode=m), lambda m: GroupNeuron(1.0, 4, step_mode=m)])
def test_multi_step_mode_equals_single_steps(make):
    x = torch.randn(6, 3, 5)
    single, multi = make("s"), make("m")
    expected = torch.stack([single(x_t) for x_t in x])
    assert torch.equal(multi(x), expected)
    multi.reset()
    assert multi.state is None
    assert torch.equal(multi(x), expected)  # a reset neuron starts over


def test_group_neuron_state_is_one_membrane_whatever_tau():
    x = torch.randn(4, 8)
    for tau in (1, 8, 64):
        neuron = GroupNeuron(1.0, tau)
        neuron(x)
        assert neuron.state.v.shape == x.shape and neuron.state.count is None


def test_per_channel_thresholds_broadcast():
    th = torch.tensor([0.5, 1.0, 2.0]).view(3, 1, 1)
    neuron = GroupNeuron(th, 4)
    out = neuron(torch.full((2, 3, 4, 4), 10.0))
    assert torch.equal(out[:, :, 0, 0], th.view(1, 3).expand(2, 3))  # saturated: every member fires


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="tau"):
        GroupNeuron(1.0, 0)
    with pytest.raises(ValueError, match="step_mode"):
        IFNeuron(1.0, step_mode="x")
