"""Expectation compensation: a non-linear operation after a neuron runs on rates."""
import torch
import torch.nn as nn
import torch.nn.functional as F

import groupsnn as gs
from groupsnn.compensate import Compensated, compensated_step


def test_the_outputs_sum_to_t_times_f_of_the_mean_input_and_step_one_is_f_itself():
    torch.manual_seed(0)
    xs, state, outputs = torch.randn(5, 3, 7), None, []
    for x in xs:
        out, state = compensated_step((x,), state, F.gelu)
        outputs.append(out)
    assert torch.equal(outputs[0], F.gelu(xs[0]))
    for t in range(1, 6):  # float sums of t outputs: equal up to rounding
        torch.testing.assert_close(torch.stack(outputs[:t]).sum(0), t * F.gelu(xs[:t].mean(0)),
                                   rtol=1e-5, atol=1e-5)


def test_under_constant_input_every_step_emits_f_of_it():
    x, state = torch.randn(4, 6), None
    for _ in range(4):
        out, state = compensated_step((x,), state, lambda v: F.softmax(v, dim=-1))
        torch.testing.assert_close(out, F.softmax(x, dim=-1), rtol=1e-5, atol=1e-6)  # t·f(x) - (t-1)·f(x)


class GeluMlp(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.act, self.fc2, self.norm, self.fc3 = (nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 16),
                                                             nn.LayerNorm(16), nn.Linear(16, 3))

    def forward(self, x):
        return self.fc3(F.gelu(self.norm(self.fc2(self.act(self.fc1(x))))))


def test_a_gelu_layernorm_block_converts_exactly_at_one_step_and_on_rates_at_tau_t_equal_levels():
    torch.manual_seed(0)
    ann = gs.prepare(GeluMlp(), levels=4, threshold=1.0).eval()
    x = torch.randn(32, 6)
    with torch.no_grad():
        expected = ann(x)
        # tau = L at T = 1: the ANN's operations, bit for bit (the network's own path)
        assert torch.equal(gs.simulate(gs.convert(ann, "gn", tau=4), x, 1, fold=False)[0], expected)
        # tau*T = L under constant input: the neuron's mean is the QCFS output at T, and LayerNorm and GELU
        # run on rates, so the mean output is the ANN's up to float rounding
        snn = gs.convert(ann, "gn", tau=2)
        assert isinstance(snn.norm, Compensated) and isinstance(snn.norm.fn, nn.LayerNorm)
        torch.testing.assert_close(gs.simulate(snn, x, 2, fold=False).mean(0), expected, rtol=1e-4, atol=1e-5)
        # the same network with LayerNorm and GELU on each step's spikes is far off
        plain = gs.convert(ann, "gn", tau=2)
        for name, module in list(plain.named_children()):
            if isinstance(module, Compensated):
                setattr(plain, name, module.fn if isinstance(module.fn, nn.Module) else _Function(module.fn))
        assert (gs.simulate(plain, x, 2, fold=False).mean(0) - expected).abs().max() > 1e-2


class _Function(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, *xs):
        return self.fn(*xs)


def test_a_saved_snn_with_compensated_layers_reloads_bit_for_bit(tmp_path):
    from groupsnn.checkpoint import load_model, save_checkpoint

    torch.manual_seed(0)
    snn = gs.convert(gs.prepare(GeluMlp(), levels=4, threshold=1.0), "gn", tau=4)
    save_checkpoint(tmp_path / "snn.pt", snn, {})
    loaded, _ = load_model(tmp_path / "snn.pt")
    x = torch.randn(8, 6)
    assert torch.equal(gs.simulate(loaded, x, 3), gs.simulate(snn, x, 3))


class Gated(nn.Module):
    """Squeeze-excitation gating and an attention-like product, both of two per-step tensors."""

    def __init__(self):
        super().__init__()
        self.fc1, self.act1, self.q, self.k, self.act2, self.gate = (
            nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 8), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8))

    def forward(self, x):
        h = self.act1(self.fc1(x))
        s = torch.sigmoid(self.gate(h))          # sigmoid after a neuron: on rates
        g = h * s                                # a product of two per-step tensors
        q, k = self.q(g).unsqueeze(-1), self.act2(self.k(g)).unsqueeze(-1)
        return (q @ k.transpose(-2, -1)).flatten(1) * 0.5   # q·kᵀ; "* 0.5" is linear: not a site


