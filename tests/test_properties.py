"""Property tests (hypothesis) for QCFS and both neurons over shapes, dtypes and extreme values."""
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from groupsnn.neurons import gn_step, if_step
from groupsnn.qcfs import qcfs

DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
shapes = st.lists(st.integers(1, 4), min_size=1, max_size=4).map(tuple)
thresholds = st.floats(1e-2, 1e3)
extremes = st.sampled_from([0.0, -0.0, 1e-30, -1e-30, 1e30, -1e30, float("inf"), float("-inf")])


def make_input(shape, dtype, seed, scale, extreme):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=torch.float64) * scale
    x.view(-1)[0] = extreme
    return x.to(dtype)


@settings(max_examples=150, deadline=None)
@given(shapes, st.sampled_from(DTYPES), st.integers(0, 2**31), st.floats(1e-3, 1e4), extremes, thresholds,
       st.integers(1, 64))
def test_qcfs_is_within_zero_and_threshold_on_its_levels(shape, dtype, seed, scale, extreme, threshold, levels):
    x = make_input(shape, dtype, seed, scale, extreme)
    th = torch.tensor(threshold).to(dtype)
    y = qcfs(x, th, levels)
    assert y.shape == x.shape and y.dtype == dtype
    assert ((y >= 0) & (y <= th)).all()
    level = (y.double() / (th.double() / levels))
    # the level index is an integer, up to the rounding of one product in the input's dtype
    assert torch.allclose(level, level.round(), atol=levels * torch.finfo(dtype).eps * 4)


@settings(max_examples=150, deadline=None)
@given(shapes, st.sampled_from(DTYPES), st.integers(0, 2**31), st.floats(1e-3, 1e4), extremes, thresholds,
       st.integers(1, 64), st.integers(1, 6))
def test_neurons_emit_integer_spike_counts_within_bounds(shape, dtype, seed, scale, extreme, threshold, tau, steps):
    th = torch.tensor(threshold).to(dtype)
    gn_state = if_state = None
    for t in range(steps):
        # extremes only at the first step: +inf then -inf would make the membrane inf - inf = NaN
        x = make_input(shape, dtype, seed + t, scale, extreme if t == 0 else 0.0)
        out, spikes, gn_state = gn_step(x, gn_state, th, tau)
        assert out.dtype == dtype and out.shape == x.shape
        assert torch.equal(spikes, spikes.round()) and ((spikes >= 0) & (spikes <= tau)).all()
        assert ((out >= 0) & (out <= th)).all()
        out, spikes, if_state = if_step(x, if_state, th)
        assert torch.equal(spikes, spikes.round()) and ((spikes == 0) | (spikes == 1)).all()
        assert ((out >= 0) & (out <= th)).all()


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 16), st.integers(-3, 3), st.lists(st.lists(st.integers(-64, 64), min_size=5, max_size=5),
                                                        min_size=1, max_size=8))
def test_group_neuron_equals_tau_member_oracle_exactly(tau, exponent, inputs):
    # θ = τ·2^e and inputs on a 2^(e-3) grid: every quantity below is exact in float64, so the
    # one-membrane GN and the τ separate membranes must agree exactly, boundaries included.
    threshold = tau * 2.0 ** exponent
    member_thresholds = torch.arange(1, tau + 1, dtype=torch.float64) * (threshold / tau)
    v = torch.full((tau, 5), threshold / (2 * tau), dtype=torch.float64)  # τ membranes
    state = None
    for row in inputs:
        x = torch.tensor(row, dtype=torch.float64) * 2.0 ** (exponent - 3)
        v = v + x
        count = (v >= member_thresholds[:, None]).sum(0).to(torch.float64)
        v = v - count * (threshold / tau)
        out, spikes, state = gn_step(x, state, torch.tensor(threshold, dtype=torch.float64), tau)
        assert torch.equal(spikes, count)
        assert torch.equal(out, count * (threshold / tau))
        assert torch.equal(state.v * (threshold / tau), v[0])