def test_products_of_two_per_step_tensors_run_on_rates():
    torch.manual_seed(0)
    ann = gs.prepare(Gated(), levels=4, threshold=1.0).eval()
    snn = gs.convert(ann, "gn", tau=2)
    kinds = sorted(getattr(m.fn, "__name__", repr(m.fn)) for m in snn.modules() if isinstance(m, Compensated))
    assert kinds == ["matmul", "mul", "sigmoid"]
    x = torch.randn(16, 6)
    with torch.no_grad():
        expected = ann(x)
        assert torch.equal(gs.simulate(gs.convert(ann, "gn", tau=4), x, 1, fold=False)[0], expected)
        # the first neuron is exact at tau*T = L; the second sees a varying input, so the ANN is
        # approached, not met: the compensated SNN is far closer than one computing per step
        compensated = (gs.simulate(snn, x, 2, fold=False).mean(0) - expected).abs().mean()
        for name, module in list(snn.named_children()):
            if isinstance(module, Compensated):
                setattr(snn, name, module.fn if isinstance(module.fn, nn.Module) else _Function(module.fn))
        per_step = (gs.simulate(snn, x, 2, fold=False).mean(0) - expected).abs().mean()
    assert compensated < per_step / 3, (compensated, per_step)


def test_operations_on_rates_are_charged_as_macs_at_every_step():
    from groupsnn.stats import layer_stats

    torch.manual_seed(0)
    snn = gs.convert(gs.prepare(Gated(), levels=4, threshold=1.0), "gn", tau=2)
    totals = layer_stats(snn, [torch.randn(4, 6)], 3)["totals"]
    weighted = 6 * 8 + 3 * 8 * 8                   # fc1, q, k, gate
    on_rates = 8 + 8 + 8 * 8                        # sigmoid, h * s, q @ k^T (inner dimension 1)
    assert totals["ann_macs"] == weighted + on_rates
    # per step: q and k on the gated (dense) values, and the three operations; fc1 once (static);
    # the gate layer is fed by spikes (SOPs)
    assert totals["snn_macs"] == 6 * 8 + 3 * (2 * 8 * 8 + on_rates)


def test_a_two_sided_quantiser_and_its_neuron_agree_at_one_step():
    from groupsnn.neurons import gn_step
    from groupsnn.qcfs import qcfs

    x, theta = torch.randn(1000) * 2, torch.tensor(1.5)
    quantised = qcfs(x, theta, 4, two_sided=True)
    assert quantised.min() == -theta and quantised.max() == theta and (quantised < 0).any()
    out, spikes, _ = gn_step(x, None, theta, 4, two_sided=True)
    assert torch.equal(out, quantised) and spikes.min() == -4
    x.requires_grad_(True)
    qcfs(x, theta, 4, two_sided=True).sum().backward()
    assert torch.equal(x.grad, ((x >= -theta) & (x <= theta)).float())  # straight through on [-θ, θ]


def test_spike_inputs_put_a_two_sided_quantiser_in_front_of_each_weight_layer_after_gelu(tmp_path):
    from groupsnn.checkpoint import load_model, save_checkpoint
    from groupsnn.stats import spike_sources

    torch.manual_seed(0)
    ann = gs.prepare(GeluMlp(), levels=4, threshold=1.0, spike_inputs=True).eval()
    assert isinstance(ann.fc3, nn.Sequential) and ann.fc3[0].two_sided  # after GELU: quantised
    assert isinstance(ann.fc1, nn.Linear) and isinstance(ann.fc2, nn.Linear)  # the input; a ReLU's output
    x = torch.randn(32, 6)
    with torch.no_grad():
        snn = gs.convert(ann, "gn", tau=4)
        assert torch.equal(gs.simulate(snn, x, 1, fold=False)[0], ann(x))  # tau = L at T = 1
    assert spike_sources(snn) == {"fc2": ("act",), "fc3.1": ("fc3.0",)}  # every weighted sum after fc1: spikes
    save_checkpoint(tmp_path / "snn.pt", snn, {})
    loaded, _ = load_model(tmp_path / "snn.pt")
    assert loaded.get_submodule("fc3.0").two_sided
    assert torch.equal(gs.simulate(loaded, x, 3), gs.simulate(snn, x, 3))


def test_calibrate_sets_a_two_sided_threshold_from_magnitudes():
    torch.manual_seed(0)
    net, x = GeluMlp().eval(), torch.randn(64, 6)
    ann = gs.calibrate(net, [x], percentile=100, levels=8, spike_inputs=True, progress=False)
    with torch.no_grad():
        into_fc3 = F.gelu(net.norm(net.fc2(net.act(net.fc1(x)))))
    assert ann.fc3[0].two_sided and ann.fc3[0].threshold.item() == into_fc3.abs().max().item()
